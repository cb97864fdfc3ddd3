"""check_site.py finds each problem it is there to find: a small site with one defect a page, in Chromium.

Run by `make site-check` before the check of the built site (it needs Chromium, as that check does):

    .venv/bin/python -m pytest -q -p no:cacheprovider docs/site/test_check_site.py
"""

import base64
import importlib.util
from pathlib import Path

import check_site

# a 1x1 PNG
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==")
ROOT = Path(__file__).with_name("_root") / "index.html"     # the site's index.html, which opens the landing page
MATHJAX = '<script defer src="/mathjax/tex-chtml.js"></script>'
# Each page of the fixture: its body, and the problem check_site must report for it (None: a page without one).
PAGES = {
    "good.html": (MATHJAX + '<h2 id="part">Part</h2><p>An image <img src="dot.png"> and maths '
                  '<span class="math">\\(\\alpha_t\\)</span>; <a href="#part">here</a>, <a href="dot.png">a file</a>,'
                  ' <a href="https://arxiv.org/abs/2305.13301">a paper</a>.</p>', None),
    "raw.html": ("<p>The loss $$L = -A \\log p$$ was left raw.</p>", "raw maths in the text: 'The loss $$L"),
    "markup.html": ("<p>```{figure} demo.png</p><p>::::{container} full-width</p>",
                    "raw markup in the text: '```{figure} demo.png'"),
    "table.html": ("<p>| metric | base | |\u2014\u2014|\u2014|</p>",        # a table's |---|, after smartquotes
                   "raw markup in the text: '| metric | base |"),
    "untypeset.html": ('<p><span class="math">x</span> has no MathJax.</p>', "maths not typeset: 'x'"),
    "texerror.html": (MATHJAX + '<p><span class="math">\\(\\frac{1}\\)</span></p>', "TeX error"),
    "image.html": ('<img src="missing.png">', "image not loaded: docs/site/missing.png"),
    "console.html": ('<script>console.error("boom")</script>', "console error: boom"),
    "script.html": ('<script>null.x</script>', "script error: TypeError"),
    "network.html": ('<script src="https://cdn.example.invalid/mathjax.js"></script>',
                     "loads https://cdn.example.invalid/mathjax.js from the network"),
    "deadlink.html": ('<a href="nowhere.html">next</a>', "broken link (404): docs/site/nowhere.html"),
    "deadfile.html": ('<a href="notes.pdf">notes</a>', "broken link (404): docs/site/notes.pdf"),
    "anchor.html": ('<a href="good.html#nope">part</a>', "link to a missing anchor: docs/site/good.html#nope"),
}


def page(body):
    return f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>t</title></head><body>{body}</body></html>"


def test_each_defect_is_reported_and_a_good_page_passes(tmp_path):
    site = tmp_path / "site"
    folder = site / "docs" / "site"
    folder.mkdir(parents=True)
    (site / "index.html").write_text(ROOT.read_text())
    (site / "mathjax").symlink_to(Path(importlib.util.find_spec("sphinx-mathjax-offline").origin).parent
                                  / "static" / "mathjax")
    (folder / "dot.png").write_bytes(PNG)
    links = "".join(f'<a href="{name}">{name}</a> ' for name in PAGES)
    (folder / "index.html").write_text(page(links))
    for name, (body, _) in PAGES.items():
        (folder / name).write_text(page(body))

    problems, stats = check_site.check(site)

    for name, (_, expected) in PAGES.items():
        found = [p for p in problems if p.startswith(f"docs/site/{name}: ")]   # a broken link: the linking page's
        if expected is None:
            assert found == [], f"{name}: {found}"
        else:
            assert any(expected in p for p in found), f"{name}: expected {expected!r}, got {found}"
    assert not [p for p in problems if p.startswith(("index.html", "docs/site/index.html"))]
    assert stats["pages"] == len(PAGES) + 1 and stats["maths"] == 3 and stats["external links"] == 1


def test_a_root_that_does_not_open_the_landing_page_is_reported(tmp_path):
    folder = tmp_path / "docs" / "site"
    folder.mkdir(parents=True)
    (folder / "index.html").write_text(page("<p>The course.</p>"))
    (tmp_path / "index.html").write_text(ROOT.read_text().replace("docs/site/index.html", "docs/index.html"))

    problems, _ = check_site.check(tmp_path)

    assert problems == ["index.html: does not open docs/site/index.html (it opens 'docs/index.html')"]
