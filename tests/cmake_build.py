# SPDX-License-Identifier: Apache-2.0
"""Helpers for the tests that drive CMake: find the tools, configure, build, run.

Used by test_cpp_core.py (the pure C++ core tests), test_downstream.py (the downstream
example module) and test_host.py (the embedding host). Each build goes into a pytest tmp dir,
never into the repository.
"""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _tool(module, attr, name):
    """A tool from its pip package (cmake, ninja) if installed, else from PATH."""
    try:
        mod = __import__(module)
        path = Path(getattr(mod, attr)) / name
        if path.exists():
            return str(path)
    except ImportError:
        pass
    return shutil.which(name)


def cmake_or_skip():
    """(cmake, extra configure args) or pytest.skip with the reason."""
    cmake = _tool("cmake", "CMAKE_BIN_DIR", "cmake")
    if not cmake:
        pytest.skip("cmake is not installed (pip install cmake, or the 'test' extra)")
    cxx = os.environ.get("CXX") or next(
        (found for name in ("c++", "g++", "clang++") if (found := shutil.which(name))), None)
    if not cxx:
        pytest.skip("no C++ compiler found (set CXX or install g++/clang++)")
    args = [f"-DCMAKE_CXX_COMPILER={cxx}", f"-DPython_EXECUTABLE={sys.executable}"]
    ninja = _tool("ninja", "BIN_DIR", "ninja")
    if ninja:
        args += ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}"]
    return cmake, args


def run(cmd, **kwargs):
    """Run a command, failing the test with its output if it fails."""
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        pytest.fail(
            f"command failed ({proc.returncode}): {' '.join(map(str, cmd))}\n"
            f"--- stdout ---\n{proc.stdout[-6000:]}\n--- stderr ---\n{proc.stderr[-6000:]}"
        )
    return proc


def configure_and_build(source, build, *defines):
    """cmake -S source -B build <defines> && cmake --build build; returns the build dir."""
    cmake, args = cmake_or_skip()
    run([cmake, "-S", str(source), "-B", str(build), *args, *defines])
    run([cmake, "--build", str(build), "-j", "2"])
    return Path(build)


def passed_failed(output):
    """(passed, failed) from the last "N passed, M failed" line of a C++ test program."""
    found = re.findall(r"^(\d+) passed, (\d+) failed$", output, re.MULTILINE)
    assert found, f"no 'N passed, M failed' line in:\n{output}"
    passed, failed = found[-1]
    return int(passed), int(failed)


def tether_cmake_dir():
    """What `python -m tether --cmake-dir` prints for the installed tether."""
    out = run([sys.executable, "-m", "tether", "--cmake-dir"]).stdout.strip()
    assert Path(out, "tether-config.cmake").is_file(), out
    return out


def tether_nanobind_version():
    """The nanobind version the installed tether was built with (from its tether-config.cmake;
    any version in pyproject.toml's range, not always the newest)."""
    text = (Path(tether_cmake_dir()) / "tether-config.cmake").read_text()
    found = re.search(r'set\(tether_NANOBIND_VERSION "([^"]+)"\)', text)
    assert found, "tether-config.cmake names no tether_NANOBIND_VERSION"
    return found.group(1)


def nanobind_cmake_dir():
    nanobind = pytest.importorskip("nanobind", reason="nanobind is needed to build against tether")
    return nanobind.cmake_dir()
