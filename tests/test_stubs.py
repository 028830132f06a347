# SPDX-License-Identifier: Apache-2.0
"""Type checkers see tether's types: mypy against the installed .pyi stubs.

mypy runs on small scripts in an environment laid out as an installed wheel: a bare venv whose
site-packages holds the tether package (its .py files, py.typed and the built .pyi stubs) and,
for downstream modules, what `cmake --install` put there. A valid script must type-check, and
each line marked `# E: <code>` in a script of planted errors must be reported with that code,
and nothing else. (In an editable install mypy would see pkg/tether without the .pyi files,
which live next to the built modules, so tether.Object would be Any and check nothing.)

Here: @tether.dataclass (typing.dataclass_transform), and tether_add_stub for a module
installed into a package (py.typed). The downstream example's own stubs (tether_add_module
STUBS, top-level module) are checked in test_downstream.py, on the build made there.
"""
import importlib.util
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cmake_build import (REPO, cmake_or_skip, configure_and_build, nanobind_cmake_dir, run,
                         tether_cmake_dir)


def tether_dirs():
    """The directories of the installed tether package: the .py files, and the built modules
    with their .pyi stubs (the same directory in a wheel, two in an editable install)."""
    py = Path(importlib.util.find_spec("tether").origin).parent
    built = Path(importlib.util.find_spec("tether._core").origin).parent
    return py, built


def typed_env(root):
    """A bare venv at root/env whose site-packages holds tether as a wheel installs it.
    Returns (python, site-packages)."""
    pytest.importorskip("mypy", reason="mypy is needed for the type-checking tests")
    py_dir, built_dir = tether_dirs()
    if not list(built_dir.glob("_core.pyi")):
        pytest.skip(f"tether was built without .pyi stubs (TETHER_STUBS=OFF): {built_dir}")
    env = Path(root) / "env"
    run([sys.executable, "-m", "venv", "--without-pip", str(env)])
    python = env / "bin" / "python"
    site = Path(run([str(python), "-c",
                     "import sysconfig; print(sysconfig.get_path('platlib'))"]).stdout.strip())
    pkg = site / "tether"
    pkg.mkdir()
    for d in dict.fromkeys((py_dir, built_dir)):
        for f in [*d.glob("*.py"), *d.glob("*.pyi"), *d.glob("py.typed")]:
            shutil.copy2(f, pkg / f.name)
    assert (pkg / "py.typed").is_file() and (pkg / "__init__.py").is_file()
    return python, site


_ERROR = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+): error: (?P<msg>.*?)\s+\[(?P<code>[\w-]+)\]$")


def mypy(python, files, cwd):
    """Run mypy with python's site-packages; returns (returncode, [(file, line, code, msg)], output)."""
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--python-executable", str(python),
         "--cache-dir", str(Path(cwd) / ".mypy_cache"), "--no-color-output",
         "--no-error-summary", "--show-error-codes", "--hide-error-context", "--no-pretty",
         *map(str, files)],
        cwd=cwd, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    errors = [(m["file"], int(m["line"]), m["code"], m["msg"])
              for m in map(_ERROR.match, out.splitlines()) if m]
    return proc.returncode, errors, out


def write_script(directory, name, text):
    path = Path(directory) / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def planted(path):
    """{line: code} for the lines of path marked `# E: code`."""
    marks = {}
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        found = re.search(r"# E: ([\w-]+)", line)
        if found:
            marks[n] = found.group(1)
    return marks


def check_scripts(python, directory, valid, errors):
    """valid type-checks cleanly; errors reports exactly its planted errors. Returns mypy's
    report of the planted errors (for the record)."""
    ok = write_script(directory, "valid.py", valid)
    rc, found, out = mypy(python, [ok], directory)
    assert rc == 0 and not found, out

    bad = write_script(directory, "planted.py", errors)
    rc, found, out = mypy(python, [bad], directory)
    assert rc == 1, out
    got = {line: code for file, line, code, _ in found}
    assert all(file == bad.name for file, *_ in found), out
    assert got == planted(bad), out
    return out


DATACLASS_VALID = """
    import dataclasses

    import tether
    from tether import testing


    @tether.dataclass
    class Point(tether.Object):
        x: int
        y: float = 0.0
        child: testing.Inner | None = None


    @tether.dataclass(frozen=True, kw_only=True)
    class Tag(tether.Object):
        name: str
        aliases: list[str] = dataclasses.field(default_factory=list)


    p = Point(1, 2.0)
    q = Point(x=3, child=testing.Inner(4))
    p.x = 5
    p.child = q.child
    total: float = p.x + p.y
    t = Tag(name="a", aliases=["b"])
    names: list[str] = [t.name, *t.aliases]
    o: tether.Object = p
    tether.move(p)
"""

DATACLASS_ERRORS = """
    import tether


    @tether.dataclass
    class Point(tether.Object):
        x: int
        y: float = 0.0


    @tether.dataclass(frozen=True, kw_only=True)
    class Tag(tether.Object):
        name: str


    p = Point(1, 2.0)
    Point("1", 2.0)  # E: arg-type
    Point(1, 2.0, 3)  # E: call-arg
    Point()  # E: call-arg
    p.x = "one"  # E: assignment
    p.z  # E: attr-defined
    t = Tag(name="a")
    t.name = "b"  # E: misc
    Tag("a")  # E: call-arg
"""


class TestDataclassTransform:
    """@tether.dataclass is declared with typing.dataclass_transform: mypy builds __init__ from
    the fields (Point(1, 2.0) is valid) and checks field types, frozen and kw_only."""

    def test_mypy(self, tmp_path):
        python, _ = typed_env(tmp_path)
        out = check_scripts(python, tmp_path, DATACLASS_VALID, DATACLASS_ERRORS)
        print(out)

    def test_runtime_marker(self):
        import tether
        assert tether.dataclass.__dataclass_transform__["field_specifiers"]


class TestStubPatterns:
    """python -m tether._stubpatterns [-i DIR]... OUT.pat MODULE...: the -i directories come
    first on sys.path, as for nanobind.stubgen."""

    def test_path_option(self, tmp_path):
        mod = tmp_path / "mods" / "plain_mod.py"
        mod.parent.mkdir()
        mod.write_text("x = 1\n")
        out = tmp_path / "out.pat"
        run([sys.executable, "-m", "tether._stubpatterns", "-i", str(mod.parent), str(out),
             "plain_mod", "tether.testing"], cwd=tmp_path)
        text = out.read_text()
        assert "^tether\\.testing\\.Inner\\.value$:" in text
        assert "    value: int" in text

    def test_usage(self, tmp_path):
        proc = subprocess.run([sys.executable, "-m", "tether._stubpatterns", "-i"],
                              cwd=tmp_path, capture_output=True, text=True)
        assert proc.returncode == 2 and proc.stderr.startswith("usage:")


# A module installed into a package: tether_add_module(... INSTALL_DESTINATION geopkg STUBS)
# installs geopkg/tether_geometry.pyi and geopkg/py.typed.
PACKAGE_PROJECT = """
    cmake_minimum_required(VERSION 3.18...3.31)
    project(geopkg LANGUAGES CXX)
    find_package(Python 3.11 REQUIRED COMPONENTS Interpreter Development.Module)
    find_package(tether CONFIG REQUIRED)
    tether_add_module(tether_geometry NOMINSIZE INSTALL_DESTINATION geopkg STUBS
                      "{source}")
"""

PACKAGE_VALID = """
    from geopkg import tether_geometry as geo

    s = geo.Segment(geo.Point(0, 0), geo.Point(3.0, 4))
    length: float = s.length()
    if s.a is not None:
        s.a.x = 1.5
"""

PACKAGE_ERRORS = """
    from geopkg import tether_geometry as geo

    p = geo.Point(1.0, 2.0)
    p.y = "two"  # E: assignment
    geo.Segment(p, "q")  # E: arg-type
    geo.Pointe()  # E: attr-defined
"""


class TestStubsInAPackage:
    def test_installed_with_py_typed(self, tmp_path):
        nanobind_cmake_dir()
        source = tmp_path / "src"
        source.mkdir()
        (source / "CMakeLists.txt").write_text(textwrap.dedent(PACKAGE_PROJECT).format(
            source=(REPO / "examples" / "downstream" / "src" / "geometry.cpp").as_posix()))
        build = configure_and_build(source, tmp_path / "build",
                                    f"-Dtether_DIR={tether_cmake_dir()}")
        assert (build / "tether_geometry.pyi").is_file()  # next to the built module

        python, site = typed_env(tmp_path)
        cmake, _ = cmake_or_skip()
        run([cmake, "--install", str(build), "--prefix", str(site)])
        pkg = site / "geopkg"
        assert sorted(p.name for p in pkg.iterdir() if not p.name.endswith(".so")) == \
            ["py.typed", "tether_geometry.pyi"]
        assert not (site / "tether_geometry-stubs").exists()
        (pkg / "__init__.py").write_text("")
        stub = (pkg / "tether_geometry.pyi").read_text()
        assert "class Point(tether.Object):" in stub and "    x: float\n" in stub

        work = tmp_path / "check"
        work.mkdir()
        check_scripts(python, work, PACKAGE_VALID, PACKAGE_ERRORS)
