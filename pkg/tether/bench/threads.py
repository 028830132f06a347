# SPDX-License-Identifier: Apache-2.0
"""tether.bench.threads: 1- and 2-thread throughput on free-threaded builds (issue 13).

Operations, each on tether and side by side with ``__slots__`` classes, plain classes (an
instance ``__dict__``) and nanobind (tether._peers):

  read  ``a.x``, the wrapper of x held (nanobind: nb-intrusive)
  int   ``i.value``
  echo  ``echo(x)`` (slots / plain: a Python function returning its argument; nanobind:
        ``echo(RefInner*)``; tether: ``echo`` through ``Ref<Object>``)
  echo_inner  tether only, shared object: ``echo_inner(x)`` through ``Inner*``, which takes
        no count of the C++ object: what target 6's echo costs beyond the wrapper's refcount
  new   ``C(1)``, made and freed (own objects only)

Two ways to share the work:

  shared  one object, made by the main thread, read by every worker (each worker has its own
          globals dict naming it, so only the object is shared)
  own     every worker makes its own objects, in its own thread (so that free-threaded
          CPython's biased reference counts see the owning thread, as in a real program)

Method: every (operation, variant, way) gets a pool of 1 worker and a pool of 2 workers,
started once and kept for the whole run, each worker pinned to its own CPU. A sample is a
fixed amount of work per worker: ``chunks`` chunks of ``calls`` runs of the statement unrolled
10 times (a chunk is calibrated to about ``chunk_us`` on one thread); the workers wait on a
Barrier, run, and stamp every chunk boundary with ``perf_counter``. All pools take one sample
each per round, round after round.

On a shared 2-CPU machine the two workers of a sample seldom hold both CPUs for a whole
sample, so a sample's wall time mostly measures the other tenants (the "wall" column). The
scaling is therefore taken from the chunks: a chunk that took over ``PREEMPTED`` x the fastest
one-thread chunk lost its CPU and is left out; a 2-thread chunk counts only if the other worker
ran, without such a break, from before it started until after it ended. 1-thread throughput =
ops per chunk / the median one-thread chunk; 2-thread throughput = the sum over both workers
of ops per chunk / that worker's median overlapped chunk; ``scaling`` = their ratio (2.00 =
perfect). The one-thread chunks run at other moments than the two-thread ones, so the ratio is
only as good as the machine's load is steady over the section (about 15 s): repeat it when the
load swings. The JSON keeps two cross-checks: ``scaling_fastest`` from the fastest chunks (it
compares with a chunk that had a whole core, so it also carries what two vCPUs sharing a
physical core cost each other) and ``scaling_alone``, against chunks of the same two-thread
samples run while the other worker was off its CPU (same moments, but the busy ones).

On a GIL build, or on a free-threaded build whose GIL is on, the section is skipped: two
threads cannot run Python at once there.
"""
from __future__ import annotations

import importlib
import os
import statistics
import sys
import sysconfig
import threading
import time

from .timing import UNROLL, local_names


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
OPS = {"shared": ("read", "int", "echo", "echo_inner"), "own": ("read", "int", "echo", "new")}
STMT = {"read": "a.x", "int": "i.value", "echo": "echo(x)", "echo_inner": "echo(x)",
        "new": "C(1)"}
ONLY = {"echo_inner": ("tether",)}  # ops measured on some variants only


def variants(op: str) -> tuple:
    """The variants an operation is measured on."""
    return ONLY.get(op, VARIANTS)


def py_echo():
    """A Python function returning its argument, made where it is called: in "own" mode each
    worker gets its own function object (as nanobind's and tether's are shared module
    functions, this only keeps the Python baseline from sharing more than they do)."""
    def echo(x):
        return x
    return echo


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
        "echo": {"slots": lambda: {"echo": py_echo(), "x": cases.SlotsInner(1)},
                 "plain": lambda: {"echo": py_echo(), "x": cases.PlainInner(1)},
                 "nb": lambda: {"echo": nbp.echo, "x": nbp.RefInner(1)},
                 "tether": lambda: {"echo": tt.echo, "x": tt.Inner(1)}},
        "echo_inner": {"tether": lambda: {"echo": tt.echo_inner, "x": tt.Inner(1)}},
        "new": {"slots": lambda: {"C": cases.SlotsInner}, "plain": lambda: {"C": cases.PlainInner},
                "nb": lambda: {"C": nbp.Plain}, "tether": lambda: {"C": tt.Inner}},
    }


def _compile(stmt: str, ns: dict):
    # The case's names are locals of the loop (default arguments): see timing.local_names.
    body = "\n".join(["        " + stmt] * UNROLL)
    params = "".join(f", {k}=_ns[{k!r}]" for k in local_names(ns))
    src = f"def _loop(_n{params}):\n    for _i in range(_n):\n{body}\n"
    scope = {**ns, "_ns": ns}
    exec(compile(src, "<tether.bench.threads>", "exec"), scope)
    return scope["_loop"]


class _Pool:
    """``workers`` threads running one case on demand; each keeps its namespace all run long."""

    def __init__(self, stmt: str, make, workers: int, shared_ns: dict | None) -> None:
        self.workers = workers
        self.calls = 1
        self.chunks = 1
        self.stop = False
        self.stamps: list = [[0.0, 0.0]] * workers
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
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        if len(cpus) >= self.workers:
            # one CPU per worker: the scheduler cannot queue both on one CPU, where they
            # would never run at the same time (this thread only: pid 0 is the caller)
            os.sched_setaffinity(0, {cpus[k]})
        try:
            ns = dict(shared_ns) if shared_ns is not None else make()
            loop = _compile(stmt, ns)
            loop(50)  # warm-up: first-use caches and lazily made wrappers
        except BaseException as e:  # reported by the main thread
            self.errors.append(e)
            loop = None
        self.done.wait()
        clock = time.perf_counter
        while True:
            self.go.wait()
            if self.stop:
                break
            calls, chunks = self.calls, self.chunks
            ts = [0.0] * (chunks + 1)
            ts[0] = clock()
            if loop is not None:
                for c in range(1, chunks + 1):
                    loop(calls)
                    ts[c] = clock()
            self.stamps[k] = ts
            self.done.wait()
        ns.clear()

    def sample(self, calls: int, chunks: int) -> list:
        """One sample: every worker runs ``chunks`` chunks of ``calls`` loop calls; returns each
        worker's chunk boundaries (perf_counter)."""
        self.calls, self.chunks = calls, chunks
        self.go.wait()
        self.done.wait()
        if self.errors:
            raise self.errors[0]
        return list(self.stamps)

    def close(self) -> None:
        self.stop = True
        self.go.wait()
        for t in self.threads:
            t.join()


# A chunk that took longer than PREEMPTED x the fastest one-thread chunk lost its CPU on the
# way (a time slice of another process): nothing a lock or a shared cache line costs comes
# near that, so such chunks are neither timed nor count as "running" for the other worker.
PREEMPTED = 20.0


def _durations(ts: list) -> list:
    return [(ts[c], ts[c + 1]) for c in range(len(ts) - 1)]


def _classify(mine: list, other: list, ran_below: float) -> tuple:
    """My chunks (not preempted), split by what the other worker did meanwhile: ``together``
    if it ran without a break from before my chunk began until after it ended, ``alone`` if
    none of its unbroken chunks overlaps mine (it was preempted, or not running yet / any
    more). Chunks with both are left out."""
    together, alone = [], []
    ran = [(s, e) for s, e in other if e - s < ran_below]
    lo, hi = other[0][0], other[-1][1]
    j = 0
    for a0, a1 in mine:
        if a1 - a0 >= ran_below:
            continue
        while j < len(ran) and ran[j][1] <= a0:
            j += 1
        hits = []
        k = j
        while k < len(ran) and ran[k][0] < a1:
            hits.append(ran[k])
            k += 1
        if not hits:
            alone.append(a1 - a0)
            continue
        # together: the ran chunks overlapping mine are back to back and cover [a0, a1]
        if (lo <= a0 and hits[0][0] <= a0 and hits[-1][1] >= a1 and
                all(hits[i][1] == hits[i + 1][0] for i in range(len(hits) - 1))):
            together.append(a1 - a0)
    return together, alone


def run(rounds: int, target_ms: float, log=lambda s: None, chunk_us: float = 50.0) -> dict:
    """The threads section: {"results": {"own.read.tether": {...}}, ...} or why it was skipped."""
    if not free_threaded():
        return {"skipped": "GIL build: two threads cannot run Python at once"}
    if gil_enabled():
        return {"skipped": "free-threaded build running with the GIL enabled"}
    facts = _factories()
    chunks = max(2, round(target_ms * 1e3 / chunk_us))
    jobs = []  # (key, stmt, {1: pool, 2: pool}, calls per chunk)
    for way, ops in OPS.items():
        for op in ops:
            for v in variants(op):
                make = facts[op][v]
                shared = make() if way == "shared" else None
                pools = {n: _Pool(STMT[op], make, n, shared) for n in (1, 2)}
                calls = 1  # fixed work per worker and chunk: calibrated on one thread
                while True:
                    t = min(_chunk_min(pools[1].sample(calls, 4)[0]) for _ in range(3))
                    if t >= chunk_us / 1e6 / 4 or calls >= 1 << 20:
                        break
                    calls *= 4
                calls = max(1, round(calls * chunk_us / 1e6 / max(t, 1e-9)))
                jobs.append((f"{way}.{op}.{v}", STMT[op], pools, calls))
    one = {key: [] for key, *_ in jobs}  # one-thread chunks
    two = {key: [[], []] for key, *_ in jobs}  # per worker: chunks run while the other ran
    alone = {key: [] for key, *_ in jobs}  # 2-worker chunks run while the other did not
    wall = {key: {1: float("inf"), 2: float("inf")} for key, *_ in jobs}
    t0 = time.perf_counter()
    try:
        for r in range(rounds):
            for key, _, pools, calls in jobs:
                (ts,) = pools[1].sample(calls, chunks)
                one[key] += [e - s for s, e in _durations(ts)]
                wall[key][1] = min(wall[key][1], ts[-1] - ts[0])
                a, b = pools[2].sample(calls, chunks)
                ran_below = PREEMPTED * min(one[key])
                for k, (mine, other) in enumerate(((a, b), (b, a))):
                    tog, alo = _classify(_durations(mine), _durations(other), ran_below)
                    two[key][k] += tog
                    alone[key] += alo
                wall[key][2] = min(wall[key][2], max(a[-1], b[-1]) - min(a[0], b[0]))
            if (r + 1) % max(1, rounds // 5) == 0:
                log(f"  threads round {r + 1}/{rounds} ({time.perf_counter() - t0:.1f} s)")
    finally:
        for _, _, pools, _ in jobs:
            for p in pools.values():
                p.close()
    results = {}
    for key, stmt, _, calls in jobs:
        ops = calls * UNROLL  # per chunk and worker
        fastest = min(one[key])
        t1 = statistics.median([d for d in one[key] if d < PREEMPTED * fastest])
        mops = {1: ops / t1 / 1e6}
        overlapped = [len(x) for x in two[key]]
        # Cross-checks kept in the JSON, each biased its own way on a loaded machine:
        # scaling_alone compares with chunks of the same 2-worker samples run while the other
        # worker was off its CPU (same moments, but those moments are the busy ones);
        # scaling_fastest with the fastest chunks (a chunk that had a whole core, so it also
        # holds what two vCPUs sharing a physical core cost each other).
        ref = statistics.median(alone[key]) if len(alone[key]) >= 10 else t1
        if all(overlapped):
            mops[2] = sum(ops / statistics.median(x) / 1e6 for x in two[key])
            scaling_alone = sum(ref / statistics.median(x) for x in two[key])
            scaling_min = sum(fastest / min(x) for x in two[key])
        else:
            mops[2] = scaling_alone = scaling_min = float("nan")  # never ran at once
        scaling = mops[2] / mops[1]
        wall_mops = {n: n * ops * chunks / wall[key][n] / 1e6 for n in (1, 2)}
        results[key] = {"stmt": stmt, "ops_per_chunk": ops, "chunks": chunks,
                        "ns_per_op_1": t1 * 1e9 / ops, "mops": mops,
                        "scaling": scaling, "scaling_fastest": scaling_min,
                        "scaling_alone": scaling_alone,
                        "overlapped_chunks": overlapped, "alone_chunks": len(alone[key]),
                        "ns_per_op_alone": ref * 1e9 / ops,
                        "wall_mops": wall_mops, "wall_scaling": wall_mops[2] / wall_mops[1]}
    return {"rounds": rounds, "target_ms": target_ms, "chunk_us": chunk_us, "chunks": chunks,
            "results": results}


def _chunk_min(ts: list) -> float:
    return min(b - a for a, b in _durations(ts))


def render(res: dict) -> list:
    """Markdown lines of the threads section."""
    lines = ["## Threads (free-threaded build): 1 and 2 threads, aggregate throughput", ""]
    if "skipped" in res:
        return lines + [f"Skipped: {res['skipped']}."]
    lines += [f"Fixed work per thread ({res['chunks']} chunks of ~{res['chunk_us']:.0f} us per "
              f"sample), Barrier start, {res['rounds']} samples per pool, one CPU per worker. "
              "Mop/s = operations per second of all threads together: 1 thread from its median "
              "chunk, 2 threads from each worker's median chunk among those run while the other "
              "worker ran too (preempted chunks left out). scaling = 2 threads / 1 thread (2.00 "
              "is perfect): from those medians (targets 5 and 6), from the fastest chunks, and "
              "from whole samples' wall time (meaningful on an idle machine only). On a loaded "
              "machine the median can exceed 2 (one-thread chunks share a physical core with "
              "other tenants' work) and the fastest can miss contention (short steals go "
              "unseen): read them against the slots and plain rows of the same run.", ""]
    r = res["results"]
    for way in OPS:
        lines += [f"### {way} {'object' if way == 'shared' else 'objects'}", "",
                  "| op | " + " | ".join(f"{v} 1T | {v} 2T | {v} scaling: median, fastest (wall)"
                                         for v in VARIANTS) + " |",
                  "|---|" + "---:|" * (3 * len(VARIANTS))]
        for op in OPS[way]:
            cells = []
            for v in VARIANTS:
                x = r.get(f"{way}.{op}.{v}")
                # keyed by thread count; a run read back with --from-json has str keys
                mops = {int(k): m for k, m in x["mops"].items()} if x else {}
                cells += ([f"{mops[1]:.1f}", f"{mops[2]:.1f}",
                           f"**{x['scaling']:.2f}**, {x['scaling_fastest']:.2f} "
                           f"({x['wall_scaling']:.2f})"]
                          if x else ["-", "-", "-"])
            lines.append(f"| {op} `{STMT[op]}` | " + " | ".join(cells) + " |")
        lines.append("")
    return lines
