# SPDX-License-Identifier: Apache-2.0
"""tether.bench.threads: 1- and 2-thread throughput on free-threaded builds (issue 13).

Operations, each on tether and side by side with ``__slots__`` classes, plain classes (an
instance ``__dict__``) and nanobind (tether._peers):

  read  ``a.x``, the wrapper of x held (nanobind: nb-intrusive)
  int   ``i.value``
  echo  ``echo(x)`` (slots / plain: a Python function returning its argument; nanobind:
        ``echo(RefInner*)``; tether: ``echo`` through ``Ref<Object>``)
  new   ``C(1)``, made and freed (own objects only)

Two ways to share the work:

  shared  one object, made by the main thread, read by every worker (each worker has its own
          globals dict naming it, so only the object is shared)
  own     every worker makes its own objects, in its own thread (so that free-threaded
          CPython's biased reference counts see the owning thread, as in a real program)

Method: every (operation, variant, way) gets a pool of 1 worker and a pool of 2 workers,
started once and kept for the whole run. Each sample is a fixed amount of work per worker
(``calls`` runs of the statement unrolled 10 times, calibrated to about ``target_ms`` on one
thread): the workers wait on a Barrier, run, and stamp their start and end with
``perf_counter``; a sample's time is the last end minus the first start. All pools take one
sample each per round, round after round (so a busy phase of the shared machine hits all of
them alike), and the best (shortest) sample of each pool is kept. Aggregate throughput is
``workers * calls * 10 / best``; ``scaling`` = 2-thread aggregate / 1-thread throughput
(2.0 = perfect on 2 cores).

On a GIL build, or on a free-threaded build whose GIL is on, the section is skipped: two
threads cannot run Python at once there.
"""
from __future__ import annotations

import importlib
import os
import sys
import sysconfig
import threading
import time

from .timing import UNROLL


def free_threaded() -> bool:
    return bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


def gil_enabled() -> bool:
    f = getattr(sys, "_is_gil_enabled", None)
    return True if f is None else bool(f())


# ---- the GIL guard ------------------------------------------------------------------------

def probe_gil(modules=("tether.testing", "tether._peers")) -> dict:
    """Import the benchmark's modules one by one and note which of them turned the GIL on.

    Must run before anything imports them (``python -m tether.bench`` calls it first). On a
    free-threaded build, importing an extension module not declared free-threaded
    (Py_mod_gil) re-enables the GIL for the whole process, and its baselines would then be
    measured with the GIL: the nanobind ratios would compare different runtimes."""
    out = {"free_threaded": free_threaded(), "env_python_gil": os.environ.get("PYTHON_GIL"),
           "gil_at_start": gil_enabled(), "enabled_by": [], "already_imported": []}
    for name in modules:
        if name in sys.modules:
            out["already_imported"].append(name)
        before = gil_enabled()
        importlib.import_module(name)
        if gil_enabled() and not before:
            out["enabled_by"].append(name)
    out["gil_enabled"] = gil_enabled()
    out["refuse_nanobind"] = refusal(out)
    return out


def refusal(g: dict) -> str:
    """Why nanobind ratios must not be reported (empty: they may)."""
    if not g["free_threaded"]:
        return ""
    if g["enabled_by"]:
        return (f"importing {', '.join(g['enabled_by'])} re-enabled the GIL on this free-threaded "
                "build (a module not built FREE_THREADED): its baselines would run with the GIL "
                "and, with PYTHON_GIL=0, without nanobind's locks")
    if g["gil_at_start"] and g.get("env_python_gil") != "1":
        return ("the GIL was already enabled when the benchmark started, and PYTHON_GIL=1 was "
                "not asked for: a module imported earlier (tether itself?) re-enabled it")
    return ""


# ---- what is timed ------------------------------------------------------------------------

VARIANTS = ("slots", "plain", "nb", "tether")
OPS = {"shared": ("read", "int", "echo"), "own": ("read", "int", "echo", "new")}
STMT = {"read": "a.x", "int": "i.value", "echo": "echo(x)", "new": "C(1)"}


def py_echo(x):
    return x


def _factories() -> dict:
    from . import cases
    from .. import _peers as nbp
    from .. import testing as tt

    def hot(holder):
        def make():
            a = holder(1)
            return {"a": a, "keep": a.x}
        return make

    return {
        "read": {"slots": hot(cases.slots_outer), "plain": hot(cases.plain_outer),
                 "nb": hot(nbp.IntrOuter), "tether": hot(cases.tether_outer)},
        "int": {"slots": lambda: {"i": cases.SlotsInner(1)},
                "plain": lambda: {"i": cases.PlainInner(1)},
                "nb": lambda: {"i": nbp.Plain(1)}, "tether": lambda: {"i": tt.Inner(1)}},
        "echo": {"slots": lambda: {"echo": py_echo, "x": cases.SlotsInner(1)},
                 "plain": lambda: {"echo": py_echo, "x": cases.PlainInner(1)},
                 "nb": lambda: {"echo": nbp.echo, "x": nbp.RefInner(1)},
                 "tether": lambda: {"echo": tt.echo, "x": tt.Inner(1)}},
        "new": {"slots": lambda: {"C": cases.SlotsInner}, "plain": lambda: {"C": cases.PlainInner},
                "nb": lambda: {"C": nbp.Plain}, "tether": lambda: {"C": tt.Inner}},
    }


def _compile(stmt: str, ns: dict):
    body = "\n".join(["        " + stmt] * UNROLL)
    src = f"def _loop(_n):\n    for _i in range(_n):\n{body}\n"
    exec(compile(src, "<tether.bench.threads>", "exec"), ns)
    return ns.pop("_loop")


class _Pool:
    """``workers`` threads running one case on demand; each keeps its namespace all run long."""

    def __init__(self, stmt: str, make, workers: int, shared_ns: dict | None) -> None:
        self.workers = workers
        self.calls = 1
        self.stop = False
        self.spans = [(0.0, 0.0)] * workers
        self.errors: list = []
        self.go = threading.Barrier(workers + 1)
        self.done = threading.Barrier(workers + 1)
        self.threads = [threading.Thread(target=self._work, args=(k, stmt, make, shared_ns),
                                         daemon=True) for k in range(workers)]
        for t in self.threads:
            t.start()
        self.done.wait()  # every worker has set up and warmed up

    def _work(self, k: int, stmt: str, make, shared_ns) -> None:
        ns: dict = {}
        try:
            ns = dict(shared_ns) if shared_ns is not None else make()
            loop = _compile(stmt, ns)
            loop(50)  # warm-up: first-use caches and lazily made wrappers
        except BaseException as e:  # reported by the main thread
            self.errors.append(e)
            loop = None
        self.done.wait()
        while True:
            self.go.wait()
            if self.stop:
                break
            n = self.calls
            t0 = time.perf_counter()
            if loop is not None:
                loop(n)
            t1 = time.perf_counter()
            self.spans[k] = (t0, t1)
            self.done.wait()
        ns.clear()

    def sample(self, calls: int) -> float:
        self.calls = calls
        self.go.wait()
        self.done.wait()
        if self.errors:
            raise self.errors[0]
        return max(e for _, e in self.spans) - min(s for s, _ in self.spans)

    def close(self) -> None:
        self.stop = True
        self.go.wait()
        for t in self.threads:
            t.join()


def run(rounds: int, target_ms: float, log=lambda s: None) -> dict:
    """The threads section: {"results": {"own.read.tether": {...}}, ...} or why it was skipped."""
    if not free_threaded():
        return {"skipped": "GIL build: two threads cannot run Python at once"}
    if gil_enabled():
        return {"skipped": "free-threaded build running with the GIL enabled"}
    facts = _factories()
    jobs = []  # (key, stmt, {1: pool, 2: pool}, calls)
    for way, ops in OPS.items():
        for op in ops:
            for v in VARIANTS:
                make = facts[op][v]
                shared = make() if way == "shared" else None
                pools = {n: _Pool(STMT[op], make, n, shared) for n in (1, 2)}
                calls = 1  # fixed work per worker: calibrated on one thread
                while True:
                    t = pools[1].sample(calls)
                    if t >= target_ms / 1e3 / 4 or calls >= 1 << 22:
                        break
                    calls *= 4
                calls = max(1, round(calls * target_ms / 1e3 / max(t, 1e-9)))
                jobs.append((f"{way}.{op}.{v}", STMT[op], pools, calls))
    best = {key: {1: float("inf"), 2: float("inf")} for key, *_ in jobs}
    t0 = time.perf_counter()
    try:
        for r in range(rounds):
            for key, _, pools, calls in jobs:
                for n in (1, 2):
                    best[key][n] = min(best[key][n], pools[n].sample(calls))
            if (r + 1) % max(1, rounds // 5) == 0:
                log(f"  threads round {r + 1}/{rounds} ({time.perf_counter() - t0:.1f} s)")
    finally:
        for _, _, pools, _ in jobs:
            for p in pools.values():
                p.close()
    results = {}
    for key, stmt, _, calls in jobs:
        ops = calls * UNROLL
        mops = {n: n * ops / best[key][n] / 1e6 for n in (1, 2)}
        results[key] = {"stmt": stmt, "ops_per_worker": ops, "best_s": best[key],
                        "ns_per_op_1": best[key][1] * 1e9 / ops, "mops": mops,
                        "scaling": mops[2] / mops[1]}
    return {"rounds": rounds, "target_ms": target_ms, "results": results}


def render(res: dict) -> list:
    """Markdown lines of the threads section."""
    lines = ["## Threads (free-threaded build): 1 and 2 threads, aggregate throughput", ""]
    if "skipped" in res:
        return lines + [f"Skipped: {res['skipped']}."]
    lines += [f"Fixed work per thread, Barrier start, best of {res['rounds']} repeats "
              f"(~{res['target_ms']} ms per sample); Mop/s = operations per second of all "
              "threads together; scaling = 2 threads / 1 thread (2.00 is perfect).", ""]
    r = res["results"]
    for way in OPS:
        lines += [f"### {way} {'object' if way == 'shared' else 'objects'}", "",
                  "| op | " + " | ".join(f"{v} 1T | {v} 2T | {v} scaling" for v in VARIANTS) + " |",
                  "|---|" + "---:|" * (3 * len(VARIANTS))]
        for op in OPS[way]:
            cells = []
            for v in VARIANTS:
                x = r.get(f"{way}.{op}.{v}")
                cells += ([f"{x['mops'][1]:.1f}", f"{x['mops'][2]:.1f}", f"**{x['scaling']:.2f}**"]
                          if x else ["-", "-", "-"])
            lines.append(f"| {op} `{STMT[op]}` | " + " | ".join(cells) + " |")
        lines.append("")
    return lines
