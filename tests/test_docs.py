# SPDX-License-Identifier: Apache-2.0
"""The documentation site (docs/): its code runs, its reference is complete, and it builds.

- Every fenced block whose info string is exactly ``python`` runs: the blocks of one page in
  order, in one fresh interpreter (so a crash fails the test, not the session).
- The C++ the guide shows is included from compiled sources between ``[doc-...]`` markers:
  each marker the pages use exists.
- ``reference/python.md`` documents every name in ``tether.__all__``.
- The Sphinx build itself (warnings as errors) is ``.ci/docs``; it also runs here when sphinx
  and myst-parser are installed (``pip install ".[docs]"``).
"""
import importlib.util
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import tether

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.md") if p.name != "README.md")
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)


def python_blocks(page):
    return FENCE.findall(page.read_text())


def test_docs_exist():
    names = {p.relative_to(DOCS).as_posix() for p in PAGES}
    assert {"index.md", "guide.md", "semantics.md", "lifecycle.md", "performance.md",
            "reference/cpp.md", "reference/python.md"} <= names


@pytest.mark.parametrize("page", [p for p in PAGES if python_blocks(p)],
                         ids=lambda p: p.relative_to(DOCS).as_posix())
def test_python_blocks_run(page):
    blocks = python_blocks(page)
    script = "\n\n".join(textwrap.dedent(b) for b in blocks)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, "%s: %d blocks\n%s" % (page.name, len(blocks),
                                                        proc.stderr[-3000:])


def test_guide_runs_the_example_type():
    blocks = python_blocks(DOCS / "guide.md")
    assert len(blocks) >= 8 and any("in_thread=True" in b for b in blocks)


def test_included_sources_have_their_markers():
    pattern = re.compile(r"```\{literalinclude\} (\S+)\n(.*?)```", re.S)
    seen = 0
    for page in PAGES:
        for path, options in pattern.findall(page.read_text()):
            source = (page.parent / path).resolve()
            text = source.read_text()
            for marker in re.findall(r':(?:start-after|end-before): "([^"]+)"', options):
                assert marker in text, "%s: %s has no %s" % (page.name, path, marker)
                seen += 1
    assert seen >= 6


def test_python_reference_names_every_public_symbol():
    text = (DOCS / "reference" / "python.md").read_text()
    for name in tether.__all__:
        assert re.search(r"\{py:(function|class)\} %s\b" % name, text), name


def test_cpp_reference_names_the_binding_api():
    text = (DOCS / "reference" / "cpp.md").read_text()
    for name in ("class_", "def_field", "def_field_ro", "init", "Ref", "WeakRef", "make_object",
                 "init_module", "TETHER_TRAMPOLINE", "TETHER_OVERRIDE", "TETHER_OVERRIDE_PURE"):
        assert re.search(r"\{(cpp|c):\w+\}[^\n]*\b%s\b" % name, text), name


@pytest.mark.skipif(not (importlib.util.find_spec("sphinx") and
                         importlib.util.find_spec("myst_parser")),
                    reason="sphinx and myst-parser not installed (pip install '.[docs]')")
def test_sphinx_build_without_warnings(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-n", "-q",
                           "-b", "html", str(DOCS), str(tmp_path / "html")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
