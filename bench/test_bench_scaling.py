# SPDX-License-Identifier: Apache-2.0
"""Benchmarks: reads with many live objects.

Each body reads `a.x` on 1000 objects spread over N live ones; one call is 1000 reads. N is
1e3 and 1e4 by default (the suite runs this); set TETHER_BENCH_SCALE=1000000 for 1e6.
`python -m tether.bench` measures 1e3 against 1e6.
"""
import os

import pytest

from tether.bench import cases

BIG = int(os.environ.get("TETHER_BENCH_SCALE", "10000"))


class TestScaling:
    """`a.x` as the live population grows: tether has no map to look in, nanobind's
    reference_internal finds (or makes) the wrapper through its instance map."""

    @pytest.mark.parametrize("n", [1000, BIG])
    @pytest.mark.parametrize("key", ["slots.read", "tether.hot", "tether.revive", "nb-ref.cold",
                                     "nb-intrusive.hot"])
    def test_scaling(self, run_case, key, n):
        case = next(c for c in cases.scaling_cases(n) if c.key == f"{key}@{n}")
        run_case(case, f"scaling {key}")
