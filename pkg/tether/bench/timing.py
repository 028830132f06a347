# SPDX-License-Identifier: Apache-2.0
"""tether.bench.timing: the timer harness (timeit, unrolled statements, round-robin, min).

Every case is one statement run in its own namespace. The statement is repeated ``UNROLL``
times inside one timeit loop body, so the loop's own cost is spread over many operations.
timeit disables the garbage collector while it times. Each timer is calibrated to about
``target_ms`` per sample, then all timers run one sample each per round, round after round,
so that the machine-wide slow phases of a shared VM hit every case alike. The headline is
the minimum over rounds; the median is kept to show the noise.
"""
from __future__ import annotations

import dataclasses
import statistics
import sysconfig
import time
import timeit
from typing import Callable

UNROLL = 10
CALIBRATE_TRIES = 3


@dataclasses.dataclass
class Case:
    """One timed operation: ``stmt`` run in the namespace that ``setup()`` returns."""

    key: str
    stmt: str
    setup: Callable[[], dict]
    what: str
    ops_per_stmt: int = 1  # a statement that reads 1000 objects counts 1000 operations
    unroll: int = UNROLL  # 1 for statements that are already long


@dataclasses.dataclass
class Result:
    key: str
    what: str
    samples_ns: list  # ns per operation, one per round
    number: int = 0  # timeit loops per sample (x unroll x ops_per_stmt operations)
    recalibrated: int = 0  # 1 if the first calibration was found too short and redone

    @property
    def min(self) -> float:
        return min(self.samples_ns)

    @property
    def median(self) -> float:
        return statistics.median(self.samples_ns)


def unrolled(stmt: str, times: int = UNROLL) -> str:
    return "\n".join([stmt] * times)


_FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


def local_names(ns: dict) -> list:
    """The names of ``ns`` the loops bind as local variables: on free-threaded builds only.
    There 3.13 does not specialise global lookups, so each one is a dict probe whose cost
    depends on the process's string hashes (a row moved by up to 30 % between processes).
    GIL builds specialise them (LOAD_GLOBAL_MODULE) and keep the globals, as every earlier
    run did: locals change the GIL rows' ratios (nb.echo gains 4 ns, tether.echo 2.4)."""
    if not _FREE_THREADED:
        return []
    return [k for k in ns if k.isidentifier() and not k.startswith("__")]


def bind_locals(ns: dict, indent: str) -> str:
    """Source lines making every name of ``ns`` a local, read from the global ``_ns``."""
    return "".join(f"{indent}{k} = _ns[{k!r}]\n" for k in local_names(ns))


def compile_loop(case: Case, ns: dict, times: int = UNROLL) -> Callable[[], None]:
    """A zero-argument function running the case's statement ``times`` times (pytest-benchmark)."""
    body = "\n".join("        " + line for line in unrolled(case.stmt, times).splitlines())
    src = f"def _make():\n{bind_locals(ns, '    ')}    def _bench_loop():\n{body}\n"
    scope = dict(ns) if not local_names(ns) else {}  # GIL builds: the names stay globals
    scope["_ns"] = ns
    if local_names(ns):  # closures read cells; pass them as defaults: plain locals
        names = ", ".join(f"{k}={k}" for k in local_names(ns))
        src = src.replace("def _bench_loop():", f"def _bench_loop({names}):")
    src += "    return _bench_loop\n"
    exec(compile(src, f"<tether.bench {case.key}>", "exec"), scope)
    return scope["_make"]()


class _Job:
    def __init__(self, case: Case) -> None:
        self.case = case
        self.ns = case.setup()
        # The names are locals of timeit's inner function (see local_names).
        self.timer = timeit.Timer(unrolled(case.stmt, case.unroll),
                                  setup=bind_locals(self.ns, "").rstrip("\n") or "pass",
                                  globals={**self.ns, "_ns": self.ns})
        self.number = 1
        self.target_s = 0.0
        self.recalibrated = 0
        self.samples: list = []

    def calibrate(self, target_s: float) -> None:
        # Warm-up: first-use caches, and enough executions of every bytecode instruction for
        # CPython's specialising interpreter to settle (it needs dozens per instruction).
        self.timer.timeit(max(64, 640 // (self.case.unroll * self.case.ops_per_stmt)))
        # Each step takes the minimum of CALIBRATE_TRIES timings: preemption only ever makes a
        # timing longer, and one preempted timing used to stop the search early and leave the
        # case with a number tens of times too small for the whole run (issue 13, target 8).
        n = 1
        while True:
            t = min(self.timer.timeit(n) for _ in range(CALIBRATE_TRIES))
            if t >= target_s / 4 or n >= 1 << 24:
                break
            n *= 4
        self.number = max(1, round(n * target_s / max(t, 1e-9)))
        self.target_s = target_s

    def recalibrate(self) -> bool:
        """After the first rounds: if the fastest sample so far was shorter than half the target
        (a calibration made slow by preemption), raise ``number`` and drop those samples."""
        best_s = min(self.samples) * self.number * self.case.unroll * self.case.ops_per_stmt / 1e9
        if best_s >= self.target_s / 2:
            return False
        self.number = max(1, round(self.number * self.target_s / max(best_s, 1e-9)))
        self.recalibrated += 1
        self.samples = []
        return True

    def sample(self) -> None:
        t = self.timer.timeit(self.number)
        ops = self.number * self.case.unroll * self.case.ops_per_stmt
        self.samples.append(t * 1e9 / ops)


def run(cases: list, rounds: int, target_ms: float,
        progress: Callable[[str], None] | None = None) -> dict:
    """Time every case; returns {key: Result}. Namespaces stay alive until all rounds are done."""
    jobs = [_Job(c) for c in cases]
    for j in jobs:
        j.calibrate(target_ms / 1e3)
    t0 = time.perf_counter()
    check_at = min(rounds - 1, max(2, rounds // 10))  # one check after the first rounds
    r = 0
    while r < rounds:
        for j in jobs:
            j.sample()
        if r == check_at and any([j.recalibrate() for j in jobs]):
            # some case had too few operations per sample: its samples were dropped; every
            # case gets the same number of rounds again
            for j in jobs:
                j.samples = []
            r = 0
            check_at = -1
            continue
        r += 1
        if progress and r % max(1, rounds // 5) == 0:
            progress(f"  round {r}/{rounds} ({time.perf_counter() - t0:.1f} s)")
    out = {j.case.key: Result(j.case.key, j.case.what, j.samples, j.number, j.recalibrated)
           for j in jobs}
    for j in jobs:
        j.ns.clear()
    return out
