"""The built course site, checked in a real browser (`make site-check`), as a student without internet opens it.

Serves the site on 127.0.0.1, opens every page of it in headless Chromium (Debian's
`chromium`, driven by playwright) and reports, one line each:
- a console error, an uncaught script error, a failed request or an HTTP error;
- a request that leaves the machine (a classroom may have no internet: the site carries all it loads);
- an image that did not load (naturalWidth 0);
- maths left raw (`$$`, `\\(`, `$x$`, a TeX command in the text) or not typeset by MathJax, or a TeX error;
- markup left raw in the text: a MyST directive (```{figure}, :::{note}) or a Markdown table (|---|, or its
  em dashes where smartquotes are on);
- text that smartquotes changed: an en or em dash before a word (a `--flag` a reader would copy);
- content cut off at the right edge, which a scrollbar may not show: a code block or output that does not wrap,
  display maths wider than its box;
- an empty output box after a notebook cell (an output of whitespace only);
- a link to the site that does not resolve: a missing page or file, or an anchor no element carries.

    python docs/site/check_site.py build/site                      # exit status 1 when anything is wrong
    python docs/site/check_site.py build/site --screenshots DIR    # also a full-page PNG of every page
"""

import argparse
import functools
import http.server
import os
import re
import shutil
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urldefrag

LANDING = "docs/site/index.html"  # the landing page; the site's root index.html redirects to it
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]

# Runs in the page once it has loaded: waits for its images and MathJax, then reports what a reader would see.
INSPECT = r"""async () => {
  const images = [...document.images];
  images.forEach(img => { img.loading = "eager"; });
  await Promise.all(images.map(img => img.complete ? null : new Promise(done => {
    img.addEventListener("load", done); img.addEventListener("error", done); setTimeout(done, 10000);
  })));
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) await MathJax.startup.promise;
  await new Promise(done => setTimeout(done, 0));      // course.js widens wide maths once MathJax is done
  const skip = "PRE, CODE, SCRIPT, STYLE, NOSCRIPT, TEXTAREA, MJX-CONTAINER, .highlight";
  const raw = [], markup = [], dashes = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const text = node.textContent;
    if (node.parentElement.closest(skip)) continue;
    if (/\$\$|\\\(|\\\[|\$[^$\s][^$]*\$|\\[A-Za-z]{2,}/.test(text)) raw.push(text.trim().slice(0, 80));
    if (/(`{3,}|:{3,})\{[a-z-]+\}|\|\s*:?(-{3,}|\u2014+)\s*:?\|/.test(text)) markup.push(text.trim().slice(0, 80));
    if (/(^|[\s(\[])[\u2013\u2014][A-Za-z]/.test(text)) dashes.push(text.trim().slice(0, 80));
  }
  const media = "img, svg, canvas, iframe, video";
  const maths = [...document.querySelectorAll(".math")];
  return {
    brokenImages: images.filter(img => img.naturalWidth === 0).map(img => img.currentSrc || img.src),
    images: images.length,
    maths: maths.length,
    untypeset: maths.filter(m => !m.querySelector("mjx-container")).map(m => m.textContent.trim().slice(0, 80)),
    texErrors: [...document.querySelectorAll("mjx-merror")].map(e => e.textContent.slice(0, 80)),
    raw: raw,
    markup: markup,
    dashes: dashes,
    clipped: [...document.querySelectorAll(".bd-article pre, .bd-article div.math > mjx-container")]
      .filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.textContent.trim().slice(0, 60)),
    emptyOutputs: [...document.querySelectorAll(".cell_output > *")]
      .filter(o => !o.textContent.trim() && !o.matches(media) && !o.querySelector(media)).length,
    links: [...document.querySelectorAll("a[href]")].map(a => a.href),
    ids: [...document.querySelectorAll("[id], a[name]")].map(e => e.id || e.name),
  };
}"""


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], ConnectionError):   # the browser hangs up when it leaves a page early
            super().handle_error(request, client_address)


def serve(folder):
    """A quiet HTTP server of `folder` on a free port of 127.0.0.1, in a daemon thread; returns it and its URL."""
    server = Server(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def find_chromium():
    """The Chromium binary: $CHROMIUM, else `chromium` on the PATH."""
    path = os.environ.get("CHROMIUM") or shutil.which("chromium")
    if not path or not Path(path).exists():
        sys.exit(f"error: no Chromium at {path or 'chromium (not on the PATH)'}; install Debian's package "
                 "(apt-get install chromium) or set CHROMIUM to a Chromium binary")
    return path


def redirect_target(folder):
    """The page the site's root index.html opens (its meta refresh), relative to the site's root."""
    root = Path(folder, "index.html")
    if not root.is_file():
        return None
    match = re.search(r'http-equiv="refresh"\s+content="0;\s*url=([^"]+)"', root.read_text())
    return match and match.group(1)


def check(folder, screenshots=None):
    """Every problem of the site in `folder`, one sentence each, and counts of what was checked."""
    from playwright.sync_api import sync_playwright

    folder = Path(folder)
    if not Path(folder, LANDING).is_file():
        sys.exit(f"error: {folder} holds no {LANDING}; build the site first (make site)")
    problems = []
    if redirect_target(folder) != LANDING:
        problems.append(f"index.html: does not open {LANDING} (it opens {redirect_target(folder)!r})")
    server, base = serve(folder)
    stats = {"pages": 0, "images": 0, "maths": 0, "links": 0, "external links": 0}
    ids, links = {}, []                      # ids of each visited page; (page, href) of every link
    # Pages to visit, and a page linking each: the landing page, every page it leads to, every other built page.
    todo, referrer = [base + LANDING], {base + LANDING: "index.html"}
    for path in sorted(folder.rglob("*.html")):
        name = path.relative_to(folder).as_posix()
        if name != "index.html" and not name.startswith("_") and base + name not in referrer:
            referrer[base + name] = "(the site's folder)"
            todo.append(base + name)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=find_chromium(), headless=True, args=FLAGS)
            page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            current = {}

            def report(text):
                problems.append(f"{current['name']}: {text}")

            def route(r):
                if r.request.url.startswith(base) or r.request.url.startswith("data:"):
                    r.continue_()
                else:
                    report(f"loads {r.request.url} from the network")
                    r.abort()

            page.route("**/*", route)
            page.on("console", lambda m: m.type == "error" and report(f"console error: {m.text}"))
            page.on("pageerror", lambda e: report(f"script error: {e.name}: {e.message}"))
            page.on("requestfailed", lambda r: r.url.startswith(base) and report(
                f"request failed: {r.url[len(base):]} ({r.failure})"))
            page.on("response", lambda r: r.status >= 400 and r.request.resource_type != "document" and report(
                f"HTTP {r.status}: {r.url[len(base):]}"))
            while todo:
                url = todo.pop(0)
                current["name"] = name = url[len(base):]
                response = page.goto(url, wait_until="load")
                if response.status >= 400:
                    problems.append(f"{referrer[url]}: broken link ({response.status}): {name}")
                    continue
                seen_page = page.evaluate(INSPECT)
                stats["pages"] += 1
                stats["images"] += seen_page["images"]
                stats["maths"] += seen_page["maths"]
                for src in seen_page["brokenImages"]:
                    report(f"image not loaded: {src[len(base):] if src.startswith(base) else src}")
                for text in seen_page["untypeset"]:
                    report(f"maths not typeset: {text!r}")
                for text in seen_page["texErrors"]:
                    report(f"TeX error: {text!r}")
                for text in seen_page["raw"]:
                    report(f"raw maths in the text: {text!r}")
                for text in seen_page["markup"]:
                    report(f"raw markup in the text: {text!r}")
                for text in seen_page["dashes"]:
                    report(f"a dash before a word (smartquotes on a --flag?): {text!r}")
                for text in seen_page["clipped"]:
                    report(f"cut off at the right edge: {text!r}")
                if seen_page["emptyOutputs"]:
                    report(f"{seen_page['emptyOutputs']} empty output box(es) after a cell")
                ids[url] = set(seen_page["ids"])
                for href in seen_page["links"]:
                    if not href.startswith(base):
                        stats["external links"] += href.startswith("http")
                        continue
                    stats["links"] += 1
                    links.append((name, href))
                    target = urldefrag(href).url
                    if target.endswith(".html") and target not in referrer:
                        referrer[target] = name
                        todo.append(target)
                if screenshots:
                    Path(screenshots).mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=Path(screenshots, name.replace("/", "__") + ".png"), full_page=True)
            browser.close()
        fetched = {}                         # each linked file once: its HTTP status
        for name, href in links:
            target, fragment = urldefrag(href)
            if target in ids:
                if fragment and unquote(fragment) not in ids[target]:
                    problems.append(f"{name}: link to a missing anchor: {href[len(base):]}")
            elif not target.endswith(".html"):
                if target not in fetched:
                    try:
                        urllib.request.urlopen(target).close()
                        fetched[target] = 200
                    except urllib.error.HTTPError as e:
                        fetched[target] = e.code
                if fetched[target] != 200:
                    problems.append(f"{name}: broken link ({fetched[target]}): {href[len(base):]}")
    finally:
        server.shutdown()
    return list(dict.fromkeys(problems)), stats


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("site", nargs="?", default="build/site", help="the built site (default: build/site)")
    parser.add_argument("--screenshots", metavar="DIR", help="write a full-page screenshot of every page here")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    problems, stats = check(args.site, args.screenshots)
    for problem in problems:
        print(problem)
    counts = ", ".join(f"{n} {what}" for what, n in stats.items())
    print(f"{len(problems)} problems; checked {counts} in {time.perf_counter() - start:.0f} s")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
