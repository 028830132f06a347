# SPDX-License-Identifier: Apache-2.0
"""The C++ unit tests of the core (cpp/tests/test_core.cpp), built with CMake and run here.

They cover the allocator, counts and their WRAPPED/SHARED bits (E1/E2 edges through the hook
table), made_by_tether, the 32-bit header distance, alignment and the trashcan (million-object
chains released on small stacks) in a process that never starts Python, so the pure C++ use
of libtether is tested by the same `pytest` command.
"""
import shutil
import subprocess

import pytest

from cmake_build import REPO, configure_and_build, passed_failed, tether_cmake_dir


@pytest.fixture(scope="module")
def core_test_binary(tmp_path_factory):
    build = configure_and_build(REPO / "cpp" / "tests", tmp_path_factory.mktemp("cpp-core"))
    return build / "test_core"


class TestCoreUnitTests:
    """test_core.cpp: every C++ check passes (layout, counts, weak refs, alignment, padded
    base, opt-out, throwing constructors, concurrent release, made_by_tether, count bits and
    edges, edges without Python, the trashcan)."""

    def test_all_checks_pass(self, core_test_binary):
        proc = subprocess.run([str(core_test_binary)], capture_output=True, text=True)
        passed, failed = passed_failed(proc.stdout)
        assert (failed, proc.returncode) == (0, 0), proc.stdout + proc.stderr
        assert passed >= 500, proc.stdout  # the program really ran its cases
        assert "FAILED" not in proc.stdout + proc.stderr
        for case in ("made_by_tether", "count_bits_and_edges", "trashcan"):
            assert f"{case} " in proc.stdout and "invariant violated" not in proc.stderr


class TestNoInterpreter:
    """The pure C++ program does not load libpython: the core needs no interpreter."""

    def test_not_linked_to_python(self, core_test_binary):
        ldd = shutil.which("ldd")
        if not ldd:
            pytest.skip("ldd is not available to list the program's libraries")
        libs = subprocess.run([ldd, str(core_test_binary)], capture_output=True, text=True).stdout
        assert "libtether.so" in libs
        assert "libpython" not in libs


class TestPlainExample:
    """examples/plain builds against the installed tether with COMPONENTS core (no Python,
    no nanobind) and runs without loading libpython."""

    def test_builds_and_runs(self, tmp_path):
        build = configure_and_build(REPO / "examples" / "plain", tmp_path,
                                    f"-Dtether_DIR={tether_cmake_dir()}")
        proc = subprocess.run([str(build / "tether_plain")], capture_output=True, text=True)
        assert proc.returncode == 0 and "ok" in proc.stdout, proc.stdout + proc.stderr
        ldd = shutil.which("ldd")
        if ldd:
            libs = subprocess.run([ldd, str(build / "tether_plain")], capture_output=True,
                                  text=True).stdout
            assert "libpython" not in libs
