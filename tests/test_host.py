# SPDX-License-Identifier: Apache-2.0
"""The embedding host (examples/host): a C++ program that starts CPython and uses tether.

Built with CMake against the installed tether and run as a child process. It checks, in C++,
that objects come back from a Python script as the same wrappers (kept alive by their headers
while C++ shares them), that C++ threads can release shared objects while Python runs (taking
the GIL to let the wrappers go), and that releasing shared objects after Py_FinalizeEx()
orphans their wrappers without touching freed memory.
"""
import subprocess

import pytest


from cmake_build import (REPO, cmake_or_skip, nanobind_cmake_dir, passed_failed, run,
                         tether_cmake_dir)

EXAMPLE = REPO / "examples" / "host"


@pytest.fixture(scope="module")
def host_binary(tmp_path_factory):
    cmake, args = cmake_or_skip()
    tether_cmake_dir()
    nanobind_cmake_dir()
    build = tmp_path_factory.mktemp("host")
    proc = subprocess.run([cmake, "-S", str(EXAMPLE), "-B", str(build), *args],
                          capture_output=True, text=True)
    if proc.returncode != 0 and "Development.Embed" in proc.stderr + proc.stdout:
        pytest.skip("this Python has no embeddable libpython (CMake: Development.Embed not found)")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run([cmake, "--build", str(build), "-j", "2"])
    return build / "tether_host"


@pytest.fixture(scope="module")
def host_run(host_binary):
    proc = subprocess.run([str(host_binary), str(EXAMPLE)], capture_output=True, text=True,
                          timeout=300)
    return proc


class TestHostChecks:
    """Every check in host.cpp passes and the process exits cleanly (no crash at the end,
    after objects with shared wrappers were released with the interpreter gone)."""

    def test_all_checks_pass(self, host_run):
        out = host_run.stdout + host_run.stderr
        passed, failed = passed_failed(host_run.stdout)
        assert (failed, host_run.returncode) == (0, 0), out
        assert passed >= 25, out
        assert "Fatal Python error" not in out


class TestThreadsWhilePythonRuns:
    """C++ threads released 200 shared objects while the main thread ran Python code."""

    def test_threads_released(self, host_run):
        assert "threads: released 200 objects" in host_run.stdout, host_run.stdout


class TestAfterFinalize:
    """All 9 shared wrappers released after Py_FinalizeEx() were orphaned, not freed."""

    def test_orphaned(self, host_run):
        line = next(l for l in host_run.stdout.splitlines() if l.startswith("after finalize:"))
        orphaned = int(line.split()[2])
        assert orphaned == 9, line

    def test_second_interpreter_refused(self, host_run):
        """Python finalized and started again: importing tether is an ImportError that says
        why (its objects name the first interpreter's wrappers and types)."""
        assert "second interpreter: tether: Python was finalized and started again" in \
            host_run.stdout, host_run.stdout
