# SPDX-License-Identifier: Apache-2.0
"""Where the time of one tether.bench case goes: callgrind instructions per operation, by function.

    python bench/callgrind_breakdown.py tether.hot [--n 100000] [--cache-sim]
    python bench/callgrind_breakdown.py tether.hot@1000000 --n 50000 --cache-sim   # scaling case

Runs the case's statement under ``valgrind --tool=callgrind`` twice, once for 0 and once for
``--n`` operations (after the same setup and warm-up), and prints the difference divided by
``--n``: what one operation costs, with start-up, imports and setup cancelled out. With
``--cache-sim`` it also prints simulated D1 / last-level cache misses per operation.

The wheel's Release build strips nanobind modules, so tether's own functions show up as
``???`` there; for names, build with symbols (see bench/README.md, "Reproducing the
breakdowns") and put that build first on PYTHONPATH.
"""
from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile


def child(key: str, n: int) -> None:
    """Set the case up, warm it up, then run n operations (0 = setup only)."""
    from tether.bench import cases, timing

    if "@" in key:
        pop = int(key.split("@")[1])
        case = next(c for c in cases.scaling_cases(pop) if c.key == key)
    else:
        case = next(c for c in cases.main_cases() if c.key == key)
    ns = case.setup()
    per_call = 100 if case.unroll > 1 else 1
    loop = timing.compile_loop(case, ns, per_call)
    ops_per_call = per_call * case.ops_per_stmt

    def repeat(calls: int) -> None:
        for _ in range(calls):
            loop()

    # warm-up: CPython's specialising interpreter needs dozens of runs per instruction
    repeat(max(100, 20_000 // ops_per_call))
    repeat(n // ops_per_call)


def _callgrind(key: str, n: int, cache_sim: bool, outdir: str) -> tuple:
    out = os.path.join(outdir, f"cg.{n}.out")
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
    if cache_sim:
        cmd.append("--cache-sim=yes")
    cmd += [sys.executable, os.path.abspath(__file__), "--child", key, "--n", str(n)]
    subprocess.run(cmd, check=True, capture_output=True)
    text = subprocess.run(["callgrind_annotate", "--inclusive=no", "--auto=no", "--threshold=100",
                           out],
                          check=True, capture_output=True, text=True).stdout
    events, totals, funcs = [], {}, collections.Counter()
    for line in text.splitlines():
        if line.startswith("Events shown:"):
            events = line.split(":", 1)[1].split()
        nums = re.match(r"\s*([\d,]+)\s", line)
        if not nums:
            continue
        if "PROGRAM TOTALS" in line:
            vals = [int(v.replace(",", "")) for v in line.split() if v[0].isdigit()]
            totals = dict(zip(events, vals))
            continue
        # "  1,234 (12.3%)  file:function [object] (5x)" -> function
        m = re.match(r"\s*([\d,]+) \([^)]*\)\s+(?:\S*?:)?(.+?)"
                     r"(?:\s*\[[^\]]*\])?(?:\s*\(\d+x\))?$", line)
        if m:
            funcs[m.group(2)] += int(m.group(1).replace(",", ""))
    return totals, funcs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("case")
    p.add_argument("--n", type=int, default=100_000, help="operations in the measured run")
    p.add_argument("--cache-sim", action="store_true", help="also simulate D1/LL cache misses")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.case, args.n)
        return
    with tempfile.TemporaryDirectory(prefix="tether-cg-") as d:
        t0, f0 = _callgrind(args.case, 0, args.cache_sim, d)
        t1, f1 = _callgrind(args.case, args.n, args.cache_sim, d)
    per = {e: (t1[e] - t0.get(e, 0)) / args.n for e in t1}
    events = "  ".join(f"{e} {v:.2f}" for e, v in per.items())
    print(f"{args.case}: {events}  (per operation)")
    diff = sorted((((f1[f] - f0[f]) / args.n), f) for f in set(f0) | set(f1))
    for d, f in list(reversed(diff))[:args.top]:
        if d >= 1.0:
            print(f"  {d:7.1f}  {f[:120]}")


if __name__ == "__main__":
    main()
