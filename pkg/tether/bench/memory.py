# SPDX-License-Identifier: Apache-2.0
"""tether.bench.memory: bytes per wrapped object, measured in a fresh interpreter per variant.

``python -m tether.bench.memory VARIANT N`` constructs N objects from Python (the C++ object,
its header if any, the wrapper and any bookkeeping entry the binding keeps) and prints one JSON
line with the per-object deltas:

  traced  Python allocator bytes (tracemalloc; the wrappers)
  malloc  glibc heap bytes in use (mallinfo2 uordblks + hblkhd; C++ objects, nanobind's maps)
  rss     resident set size (/proc/self/statm), a cross-check of the two above

The list that holds the objects is allocated before the first reading, so it is not counted.
tracemalloc keeps its own tables on the C heap, so ``traced`` comes from a second fill made
while tracing and ``malloc``/``rss`` from a first fill made without it. A fresh process per
variant keeps heap reuse from earlier phases out of the deltas.
"""
from __future__ import annotations

import ctypes
import gc
import json
import os
import subprocess
import sys
import tracemalloc

VARIANTS = ("slots", "nb-ref", "nb-intrusive", "tether", "tether-untied")


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _libc():
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _Mallinfo2
    return libc


def _factory(variant: str):
    from .identity import VARIANTS as ID_VARIANTS  # imports tether and the peers

    return ID_VARIANTS[variant][3]


def _settle(libc) -> None:
    for _ in range(2):
        gc.collect()
    libc.malloc_trim(0)


def _heap(libc) -> int:
    mi = libc.mallinfo2()
    return mi.uordblks + mi.hblkhd


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _fill(slots: list, make) -> None:
    for k in range(len(slots)):
        slots[k] = make(7)  # one constant value: no per-object int is kept alive


def measure_here(variant: str, n: int) -> dict:
    """Per-object bytes for ``variant``, measured in this process."""
    libc, make = _libc(), _factory(variant)
    _fill([None] * 1000, make)  # warm-up: first-use caches are not per-object cost
    slots = [None] * n
    _settle(libc)
    h0, r0 = _heap(libc), _rss()
    _fill(slots, make)
    h1, r1 = _heap(libc), _rss()
    slots = [None] * n
    _settle(libc)
    tracemalloc.start()
    t0 = tracemalloc.get_traced_memory()[0]
    _fill(slots, make)
    t1 = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return {"variant": variant, "n": n, "traced": (t1 - t0) / n, "malloc": (h1 - h0) / n,
            "rss": (r1 - r0) / n, "total": (t1 - t0 + h1 - h0) / n}


def measure(variant: str, n: int) -> dict:
    """Per-object bytes for ``variant``, measured in a fresh interpreter."""
    proc = subprocess.run([sys.executable, "-m", "tether.bench.memory", variant, str(n)],
                          check=True, capture_output=True, text=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure_all(n: int) -> dict:
    return {v: measure(v, n) for v in VARIANTS}


if __name__ == "__main__":
    print(json.dumps(measure_here(sys.argv[1], int(sys.argv[2]))))
