"""Sphinx configuration of the course's website (`make site`; docs/site/README.md says how it is built).

The source folder is the repository's root, so that the notebooks, the research notes and the images are read
where they live and their relative links (`04_ppo.ipynb`, `../docs/research.md#...`) resolve as on GitHub;
`include_patterns` picks the pages. Nothing is executed (the notebooks carry their outputs) and nothing is
loaded from the network: MathJax comes from the sphinx-mathjax-offline package into `_static/mathjax/`.
"""

import json
import re

import astroid
from autodoc2.render.myst_ import MystRenderer
from docutils import nodes

project = "minirl"
author = "the minirl authors"

root_doc = "docs/site/index"
include_patterns = ["docs/site/index.md", "docs/site/api.md", "docs/site/api/**", "notebooks/[0-9][0-9]_*.ipynb",
                    "README.md", "docs/research.md"]
exclude_patterns = [".*", "**/.*", "build", "runs"]      # pruned from the walk: .venv, .git, build outputs

extensions = [
    "myst_nb",                     # notebooks and Markdown (MyST), as Jupyter Book 1 reads them
    "autodoc2",                    # the API pages, from minirl's source without importing it
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",      # MathJax 3 copied into the site; sets mathjax_path to it
]

# The notebooks as committed: their stored outputs, never executed here. No widget JavaScript (it comes from a
# CDN; the stored notebooks keep the static figure before each widget).
nb_execution_mode = "off"
nb_ipywidgets_js = {}
nb_render_markdown_format = "myst"           # a Markdown output (07's tables) read as the cells are, tables and maths
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3                      # GitHub's anchors: research.md#2-what-the-demo-gets-over-seeds

# minirl's docstrings are Markdown (`code`, |x|, indented examples): read as MyST. The teachers' answers to the
# exercises (minirl.exercises.solutions) stay out of a student's way.
autodoc2_packages = [{"path": "minirl", "exclude_dirs": ["solutions", "__pycache__"]}]
autodoc2_output_dir = "docs/site/api"
autodoc2_docstring_parser_regexes = [(r".*", "myst")]   # the renderer: CourseRenderer, below
autodoc2_hidden_objects = ["private", "dunder", "inherited"]
autodoc2_index_template = None                # docs/site/api.md is the index
# autodoc2 reads the source with astroid, which would infer through torch, transformers and diffusers too: two
# minutes of CPU, and nn.Module's members and docstring on every minirl module class. They are not minirl's API.
astroid.MANAGER.module_denylist.update({"torch", "torchvision", "diffusers", "transformers", "peft", "accelerate",
                                        "huggingface_hub", "open_clip", "timm", "safetensors", "PIL", "numpy",
                                        "matplotlib", "tqdm"})
highlight_language = "text"                   # a fence without a language (shell, a table) is not Python
suppress_warnings = ["myst.header",           # notebooks open with "# NN · title" and go on with ##; nothing to fix
                     "config.cache"]          # autodoc2_render_plugin_regexes holds a class (below): not cached;
                                              # `make site` rebuilds from scratch anyway
smartquotes = False                           # `--eta` and JSON in the text stay as typed, to be copied

html_theme = "sphinx_book_theme"
html_title = "minirl: RL for text-to-image diffusion, a course"
html_extra_path = ["_root"]                   # index.html at the site's root: opens the landing page
html_theme_options = {
    "home_page_in_toc": True,
    "show_navbar_depth": 1,
    "use_download_button": True,              # the page's .ipynb, with its outputs
    "launch_buttons": {},
    "navbar_persistent": [],                  # pydata-sphinx-theme 0.20 adds a second search bar above the page
    "footer_content_items": ["author.html"],
}
html_static_path = ["_static"]
html_css_files = ["course.css"]
html_js_files = ["course.js"]
html_context = {"default_mode": "light"}     # without it the theme logs a console error on a first visit
html_show_sourcelink = False                  # the download button offers each page's .ipynb (_sources/)


class CourseRenderer(MystRenderer):
    """autodoc2's MyST pages, with two of its lines fixed for myst-parser 5. A constant's `:value: >` block
    scalar ends the directive's options there, so its value showed as a paragraph of the body, and as "None"
    where autodoc2 could not read it (an expression, a comprehension): the value goes on one line, quoted, in
    the signature (a call as `field(...)`), and "None" is left out. A class's "Initialization" heading is left
    out where its `__init__` has no docstring of its own (nothing under it, or the builtin's "Initialize self.
    ...")."""

    def render_data(self, item):
        lines = iter(super().render_data(item))
        for line in lines:
            if line == ":value: >":
                value = next(lines).strip()
                if re.fullmatch(r"'[\w.]+\(\.\.\.\)'", value):   # a call, which autodoc2 quotes as a string
                    value = value[1:-1]
                if value != "None":
                    yield f":value: {json.dumps(value)}"
            else:
                yield line

    def render_class(self, item):
        lines = list(super().render_class(item))
        init = self.get_item(f"{item['full_name']}.__init__")
        directive = f"```{{autodoc2-docstring}} {init['full_name']}" if init else None
        if directive in lines and (not init.get("doc", "").strip() or init.get("inherited")
                                   or init.get("doc_inherited")):
            start = lines.index(directive) - 3       # "```{rubric} Initialization", "```", ""
            end = lines.index("```", start + 3)
            del lines[start:end + 2]                 # the rubric, the docstring directive and the blank line
        yield from lines


autodoc2_render_plugin = "myst"
autodoc2_render_plugin_regexes = [(r".*", CourseRenderer)]   # a list: the one setting that may hold a class

# The previous/next links under a page name the page by its first heading, which says too little for two pages.
RELATION_TITLES = {"README": "The project's README", "docs/site/api/minirl/minirl": "The minirl package"}


def relation_titles(app, pagename, templatename, context, doctree):
    """Name the README and the package's page in the previous/next links as the sidebar does."""
    relations = app.env.collect_relations().get(pagename)
    if relations:
        for key, docname in (("prev", relations[1]), ("next", relations[2])):
            if context.get(key) and docname in RELATION_TITLES:
                context[key]["title"] = RELATION_TITLES[docname]


def empty_outputs(app, doctree):
    """Drop a notebook output holding only whitespace (tqdm's closing newline on stderr): the page showed it as
    an empty grey box."""
    for node in list(doctree.findall(nodes.literal_block)):
        if "output" in node["classes"] and not node.astext().strip():
            parent = node.parent
            parent.remove(node)
            if "cell_output" in parent["classes"] and not parent.children:
                parent.parent.remove(parent)


def full_width_cells(app, doctree):
    """Tag every notebook cell `full-width`, as a notebook author would one by one in Jupyter Book: it takes the
    page's margin, and the theme folds the page's contents away while such a cell is on screen."""
    for node in doctree.findall(nodes.container):
        if "cell" in node["classes"]:
            node["classes"].append("tag_full-width")


def setup(app):
    app.connect("doctree-read", full_width_cells)
    app.connect("doctree-read", empty_outputs)
    app.connect("html-page-context", relation_titles)
