# Two commands for a newcomer: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test lab course bench clean

$(VENV)/.base: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e .
	touch $@

$(VENV)/.test: $(VENV)/.base
	$(VENV)/bin/pip install -q -e '.[test]'
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

lab: $(VENV)/.test
	$(VENV)/bin/jupyter lab notebooks

bench: $(VENV)/.base
	bash bench/setup_trl.sh
	$(PY) bench/epoch_time.py

clean:
	rm -rf $(VENV) runs .pytest_cache
