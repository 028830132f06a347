# SPDX-License-Identifier: Apache-2.0
"""tether.bench.spread: how much a row moves between fresh processes (issue 13, target 8).

``python -m tether.bench.spread --child ROUNDS TARGET_MS`` times the getter rows and their
anchors in this process and prints one JSON line: the minimum per row and where the objects
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

ROWS = ("tether.hot", "tether.int", "tether.revive", "cpython.getset", "slots.read",
        "slots.int", "nb-intrusive.hot", "nb.int")
TETHER_ROWS = ("tether.hot", "tether.int", "tether.revive")


def _descr_addresses(tp: type, name: str) -> dict:
    """The getset descriptor ``tp.name``: its address, its C getter and its closure."""
    d = tp.__dict__[name]
    head = object.__basicsize__  # PyObject_HEAD: 16 B (GIL) or 32 B (free-threaded)
    getset = ctypes.c_void_p.from_address(id(d) + head + 3 * 8).value  # d_getset
    get = ctypes.c_void_p.from_address(getset + 8).value  # PyGetSetDef.get
    closure = ctypes.c_void_p.from_address(getset + 32).value  # PyGetSetDef.closure
    return {"descr": id(d), "getset": getset, "get": get, "closure": closure or 0}


def child(rounds: int, target_ms: float) -> dict:
    from . import cases, timing
    from .. import testing as tt

    wanted = [c for c in cases.main_cases() if c.key in ROWS]
    res = timing.run(wanted, rounds, target_ms)
    where = {"x": _descr_addresses(tt.Outer, "x"), "value": _descr_addresses(tt.Inner, "value"),
             "int.real": _descr_addresses(int, "real")}
    return {"pid": os.getpid(), "hashseed": os.environ.get("PYTHONHASHSEED"),
            "min_ns": {k: r.min for k, r in res.items()}, "where": where}


def measure(processes: int, rounds: int, target_ms: float, env: dict | None = None) -> dict:
    """Run ``processes`` fresh children one after another; per-row spread = max / min."""
    runs = []
    for _ in range(processes):
        proc = subprocess.run([sys.executable, "-m", "tether.bench.spread", "--child", str(rounds),
                               str(target_ms)], check=True, capture_output=True, text=True,
                              env=env)
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    rows = {}
    for key in ROWS:
        vals = [r["min_ns"][key] for r in runs if key in r["min_ns"]]
        if vals:
            rows[key] = {"min_ns": vals, "spread": max(vals) / min(vals)}
    return {"processes": processes, "rounds": rounds, "rows": rows, "runs": runs}


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        print(json.dumps(child(int(sys.argv[2]), float(sys.argv[3]))))
    else:
        n = int(sys.argv[1]) if len(sys.argv) > 1 else 10
        out = measure(n, 100, 0.5)
        for key, r in out["rows"].items():
            print(f"{key:18s} spread {r['spread']:.3f}  " + " ".join(f"{v:5.1f}" for v in r["min_ns"]))
