# SPDX-License-Identifier: Apache-2.0
"""Benchmarks: construction and a function returning an object, each next to its nanobind peers.

One call of each benchmark body is 100 operations.
"""
import pytest

from tether.bench.cases import main_cases

MAIN = {c.key: c for c in main_cases()}


class TestConstruction:
    """`Inner(1)` (made and freed) next to a plain and an intrusive_base nanobind class."""

    @pytest.mark.parametrize("key", ["nb.new", "nb-intrusive.new", "nb.boxed", "tether.new",
                                     "untied.new", "slots.new"])
    def test_new(self, run_case, key):
        run_case(MAIN[key], "construct C(1)")


class TestEcho:
    """`echo(x)` returns the argument's one wrapper: borrowed `T*` (nb.echo, tether.echo_inner)
    and owning `nb::ref<T>` / `Ref<T>` (nb-intrusive.echo, tether.echo)."""

    @pytest.mark.parametrize("key", ["nb.echo", "tether.echo_inner", "nb-intrusive.echo",
                                     "tether.echo"])
    def test_echo(self, run_case, key):
        run_case(MAIN[key], "echo(x)")
