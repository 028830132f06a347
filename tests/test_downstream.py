# SPDX-License-Identifier: Apache-2.0
"""A downstream project (examples/downstream) built out of tree against the installed tether.

The example finds tether with `python -m tether --cmake-dir` + find_package(tether CONFIG),
builds with tether_add_module() and -Wall -Wextra -Werror, and runs its own test file in a
fresh interpreter: objects cross between it and tether.testing with their identity.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import tether

from cmake_build import (REPO, cmake_or_skip, configure_and_build, nanobind_cmake_dir, run,
                         tether_cmake_dir)

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


class TestNanobindPin:
    """find_package(tether) stops with a message saying what to do if nanobind is not 3.1.0."""

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
        assert "pip install nanobind==3.1.0" in err


class TestAbiMismatch:
    """A module compiled against headers with another tether::abi_version than the loaded
    libtether refuses to import, with an ImportError that says to rebuild."""

    def test_import_fails_loudly(self, tmp_path):
        # A copy of the installed package whose headers claim another ABI.
        fake = tmp_path / "other-install" / "tether"
        shutil.copytree(Path(tether.__file__).parent, fake,
                        ignore=shutil.ignore_patterns("__pycache__"))
        runtime_h = fake / "include" / "tether" / "runtime.h"
        line = f"abi_version = {tether.abi_version()};"
        assert line in runtime_h.read_text()
        runtime_h.write_text(runtime_h.read_text().replace(line, "abi_version = 999;"))
        build = configure_and_build(EXAMPLE, tmp_path / "build", f"-Dtether_DIR={fake / 'cmake'}")

        env = dict(os.environ, PYTHONPATH=str(build))
        code = "import tether, tether_geometry"  # the real libtether is loaded first
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        assert proc.returncode != 0
        assert "ImportError" in proc.stderr and "ABI" in proc.stderr, proc.stderr
