# Two commands for a newcomer: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test lab course site site-check bench clean

$(VENV)/.base: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e .
	touch $@

$(VENV)/.test: $(VENV)/.base
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

$(VENV)/.site: $(VENV)/.base
	$(VENV)/bin/pip install -q -e '.[site]'
	touch $@

demo: $(VENV)/.base
	$(PY) -m minirl.cli demo

# The tests, then every notebook of the course under nbval in smoke mode (CI=true shrinks their runs).
test: $(VENV)/.test
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -p no:cacheprovider tests
	HF_HUB_OFFLINE=1 CI=true $(PY) -m pytest -q -p no:cacheprovider --nbval-lax \
		--nbval-sanitize-with notebooks/sanitize.cfg notebooks

# Every notebook executed in full mode, in place, in order: the outputs the course commits (minirl/coursebook.py).
course: $(VENV)/.test
	HF_HUB_OFFLINE=1 $(PY) -m minirl.coursebook notebooks/[0-9]*.ipynb

# The course as a website, from the notebooks' stored outputs (nothing runs): open build/site/index.html.
# docs/site/README.md says how it is built; any warning (a broken link, bad markup) fails the build.
site: $(VENV)/.site
	rm -rf build/site build/site-doctrees build/jupyter_execute docs/site/api
	$(PY) -m sphinx -b html -q -W --keep-going -c docs/site -d build/site-doctrees . build/site

# The built site in headless Chromium (Debian's chromium): pages, images, maths, links, nothing from the network.
site-check: site
	$(PY) -m pytest -q -p no:cacheprovider docs/site/test_check_site.py
	$(PY) docs/site/check_site.py build/site

lab: $(VENV)/.test
	$(VENV)/bin/jupyter lab notebooks

bench: $(VENV)/.base
	bash bench/setup_trl.sh
	$(PY) bench/epoch_time.py

clean:
	rm -rf $(VENV) runs .pytest_cache
