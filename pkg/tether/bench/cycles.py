# SPDX-License-Identifier: Apache-2.0
"""tether.bench.cycles: what collecting cycles through C++ costs.

Two rows (docs/lifecycle.md, "Cycles through C++", has the numbers of record):

- **construction**: ``Box(None)`` (one ``Ref`` field: a GC type, tracked from its allocation)
  against ``Inner(1)`` (no ``Ref`` field: untracked, no GC head), made and freed; and the
  bytes of each wrapper (``sys.getsizeof``).
- **full collection**: ``gc.collect()`` with 1e5 live ``Box -> Inner`` pairs (each ``Box``
  wrapper its object's sole owner, so each traversal walks its field), against the same
  number of live ``__slots__`` objects each holding another one. Also the time to collect 1e5
  ``p.__dict__ -> Box -> Ref -> p`` cycles.

Times are the minimum over rounds. ``python -m tether.bench.cycles [--quick]`` prints the
table alone; ``python -m tether.bench`` prints it after the identity benchmark.
"""
from __future__ import annotations

import gc
import sys
import time

N = 100_000


class _Slot:
    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value


def _per_call_ns(stmt, n: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        stmt(n)
        best = min(best, (time.perf_counter_ns() - t0) / n)
    return best


def _make_boxes(n):
    from tether.testing import Box

    for _ in range(n):
        Box(None)


def _make_inners(n):
    from tether.testing import Inner

    for _ in range(n):
        Inner(1)


def _full_collection_ms(population, rounds: int) -> float:
    keep = population()
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        gc.collect()
        best = min(best, time.perf_counter() - t0)
    del keep
    gc.collect()
    return best * 1e3


def measure(quick: bool = False, log=lambda s: None) -> dict:
    from tether.testing import Box, Inner

    n = 5_000 if quick else N
    rounds = 3 if quick else 15
    out: dict = {"population": n}
    log("cycles: construction ...")
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()  # as timeit: the construction itself, not the collections it triggers
    try:
        out["inner_ns"] = _per_call_ns(_make_inners, 2_000, rounds * 20)
        out["box_ns"] = _per_call_ns(_make_boxes, 2_000, rounds * 20)
    finally:
        if enabled:
            gc.enable()
    out["inner_bytes"] = sys.getsizeof(Inner(1))
    out["box_bytes"] = sys.getsizeof(Box(None))
    log(f"cycles: full collection over {n} wrappers ...")
    out["gc_empty_ms"] = _full_collection_ms(lambda: None, rounds)
    out["gc_boxes_ms"] = _full_collection_ms(lambda: [Box(Inner(i)) for i in range(n)], rounds)
    out["gc_slots_ms"] = _full_collection_ms(lambda: [_Slot(_Slot(i)) for i in range(n)], rounds)

    class P(Inner):
        pass

    best = float("inf")
    for _ in range(max(2, rounds // 5)):
        gc.collect()
        gc.disable()
        try:
            for i in range(n):
                p = P(i)
                p.box = Box(p)
            del p
            t0 = time.perf_counter()
            gc.collect()
            best = min(best, time.perf_counter() - t0)
        finally:
            if enabled:
                gc.enable()
    out["gc_cycles_ms"] = best * 1e3
    return out


def render(res: dict) -> list:
    """Markdown lines for the report (empty if the phase did not run)."""
    c = res.get("cycles") if "cycles" in res else res
    if not c or "box_ns" not in c:
        return []
    n = c["population"]
    per = lambda ms: (ms - c["gc_empty_ms"]) * 1e6 / n  # noqa: E731
    return ["", "## Cycles through C++ (min over rounds)", "",
            "| row | tether | baseline | |", "|---|---:|---:|---|",
            f"| construct + free (ns) | `Box(None)` {c['box_ns']:.1f} | `Inner(1)` "
            f"{c['inner_ns']:.1f} | +{c['box_ns'] - c['inner_ns']:.1f} ns: GC allocation, "
            "track, untrack |",
            f"| bytes per wrapper | `Box` {c['box_bytes']} | `Inner` {c['inner_bytes']} | "
            "the GC head |",
            f"| full `gc.collect()`, {n} live pairs (ms) | `Box -> Inner` {c['gc_boxes_ms']:.2f} "
            f"| `__slots__` pairs {c['gc_slots_ms']:.2f} | {per(c['gc_boxes_ms']):.0f} vs "
            f"{per(c['gc_slots_ms']):.0f} ns per pair |",
            f"| collect {n} `p.__dict__ -> Box -> p` cycles (ms) | {c['gc_cycles_ms']:.1f} | "
            "| leaked before |"]


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    res = measure("--quick" in argv, lambda s: print(s, file=sys.stderr, flush=True))
    print("\n".join(render(res)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
