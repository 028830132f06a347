# SPDX-License-Identifier: Apache-2.0
"""The documentation site (docs/): its code runs, its reference is complete, and it builds.

- Every fenced block whose info string is exactly ``python`` runs: the blocks of one page in
  order, in one fresh interpreter (so a crash fails the test, not the session).
- The C++ the pages show is written inline (```` ```cpp ```` blocks, readable as plain Markdown)
  and copied from compiled sources: a block preceded by
  ``<!-- mirrors path/to/file.cpp [doc-name] -->`` must equal the lines between
  ``// [doc-name]`` and ``// [doc-name-end]`` in that file (indentation and trailing
  whitespace aside), and every C++ block of the guide must mirror one. A block preceded by
  ``<!-- mirrors path/to/file without comments -->`` equals that whole TOML or CMake file
  without its ``#`` comments and blank lines.
- README.md and the pages (with the files they ``{include}``) carry no work history: no
  session or run numbers, lettered machines or commit ids.
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
            "shipping.md", "embedding.md", "testing.md",
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


ROOT = DOCS.parent
CPP_FENCE = re.compile(r"^```(?:cpp|c\+\+)[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)
MIRROR = re.compile(r"^<!-- mirrors (\S+) \[(doc-[\w-]+)\] -->[ \t]*\n"
                    r"```(?:cpp|c\+\+)[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)


def normalized(code):
    """The lines of a snippet without common indentation, trailing whitespace or blank ends."""
    lines = [line.rstrip() for line in textwrap.dedent(code).splitlines()]
    return "\n".join(lines).strip("\n")


def marked_region(path, name):
    """The lines strictly between `// [name]` and `// [name-end]` in the file at path."""
    text = (ROOT / path).read_text()
    start = re.search(r"^[ \t]*// \[%s\][ \t]*$" % re.escape(name), text, re.M)
    assert start, "%s has no line '// [%s]'" % (path, name)
    end = re.search(r"^[ \t]*// \[%s-end\][ \t]*$" % re.escape(name), text[start.end():], re.M)
    assert end, "%s has no line '// [%s-end]' after '// [%s]'" % (path, name, name)
    return text[start.end():start.end() + end.start()]


def mirrored_blocks():
    return [(page, path, name, code) for page in PAGES
            for path, name, code in MIRROR.findall(page.read_text())]


def test_guide_cpp_is_inline_and_mirrored():
    guide = (DOCS / "guide.md").read_text()
    assert "literalinclude" not in guide
    mirrored = [name for page, _, name, _ in mirrored_blocks() if page.name == "guide.md"]
    assert {"doc-node-struct", "doc-node-binding", "doc-node-calls"} <= set(mirrored)
    assert len(CPP_FENCE.findall(guide)) == len(mirrored), (
        "every ```cpp block of guide.md must follow a line "
        "'<!-- mirrors <source file> [doc-name] -->' naming compiled code between "
        "'// [doc-name]' and '// [doc-name-end]' markers")


@pytest.mark.parametrize("page,path,name,code", mirrored_blocks(),
                         ids=["%s:%s" % (b[0].name, b[2]) for b in mirrored_blocks()])
def test_inline_cpp_matches_its_source(page, path, name, code):
    source = normalized(marked_region(path, name))
    shown = normalized(code)
    assert shown == source, "%s: the block mirroring %s [%s] differs from the source; copy " \
        "the lines between the markers into the page:\n%s" % (page.name, path, name, source)


FILE_MIRROR = re.compile(r"^<!-- mirrors (\S+) without comments -->[ \t]*\n"
                         r"```\w+[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)


def without_comment(line):
    """A TOML or CMake line up to its first `#` outside double quotes."""
    quoted = False
    for i, c in enumerate(line):
        if c == '"':
            quoted = not quoted
        elif c == "#" and not quoted:
            return line[:i]
    return line


def without_comments(text):
    """Non-blank lines of a TOML or CMake file, `#` comments and trailing whitespace removed."""
    lines = (without_comment(line).rstrip() for line in text.splitlines())
    return [line for line in lines if line]


def test_quoted_files_match_their_source():
    quoted = [(page, path, code) for page in PAGES for path, code in FILE_MIRROR.findall(
        page.read_text())]
    assert len(quoted) >= 2
    for page, path, code in quoted:
        assert without_comments(code) == without_comments((ROOT / path).read_text()), (
            "%s: the block quoting %s differs from the file" % (page.name, path))


# Work history belongs in git, not in the user documents: the pages say what was measured, on
# which CPU and Python, and how to reproduce it, never which work period, machine letter, run
# number or commit it came from.
HISTORY = re.compile(r"\b[Ss]essions? \d|\bsame session\b|\bwork periods?\b"
                     r"|\b[Mm]achines? [A-H]\b(?![-\w])|\bVMs? of sessions?\b"
                     r"|\b[Rr]un \d+\b|\b[Rr]uns \d+ ?[-–] ?\d+\b"
                     r"|\b(?:main at|at commit|before commit|since commit|commit) [0-9a-f]{7,40}\b"
                     r"|\b(?:at|of|from|before|since) (?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}\b"
                     r"|`(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}`"
                     r"|\bCI took\b|`\.ci/run` took\b")


def user_documents():
    docs = [ROOT / "README.md"] + [p for p in sorted(DOCS.rglob("*.md")) if p.name != "README.md"]
    included = {(page.parent / path).resolve() for page in docs
                for path in re.findall(r"^```\{include\} (\S+)", page.read_text(), re.M)}
    return docs + sorted(included - set(docs))


@pytest.mark.parametrize("doc", user_documents(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_user_documents_carry_no_work_history(doc):
    hits = ["%d: %s" % (n, line.strip()) for n, line in enumerate(doc.read_text().splitlines(), 1)
            if HISTORY.search(line)]
    assert not hits, "%s reads as a work log:\n%s" % (doc.name, "\n".join(hits))


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
