"""Sphinx configuration: Flask's theme (pallets-sphinx-themes), Markdown pages (MyST),
API pages from docstrings (autodoc), and the reference pages generated from the code
(``_ext/fbs_reference.py``). Built by ``make docs`` with warnings as errors."""

from __future__ import annotations

import sys
from pathlib import Path

from pallets_sphinx_themes import ProjectLink, get_version

sys.path.insert(0, str(Path(__file__).parent / "_ext"))

project = "flask-beaker-session"
copyright = "2026, flask-beaker-session contributors"
author = "flask-beaker-session contributors"
release, version = get_version("flask-beaker-session")

extensions = [
    "sphinx.ext.autodoc",
    "myst_parser",
    "pallets_sphinx_themes",
    "fbs_reference",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
# No network at build time: no intersphinx; Flask's names stay plain text.
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
# Resolve Markdown links in the std and py domains only (the theme adds domains that
# MyST cannot search for link targets).
myst_ref_domains = ["std", "py"]
# Settings and API objects are listed on their pages, not in every table of contents.
toc_object_entries = False
add_module_names = False
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_preserve_defaults = True

html_theme = "flask"
html_theme_options = {"index_sidebar_logo": False}
html_context = {
    "project_links": [
        ProjectLink("PyPI Releases", "https://pypi.org/project/flask-beaker-session/"),
        ProjectLink("Source Code", "https://github.com/flask-beaker-session/flask-beaker-session"),
        ProjectLink(
            "Issue Tracker",
            "https://github.com/flask-beaker-session/flask-beaker-session/issues/",
        ),
    ]
}
html_sidebars = {
    "index": ["project.html", "localtoc.html", "searchbox.html"],
    "**": ["localtoc.html", "relations.html", "searchbox.html"],
}
singlehtml_sidebars = {"index": ["project.html", "localtoc.html"]}
html_title = f"flask-beaker-session Documentation ({version})"
html_show_sourcelink = False
html_static_path: list[str] = []
