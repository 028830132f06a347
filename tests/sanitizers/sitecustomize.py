# SPDX-License-Identifier: Apache-2.0
"""tests/sanitizers/sitecustomize.py: leak checking for the test process only (see .ci/sanitize).

.ci/sanitize puts this directory on PYTHONPATH. The ASan runtime has read ASAN_OPTIONS by the
time Python runs this, so the pytest process keeps detect_leaks=1; what changes is the
environment its children inherit. Compilers, linkers, CMake and the C++ test programs still
run with the ASan runtime preloaded (UBSan and ASan errors still halt them), but without
leak checking: the toolchain does not free its memory at exit and would fail every build.
"""
import os

if os.environ.get("TETHER_SANITIZE_RUN") and "detect_leaks=1" in os.environ.get("ASAN_OPTIONS", ""):
    os.environ["ASAN_OPTIONS"] = os.environ["ASAN_OPTIONS"].replace("detect_leaks=1", "detect_leaks=0")
