"""Sphinx configuration of the course's website (`make site`; docs/site/README.md says how it is built).

The source folder is the repository's root, so that the notebooks, the research notes and the images are read
where they live and their relative links (`04_ppo.ipynb`, `../docs/research.md#...`) resolve as on GitHub;
`include_patterns` picks the pages. Nothing is executed (the notebooks carry their outputs) and nothing is
loaded from the network: MathJax comes from the sphinx-mathjax-offline package into `_static/mathjax/`.
"""

import astroid
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
autodoc2_render_plugin = "myst"
autodoc2_docstring_parser_regexes = [(r".*", "myst")]
autodoc2_hidden_objects = ["private", "dunder", "inherited"]
autodoc2_index_template = None                # docs/site/api.md is the index
# autodoc2 reads the source with astroid, which would infer through torch, transformers and diffusers too: two
# minutes of CPU, and nn.Module's members and docstring on every minirl module class. They are not minirl's API.
astroid.MANAGER.module_denylist.update({"torch", "torchvision", "diffusers", "transformers", "peft", "accelerate",
                                        "huggingface_hub", "open_clip", "timm", "safetensors", "PIL", "numpy",
                                        "matplotlib", "tqdm"})
highlight_language = "text"                   # a fence without a language (shell, a table) is not Python
suppress_warnings = ["myst.header"]           # notebooks open with "# NN · title" and go on with ##; nothing to fix

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


def full_width_cells(app, doctree):
    """Tag every notebook cell `full-width`, as a notebook author would one by one in Jupyter Book: it takes the
    page's margin, and the theme folds the page's contents away while such a cell is on screen."""
    for node in doctree.findall(nodes.container):
        if "cell" in node["classes"]:
            node["classes"].append("tag_full-width")


def setup(app):
    app.connect("doctree-read", full_width_cells)
