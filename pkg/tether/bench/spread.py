# SPDX-License-Identifier: Apache-2.0
"""tether.bench.spread: how much a row moves between fresh processes (issue 13, target 8).

``python -m tether.bench.spread --child ROUNDS TARGET_MS`` times every main case in this process and prints one JSON line: the minimum per row and where the objects
the rows touch lie in memory (the descriptor, its getter and closure, the wrappers), so that a
slow process can be matched with an address. The parent runs it in ``processes`` fresh
interpreters and reports, per row, the largest minimum over the smallest one.

Every process inherits the environment: set ``PYTHONHASHSEED`` to hold string hashes (and so
the type dicts' layout) fixed, ``setarch -R`` to turn off address randomisation.
"""
from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys

TETHER_ROWS = ("tether.hot", "tether.int", "tether.revive")


def _descr_addresses(tp: type, name: str) -> dict:
    """The getset descriptor ``tp.name``: its address, its C getter and its closure."""
    d = tp.__dict__[name]
    head = object.__basicsize__  # PyObject_HEAD: 16 B (GIL) or 32 B (free-threaded)
    getset = ctypes.c_void_p.from_address(id(d) + head + 3 * 8).value  # d_getset
    get = ctypes.c_void_p.from_address(getset + 8).value  # PyGetSetDef.get
    closure = ctypes.c_void_p.from_address(getset + 32).value  # PyGetSetDef.closure
    return {"descr": id(d), "getset": getset, "get": get, "closure": closure or 0}


def _where() -> dict:
    from .. import testing as tt

    return {"x": _descr_addresses(tt.Outer, "x"), "value": _descr_addresses(tt.Inner, "value"),
            "int.real": _descr_addresses(int, "real")}


def child(target_ms: float) -> None:
    """Set up every main case, then take one sample of each per "r" line read from stdin
    (answering "ok"); on "q", print the minimum per row as JSON. The parent steps all its
    children in turn, so a busy phase of the shared machine hits every process alike."""
    from . import cases, timing

    # Every main case, as in the full benchmark: which objects exist, and in what order they
    # were allocated, is then the same as there.
    jobs = [timing._Job(c) for c in cases.main_cases()]
    for j in jobs:
        j.calibrate(target_ms / 1e3)
    print("ready", flush=True)
    done = 0
    for line in sys.stdin:
        if line.strip() != "r":
            break
        for j in jobs:
            j.sample()
        done += 1
        if done == 10 and any([j.recalibrate() for j in jobs]):  # as timing.run does
            for j in jobs:
                j.samples = []
        print("ok", flush=True)
    print(json.dumps({"pid": os.getpid(), "hashseed": os.environ.get("PYTHONHASHSEED"),
                      "min_ns": {j.case.key: min(j.samples) for j in jobs if j.samples},
                      "number": {j.case.key: j.number for j in jobs},
                      "p10_ns": {j.case.key: sorted(j.samples)[len(j.samples) // 10]
                                 for j in jobs if j.samples},
                      "recalibrated": [j.case.key for j in jobs if j.recalibrated],
                      "where": _where()}), flush=True)


def measure(processes: int, rounds: int, target_ms: float, env: dict | None = None,
            prefix: tuple = ()) -> dict:
    """``processes`` fresh children stepped in lockstep, ``rounds`` rounds each; per row,
    spread = slowest process's minimum / fastest process's minimum."""
    cmd = list(prefix) + [sys.executable, "-m", "tether.bench.spread", "--child", str(target_ms)]
    kids = [subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             env=env) for _ in range(processes)]
    try:
        for k in kids:
            if k.stdout.readline().strip() != "ready":
                raise RuntimeError("tether.bench.spread child failed to start")
        for _ in range(rounds):
            for k in kids:
                k.stdin.write("r\n")
                k.stdin.flush()
                k.stdout.readline()
        runs = []
        for k in kids:
            out, _ = k.communicate("q\n")
            runs.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for k in kids:
            if k.poll() is None:
                k.kill()
    rows = {}
    for key in runs[0]["min_ns"]:
        vals = [r["min_ns"][key] for r in runs if key in r["min_ns"]]
        rows[key] = {"min_ns": vals, "spread": max(vals) / min(vals)}
    return {"processes": processes, "rounds": rounds, "rows": rows, "runs": runs}


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(float(sys.argv[2]))
    else:
        n = int(sys.argv[1]) if len(sys.argv) > 1 else 10
        out = measure(n, 100, 0.5)
        for key, r in out["rows"].items():
            print(f"{key:18s} spread {r['spread']:.3f}  " + " ".join(f"{v:5.1f}" for v in r["min_ns"]))
            print(f"{'':18s} 10th pct      " + " ".join(f"{x['p10_ns'][key]:5.1f}" for x in out["runs"]))
            print(f"{'':18s} number        " + " ".join(f"{x['number'][key]:5d}" for x in out["runs"]))
