"""Sphinx configuration of the scvi-mmd documentation (scverse style: MyST + autodoc)."""

from importlib.metadata import version as _version

project = "scvi-mmd"
author = "scvi-mmd developers"
copyright = "2026, scvi-mmd developers"
try:
    release = _version("scvi-mmd")
except Exception:  # pragma: no cover - building from a tree without the package installed
    release = "0.0.0"
version = release

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
]
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}
master_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints"]
myst_enable_extensions = ["colon_fence", "dollarmath"]
myst_heading_anchors = 3
nb_execution_mode = "off"  # the tutorial is rendered with its stored outputs, never run here

autosummary_generate = True
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
# scvi-tools' inherited methods are documented there; our pages hold our own members
autodoc_inherit_docstrings = False
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = True
napoleon_use_param = True
napoleon_custom_sections = [("Params", "Parameters")]

intersphinx_mapping = {}  # no network in CI: cross-references to scvi-tools stay plain text
nitpicky = False
suppress_warnings = ["myst.xref_missing", "autosummary.import_cycle"]

html_theme = "sphinx_book_theme"
html_title = "scvi-mmd"
html_static_path = ["_static"]
html_theme_options = {"repository_url": "", "use_repository_button": False}
