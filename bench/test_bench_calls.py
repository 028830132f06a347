# SPDX-License-Identifier: Apache-2.0
"""Benchmarks: construction and a function returning an object (issue 3, targets 4-5).

One call of each benchmark body is 100 operations.
"""
import pytest

from tether.bench.cases import main_cases

MAIN = {c.key: c for c in main_cases()}


class TestConstruction:
    """Target 4: `Inner(1)` (made and freed) next to a plain nanobind class."""

    @pytest.mark.parametrize("key", ["nb.new", "nb.boxed", "tether.new", "untied.new", "slots.new"])
    def test_new(self, run_case, key):
        run_case(MAIN[key], "construct C(1)")


class TestEcho:
    """Target 5: `echo(x)` returns the argument's one wrapper."""

    @pytest.mark.parametrize("key", ["nb.echo", "tether.echo_inner", "tether.echo"])
    def test_echo(self, run_case, key):
        run_case(MAIN[key], "echo(x)")
