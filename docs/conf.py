# SPDX-License-Identifier: Apache-2.0
# docs/conf.py: Sphinx configuration of tether's documentation site (built by .ci/docs).
#
# Markdown pages through myst-parser; C++ declarations through Sphinx's built-in C++ domain,
# Python ones through the Python domain (written by hand, so the build does not import the
# compiled package: tests/test_docs.py checks that the reference names every public symbol).
project = "tether"
author = "tether contributors"
copyright = "tether contributors, Apache-2.0"

extensions = ["myst_parser"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "README.md"]

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

html_theme = "alabaster"
html_theme_options = {"description": "C++ objects tied to exactly one Python wrapper",
                      "fixed_sidebar": True}
html_title = "tether"

primary_domain = "py"
highlight_language = "text"
cpp_index_common_prefix = ["tether::"]

# Nitpicky (-n in .ci/docs): every cross-reference must resolve, except to these names from
# outside the project (the C++ standard library, CPython's and nanobind's C++ APIs).
nitpick_ignore = [("cpp:identifier", name) for name in (
    "uint32_t", "size_t", "PyObject", "PyTypeObject", "nanobind", "nanobind::class_<T, Extra...>",
    "Stats")]
