# SPDX-License-Identifier: Apache-2.0
"""tether.bench.verdict: the summary for people that ``python -m tether.bench`` prints first.

Every row compares a tether operation with its like-for-like nanobind peer, measured in the
same run (ns: minimum over rounds; bytes: traced + malloc per object):

  owning    tether's ``Ref<T>`` against nanobind's ``nb::ref<T>`` (an ``intrusive_base``
            object: C++ holds counts, the wrapper is pinned while C++ holds the object)
  borrowed  tether's ``T*`` against nanobind's ``T*`` (``rv_policy::reference_internal`` for
            a field, the wrapper found again in nanobind's instance map for an argument)
  plain     construction against a plain nanobind class, whose value lives inside its
            wrapper (tether's C++ object has a block of its own, so it can outlive it)

A ratio within ``EVEN`` of 1 is reported as "even": the run-to-run noise of one row on a
shared VM is of that order, so a smaller difference is not a verdict.
"""
from __future__ import annotations

import dataclasses

EVEN = 0.05


@dataclasses.dataclass
class Row:
    kind: str  # "read", "call", "object", "threads"
    short: str  # the words used in the summary line
    what: str  # the operation, as the table shows it
    style: str  # "owning", "borrowed", "plain"
    tether: str  # case key (times / scaling), memory variant, or thread result key
    peer: str
    peer_what: str  # nanobind's side, as the table shows it
    unit: str = "ns"
    higher_is_better: bool = False  # thread scaling: more is faster


def _count(n: int) -> str:
    """1000000 -> "1e6" (the scaling population, as the summary names it)."""
    e = len(str(n)) - 1
    return f"1e{e}" if n == 10 ** e else f"{n:,}"


def rows(big: int) -> list:
    """The like-for-like rows, in the order the table prints them."""
    held, nowrap = "x's wrapper held", "no Python reference to x"
    return [
        Row("read", "`a.x`", f"read `a.x`, {held}", "owning", "tether.hot",
            "nb-intrusive.hot", "`nb::ref<T>` member"),
        Row("read", "`a.x`", f"read `a.x`, {held}", "borrowed", "tether.hot",
            "nb-ref.hot", "`T*`, reference_internal"),
        Row("read", "`a.x` with no wrapper held", f"read `a.x`, {nowrap}", "owning",
            "tether.revive", "nb-intrusive.cold", "`nb::ref<T>` member (wrapper pinned)"),
        Row("read", "`a.x` with no wrapper held", f"read `a.x`, {nowrap}", "borrowed",
            "tether.revive", "nb-ref.cold", "`T*`, reference_internal (new wrapper)"),
        Row("read", f"`a.x` over {_count(big)} objects",
            f"read `a.x` over {big:,} live objects, {held}", "owning", f"tether.hot@{big}",
            f"nb-intrusive.hot@{big}", "`nb::ref<T>` member"),
        Row("read", f"`a.x` over {_count(big)} objects",
            f"read `a.x` over {big:,} live objects, {held}", "borrowed", f"tether.hot@{big}",
            f"nb-ref.hot@{big}", "`T*`, reference_internal"),
        Row("read", "`i.value`", "read `i.value` (int64 field)", "plain", "tether.int", "nb.int",
            "`def_rw` int64"),
        Row("call", "`echo(x)`", "`echo(x)`, `Ref<T>` in and out", "owning", "tether.echo",
            "nb-intrusive.echo", "`nb::ref<T>` in and out"),
        Row("call", "`echo(x)`", "`echo(x)`, `T*` in and out", "borrowed",
            "tether.echo_inner", "nb.echo", "`T*` in and out"),
        Row("object", "`Inner(1)`", "`Inner(1)`, made and freed", "owning", "tether.new",
            "nb-intrusive.new", "`intrusive_base` class"),
        Row("object", "`Inner(1)`", "`Inner(1)`, made and freed", "plain",
            "tether.new", "nb.new", "plain class (value inside the wrapper)"),
        Row("object", "bytes per object", "bytes per object", "owning", "tether", "nb-intrusive",
            "`intrusive_base` object", "B"),
        Row("object", "bytes per object", "bytes per object", "borrowed", "tether", "nb-ref",
            "plain object + instance-map entry", "B"),
        # free-threaded builds only (the threads section): 2 threads / 1 on each thread's own
        # objects; 2.00 is perfect scaling
        Row("threads", "2 threads / 1 on own objects, `a.x`", "2 threads / 1, own objects, `a.x`",
            "owning", "own.read.tether", "own.read.nb", "`nb::ref<T>` member", "x", True),
        Row("threads", "2 threads / 1 on own objects, `Inner(1)`",
            "2 threads / 1, own objects, `Inner(1)`", "plain", "own.new.tether", "own.new.nb",
            "plain class", "x", True),
    ]


def _value(row: Row, res: dict):
    """(tether, peer) for the row, or None where this run has no such numbers."""
    if row.unit == "B":
        mem = res.get("memory") or {}
        a, b = mem.get(row.tether), mem.get(row.peer)
        return (a["total"], b["total"]) if a and b else None
    if row.kind == "threads":
        th = (res.get("threads") or {}).get("results") or {}
        a, b = th.get(row.tether), th.get(row.peer)
        if not a or not b:
            return None
        return a["scaling"], b["scaling"]
    for table in ("times", "scaling"):
        t = res.get(table) or {}
        if row.tether in t and row.peer in t:
            return t[row.tether]["min_ns"], t[row.peer]["min_ns"]
    return None


def judge(ratio: float, higher_is_better: bool = False) -> str:
    """"faster" / "slower" / "even" (within EVEN), or "-" for a ratio that is not a number."""
    if ratio != ratio or ratio <= 0:
        return "-"
    if abs(ratio - 1.0) <= EVEN:
        return "even"
    better = ratio > 1.0 if higher_is_better else ratio < 1.0
    return "faster" if better else "slower"


def evaluate(res: dict) -> list:
    """The rows this run can fill, as dicts (the JSON's "verdict")."""
    big = res.get("config", {}).get("scale", (0, 1_000_000))[1]
    refused = (res.get("gil") or {}).get("refuse_nanobind", "")
    out = []
    for row in rows(big):
        v = _value(row, res)
        if v is None:
            continue
        a, b = v
        ratio = a / b if b else float("nan")
        word = "refused" if refused else judge(ratio, row.higher_is_better)
        if row.unit == "B" and word in ("faster", "slower"):
            word = "smaller" if word == "faster" else "larger"
        out.append({**dataclasses.asdict(row), "value": a, "base": b, "ratio": ratio,
                    "verdict": word})
    return out


def _get(rows_: list, short: str):
    for r in rows_:
        if r["short"] == short:
            return r
    return None


def _tag(r: dict) -> str:
    """How the summary names a row's kind of peer."""
    if r["kind"] == "threads":
        return ""
    if r["style"] in ("owning", "borrowed"):
        return r["style"] + " "
    return "plain class " if r["kind"] == "object" else ""


def summary(res: dict, rows_: list) -> list:
    """The few lines for people above the table."""
    lines = []
    t = res.get("times") or {}
    mem = res.get("memory") or {}

    def ns(key):
        return f"{t[key]['min_ns']:.1f} ns" if key in t else "?"

    parts = []
    if "tether.hot" in t:
        anchor = f"; CPython's own cheapest C getter, `int.real`: {ns('cpython.getset')}" \
            if "cpython.getset" in t else ""
        parts.append(f"{ns('tether.hot')} per read (`a.x`{anchor})")
    if "tether.echo" in t:
        parts.append(f"{ns('tether.echo')} per call (`echo(x)` through `Ref<T>`; "
                     f"{ns('tether.echo_inner')} through `T*`)")
    if "tether.new" in t:
        b = f" and {mem['tether']['total']:.0f} B" if "tether" in mem else ""
        parts.append(f"{ns('tether.new')}{b} per object (`Inner(1)` made and freed)")
    if parts:
        lines.append("**identity costs** (all-in, on this machine) " + ", ".join(parts) + ".")
    if any(r["verdict"] == "refused" for r in rows_):
        lines.append("**tether vs nanobind**: refused in this run: "
                     f"{(res.get('gil') or {}).get('refuse_nanobind')}")
        return lines
    by_word: dict = {}
    for r in rows_:
        by_word.setdefault(r["verdict"], {}).setdefault(r["short"], []).append(
            f"{_tag(r)}{r['ratio']:.2f}x")
    said = []
    for word in ("faster", "smaller", "slower", "larger", "even"):
        if by_word.get(word):
            label = {"smaller": "smaller on", "larger": "larger on"}.get(word, f"{word} on")
            said.append(f"{label} " + ", ".join(f"{op} ({', '.join(v)})"
                                               for op, v in by_word[word].items()))
    if said:
        lines.append("**tether vs nanobind** (tether / its like-for-like nanobind peer, same run; "
                     f"within {EVEN:.0%} is even): " + "; ".join(said) + ".")
    return lines


def _fmt(v: float, unit: str) -> str:
    return f"{v:.2f}" if unit == "x" else f"{v:.1f} {unit}"


_TETHER_SIDE = {
    "read": lambda r: "`int64_t` field" if r["short"] == "`i.value`" else "`Ref<T>` field",
    "call": lambda r: "`Ref<T>` in and out" if r["style"] == "owning" else "`T*` in and out",
    "object": lambda r: "tether class",
    "threads": lambda r: "tether class",
}


def table(rows_: list) -> list:
    lines = ["| operation | like for like | tether side | nanobind side | tether | nanobind | "
             "tether / nanobind | verdict |",
             "|---|---|---|---|---:|---:|---:|---|"]
    for r in rows_:
        ratio = "-" if r["verdict"] == "refused" else f"{r['ratio']:.2f}"
        lines.append(f"| {r['what']} | {r['style']} | {_TETHER_SIDE[r['kind']](r)} | "
                     f"{r['peer_what']} | "
                     f"{_fmt(r['value'], r['unit'])} | {_fmt(r['base'], r['unit'])} | {ratio} | "
                     f"{r['verdict']} |")
    return lines
