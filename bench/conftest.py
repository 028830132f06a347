# SPDX-License-Identifier: Apache-2.0
"""Fixtures for bench/: run a tether.bench case under pytest-benchmark.

The cases (statements and the objects they run on) come from tether.bench.cases, so the
pytest-benchmark numbers and ``python -m tether.bench`` time the same thing. The normal test
suite runs these with --benchmark-disable: each benchmark body runs once, as a smoke test.
Run them for real with ``pytest bench --benchmark-enable`` (add ``--benchmark-only``).
"""
import gc

import pytest

from tether.bench import timing


@pytest.fixture
def run_case(benchmark):
    """run_case(case, group): benchmark the case's statement, unrolled, in its own namespace."""
    namespaces = []

    def run(case: timing.Case, group: str):
        ns = case.setup()
        namespaces.append(ns)
        times = 100 if case.unroll > 1 else 1  # scaling statements are 1000 reads already
        loop = timing.compile_loop(case, ns, times)
        benchmark.group = group
        benchmark.extra_info["ops_per_call"] = times * case.ops_per_stmt
        benchmark.extra_info["what"] = case.what
        benchmark(loop)

    yield run
    for ns in namespaces:  # leave no tether object behind for the suite's leak checks
        ns.clear()
    gc.collect()
