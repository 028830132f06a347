# SPDX-License-Identifier: Apache-2.0
"""Benchmarks: attribute reads, tether next to its peers.

One call of each benchmark body is 100 reads; divide pytest-benchmark's time by 100.
"""
import pytest

from tether.bench.cases import main_cases

MAIN = {c.key: c for c in main_cases()}


class TestHotRead:
    """`a.x` while a wrapper of x is held."""

    @pytest.mark.parametrize("key", ["slots.read", "nb-intrusive.hot", "nb-ref.hot", "tether.hot"])
    def test_hot(self, run_case, key):
        run_case(MAIN[key], "hot a.x")


class TestReviveRead:
    """`a.x` with no Python reference to x: tether's header and nanobind's intrusive counter
    keep x's wrapper; nanobind's reference_internal makes and frees one per read."""

    @pytest.mark.parametrize("key", ["tether.hot", "tether.revive", "nb-ref.cold",
                                     "nb-intrusive.cold"])
    def test_revive(self, run_case, key):
        run_case(MAIN[key], "revive a.x")


class TestIntRead:
    """`i.value`, an int64 field."""

    @pytest.mark.parametrize("key", ["slots.int", "cpython.getset", "nb.int", "tether.int"])
    def test_int(self, run_case, key):
        run_case(MAIN[key], "int i.value")
