# SPDX-License-Identifier: Apache-2.0
"""Benchmarks: attribute reads (issue 3, targets 1-3), tether next to its peers.

One call of each benchmark body is 100 reads; divide pytest-benchmark's time by 100.
"""
import pytest

from tether.bench.cases import main_cases

MAIN = {c.key: c for c in main_cases()}


class TestHotRead:
    """Target 1: `a.x` while a wrapper of x is held (tether: BOUND, T2)."""

    @pytest.mark.parametrize("key", ["slots.read", "nb-intrusive.hot", "nb-ref.hot", "tether.hot"])
    def test_hot(self, run_case, key):
        run_case(MAIN[key], "hot a.x")


class TestReviveRead:
    """Target 2: `a.x` with no wrapper of x alive (tether: revive T4, then park T3)."""

    @pytest.mark.parametrize("key", ["tether.hot", "tether.revive", "nb-ref.cold"])
    def test_revive(self, run_case, key):
        run_case(MAIN[key], "revive a.x")


class TestIntRead:
    """Target 3: `i.value`, an int64 field."""

    @pytest.mark.parametrize("key", ["slots.int", "cpython.getset", "nb.int", "tether.int"])
    def test_int(self, run_case, key):
        run_case(MAIN[key], "int i.value")
