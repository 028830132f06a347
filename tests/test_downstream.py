# SPDX-License-Identifier: Apache-2.0
"""A downstream project (examples/downstream) built out of tree against the installed tether.

The example finds tether with `python -m tether --cmake-dir` + find_package(tether CONFIG),
builds with tether_add_module() and -Wall -Wextra -Werror, and runs its own test file in a
fresh interpreter: objects cross between it and tether.testing with their identity.
The module links no tether library (jump slots, tether/module_init.h), so it carries no path
of this machine; a second copy of tether's runtime in one process is refused.
The wheel round trip (build env deleted, fresh env, editable tether) is in test_wheels.py.
"""
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import tether

from cmake_build import (REPO, cmake_or_skip, configure_and_build, nanobind_cmake_dir, run,
                         tether_cmake_dir, tether_nanobind_version)

EXAMPLE = REPO / "examples" / "downstream"


@pytest.fixture(scope="module")
def geometry_build(tmp_path_factory):
    tether_cmake_dir()  # fails clearly if the installed tether has no CMake config
    nanobind_cmake_dir()
    return configure_and_build(EXAMPLE, tmp_path_factory.mktemp("downstream"))


class TestInstalledFiles:
    """The wheel ships the C++ headers and the CMake package config."""

    def test_dirs(self):
        cmake_dir = Path(tether_cmake_dir())
        assert (cmake_dir / "tether-config-version.cmake").is_file()
        include = Path(run([sys.executable, "-m", "tether", "--include-dir"]).stdout.strip())
        for header in ("tether.h", "header.h", "object.h", "ref.h", "alloc.h", "runtime.h",
                       "python.h", "nanobind.h", "fields.h", "weak_ref_caster.h",
                       "trampoline.h"):
            assert (include / "tether" / header).is_file(), header
        lib = Path(run([sys.executable, "-m", "tether", "--lib-dir"]).stdout.strip())
        assert any(lib.glob("libtether.*")) and any(lib.glob("libtether_python.*"))


class TestDownstreamModule:
    """The example's own tests pass: `a.x is a.x` across tether_geometry and tether.testing."""

    def test_example_tests_pass(self, geometry_build):
        env = dict(os.environ)
        paths = [str(geometry_build), env.get("PYTHONPATH")]
        env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE)],
            cwd=EXAMPLE, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert " passed" in proc.stdout and "failed" not in proc.stdout


def module_file(build):
    found = sorted(Path(build).glob("tether_geometry*.so"))
    assert found, f"no tether_geometry module in {build}"
    return found[0]


def dynamic_section(path):
    """(NEEDED entries, RUNPATH/RPATH entries) of an ELF file, from `readelf -d`."""
    readelf = shutil.which("readelf")
    if not readelf:
        pytest.skip("readelf (binutils) is not installed")
    out = run([readelf, "-d", str(path)]).stdout
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)
    paths = re.findall(r"\((?:RUNPATH|RPATH)\)\s+Library r(?:un)?path: \[([^\]]*)\]", out)
    return needed, paths


class TestRelocatableModule:
    """The module names no tether library and no directory: it binds to whatever tether
    `import tether` finds, imported before or after it."""

    def test_no_tether_library_and_no_path(self, geometry_build):
        module = module_file(geometry_build)
        needed, paths = dynamic_section(module)
        assert not [n for n in needed if "tether" in n], needed
        assert paths == [], paths
        nm = shutil.which("nm")
        if nm:
            undefined = run([nm, "-D", "--undefined-only", str(module)]).stdout
            assert "tether" not in undefined, undefined

    @pytest.mark.parametrize("first", ["tether_geometry", "tether"])
    def test_either_import_order(self, geometry_build, first):
        second = "tether" if first == "tether_geometry" else "tether_geometry"
        code = textwrap.dedent(f"""
            import {first}, {second}
            import tether, tether_geometry as geo
            from tether import testing
            live = tether.stats()["live"]
            p = geo.Point(1, 2)
            box = testing.Box(p)
            assert box.value is p and testing.echo(p) is p
            assert tether.stats()["live"] == live + 2, tether.stats()  # p and box
            testing.Box(tether.move(p))   # a move between the two modules is accepted
            print("ok")
        """)
        env = dict(os.environ, PYTHONPATH=str(geometry_build))
        proc = run([sys.executable, "-c", code], env=env, cwd=geometry_build)
        assert proc.stdout.strip() == "ok"


    def test_without_tether_the_import_error_says_so(self, geometry_build):
        code = textwrap.dedent("""
            import sys
            sys.modules["tether"] = None          # as if tether were not installed
            try:
                import tether_geometry
            except ImportError as e:
                print(e)
        """)
        env = dict(os.environ, PYTHONPATH=str(geometry_build))
        out = run([sys.executable, "-c", code], env=env, cwd=geometry_build).stdout
        assert out.startswith("tether_geometry: this module binds tether types and needs the "
                              "tether package"), out
        assert "pip install tether" in out


# A second copy of libtether_python, loaded as auditwheel would graft it: under new names
# (same length, so the ELF string table can be patched in place), with its own libtether.
SECOND_RUNTIME = textwrap.dedent("""
    import ctypes, pathlib, sys
    import importlib.util
    src = pathlib.Path(importlib.util.find_spec("tether._core").origin).parent
    dst = pathlib.Path(sys.argv[2])
    def graft(name, renames):
        data = (src / name).read_bytes()
        for old, new in renames:
            assert data.count(old) >= 1, (name, old)
            data = data.replace(old, new)
        (dst / renames[0][1].rstrip(b"\\0").decode()).write_bytes(data)
    graft("libtether.so", [(b"libtether.so\\0", b"libtetheR.so\\0")])
    graft("libtether_python.so", [(b"libtether_python.so\\0", b"libtether_pythoR.so\\0"),
                                  (b"libtether.so\\0", b"libtetheR.so\\0")])
    def init_copy():
        lib = ctypes.PyDLL(str(dst / "libtether_pythoR.so"))
        f = lib._ZN6tether2py10initializeEv
        f.restype = ctypes.c_int
        return f()
    try:
        if sys.argv[1] == "tether-first":
            import tether
            init_copy()
        else:
            assert init_copy() == 0
            import tether
    except ImportError as e:
        print("ImportError:", e)
    else:
        print("not refused")
""")


GEOMETRY_VALID = """
    import tether
    import tether_geometry as geo
    from tether import testing

    p = geo.Point(1.0, 2)
    s = geo.Segment(p, geo.Point(x=3.0))
    length: float = s.length()
    if s.a is not None:
        s.a.x = 0.5
    s.b = None
    h = geo.Holder(testing.Inner(1))
    held: tether.Object | None = h.value
    root = geo.Shape()
    root.children = [geo.Shape()]
    root.children[0].parent = root
    area: float = root.total_area()
    count: int = geo.use_count(p)
    fields: tuple[str, ...] = geo.Point.__tether_fields__
    seg: geo.Segment = geo.make_segment(0, 0, 1, 1)
    same: tether.Object = geo.echo(seg)
"""

GEOMETRY_ERRORS = """
    import tether_geometry as geo

    p = geo.Point(1.0, 2.0)
    p.x = "one"  # E: assignment
    geo.Point("1", 2.0)  # E: arg-type
    p.z  # E: attr-defined
    geo.Segment(p, 3)  # E: arg-type
    s = geo.Segment(p, p)
    s.a = geo.Shape()  # E: assignment
    n: str = geo.use_count(p)  # E: assignment
    geo.Shape().children = [p]  # E: list-item
"""


class TestStubs:
    """tether_add_module(... STUBS): tether_geometry.pyi next to the built module, installed
    next to it and as tether_geometry-stubs/ (mypy's PEP 561 stub package); mypy accepts a
    valid script and reports each planted error."""

    def test_stub_in_build_dir(self, geometry_build):
        stub = (geometry_build / "tether_geometry.pyi").read_text()
        assert "import tether" in stub and "class Point(tether.Object):" in stub
        assert "    x: float\n" in stub and "    a: Point | None\n" in stub
        assert "getset_descriptor" not in stub  # every field typed by the pattern file

    def test_mypy_against_installed_stubs(self, geometry_build, tmp_path):
        from test_stubs import check_scripts, typed_env
        python, site = typed_env(tmp_path)
        cmake, _ = cmake_or_skip()
        run([cmake, "--install", str(geometry_build), "--prefix", str(site)])
        stub = (site / "tether_geometry.pyi").read_text()
        assert (site / "tether_geometry-stubs" / "__init__.pyi").read_text() == stub
        work = tmp_path / "check"
        work.mkdir()
        print(check_scripts(python, work, GEOMETRY_VALID, GEOMETRY_ERRORS))


class TestOneRuntime:
    """A second copy of tether's runtime in the process is refused with an ImportError that
    names both copies and the way to build correctly, whichever initializes first."""

    @pytest.mark.parametrize("order", ["tether-first", "copy-first"])
    def test_second_copy_is_refused(self, tmp_path, order):
        proc = run([sys.executable, "-c", SECOND_RUNTIME, order, str(tmp_path)], cwd=tmp_path)
        out = " ".join(proc.stdout.split())
        assert out.startswith("ImportError: tether: a second copy of tether's runtime"), out
        assert str(tmp_path / "libtether_pythoR.so") in out
        assert "libtether_python.so" in out and "tether_add_module()" in out
        assert "auditwheel repair" in out


class TestNanobindPin:
    """find_package(tether) stops with a message saying what to do if nanobind is not one
    whose layout tether verified (3.0.1 .. 3.1.x, the internals of tether's build)."""

    def test_wrong_nanobind_version_fails_at_configure(self, tmp_path):
        cmake, args = cmake_or_skip()
        tether_cmake_dir()
        fake = tmp_path / "fake-nanobind"
        fake.mkdir()
        (fake / "nanobind-config.cmake").write_text("# a nanobind that is not the pinned one\n")
        (fake / "nanobind-config-version.cmake").write_text(
            'set(PACKAGE_VERSION "3.0.0")\nset(PACKAGE_VERSION_COMPATIBLE TRUE)\n')
        proc = subprocess.run(
            [cmake, "-S", str(EXAMPLE), "-B", str(tmp_path / "build"), *args,
             f"-Dnanobind_DIR={fake}"],
            capture_output=True, text=True)
        assert proc.returncode != 0
        err = " ".join(proc.stderr.split())  # CMake wraps long messages
        assert "found nanobind 3.0.0" in err
        assert f"pip install nanobind=={tether_nanobind_version()}" in err


class TestAbiMismatch:
    """A module compiled against headers with another tether::abi_version than the loaded
    libtether refuses to import, with an ImportError that says to rebuild."""

    def test_import_fails_loudly(self, tmp_path):
        # A copy of the installed package whose headers claim another ABI. The directory of
        # tether._core: it holds include/ and cmake/ in an editable install too (pkg/tether
        # does not).
        fake = tmp_path / "other-install" / "tether"
        shutil.copytree(Path(tether._core.__file__).parent, fake,
                        ignore=shutil.ignore_patterns("__pycache__"))
        runtime_h = fake / "include" / "tether" / "runtime.h"
        line = f"abi_version = {tether.abi_version()};"
        assert line in runtime_h.read_text()
        runtime_h.write_text(runtime_h.read_text().replace(line, "abi_version = 999;"))
        # TETHER_STUBS=OFF: stubgen would import the module with this Python, whose tether is
        # not the fake one (tether_add_stub refuses that at configure time).
        build = configure_and_build(EXAMPLE, tmp_path / "build", f"-Dtether_DIR={fake / 'cmake'}",
                                    "-DTETHER_STUBS=OFF")

        env = dict(os.environ, PYTHONPATH=str(build))
        code = "import tether, tether_geometry"  # the real libtether is loaded first
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        assert proc.returncode != 0
        assert "ImportError" in proc.stderr and "ABI" in proc.stderr, proc.stderr
