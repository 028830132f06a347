# SPDX-License-Identifier: Apache-2.0
"""tether.bench.cases: what is timed, on which objects (shared by the CLI and bench/).

Variants, side by side on equivalent C++ structs (an Outer holding an Inner{int64 value}):

  slots         pure-Python classes with ``__slots__``: the floor.
  nb-ref        nanobind def_prop_ro returning Inner* with reference_internal (tether._peers).
  nb-intrusive  nanobind nb::ref<Inner> with intrusive_base; pins the wrapper (tether._peers).
                Its echo takes and returns nb::ref<IntrInner> (the owning peer of tether's
                Ref<T> echo) and its construction makes an intrusive_base object.
  nb            a plain nanobind class (construction, int field) and a function returning
                Inner* (echo: the borrowed peer of tether's Inner* echo), from tether._peers.
  tether        tether.testing.Outer / Inner / Untied.

"hot" reads hold the sub-object's wrapper in a variable while ``a.x`` is read; "cold" and
"revive" reads hold nothing in Python: nanobind makes and frees a wrapper each time, while
tether's header still holds x's wrapper (C++ shares x), so the read hands out that wrapper
(T3) and dropping it leaves it alive. (The key "tether.revive" is kept from the old parking
design so that results stay comparable.)
"""
from __future__ import annotations

from .timing import Case

from .. import testing as tt
from .. import _peers as nbp


class SlotsInner:
    __slots__ = ("value",)

    def __init__(self, value: int) -> None:
        self.value = value


class SlotsOuter:
    __slots__ = ("x",)

    def __init__(self, x: SlotsInner) -> None:
        self.x = x


class PlainInner:
    """A plain class: the attribute lives in the instance __dict__ (threads section)."""

    def __init__(self, value: int) -> None:
        self.value = value


class PlainOuter:
    def __init__(self, x: PlainInner) -> None:
        self.x = x


# ---- holders: make one Outer whose Inner only the Outer holds -----------------------------

def slots_outer(v: int = 1) -> SlotsOuter:
    return SlotsOuter(SlotsInner(v))


def plain_outer(v: int = 1) -> PlainOuter:
    return PlainOuter(PlainInner(v))


def tether_outer(v: int = 1):
    return tt.Outer(tt.Inner(v))


HOLDERS = {
    "slots": slots_outer,
    "nb-ref": nbp.RefOuter,
    "nb-intrusive": nbp.IntrOuter,
    "tether": tether_outer,
}


def _read(holder: str, hot: bool):
    def setup() -> dict:
        a = HOLDERS[holder](1)
        ns = {"a": a}
        if hot:
            ns["keep"] = a.x
        return ns
    return setup


def _one(name: str, obj_factory):
    return lambda: {name: obj_factory()}


def _names(**kw):
    return lambda: dict(kw)


def main_cases() -> list:
    """The operations of the main table, one Case each."""
    return [
        Case("slots.read", "a.x", _read("slots", True), "slots: a.x"),
        Case("nb-ref.hot", "a.x", _read("nb-ref", True), "nb-ref: a.x, wrapper of x held"),
        Case("nb-ref.cold", "a.x", _read("nb-ref", False), "nb-ref: a.x, no wrapper of x alive"),
        Case("nb-intrusive.hot", "a.x", _read("nb-intrusive", True),
             "nb-intrusive: a.x (wrapper pinned by C++)"),
        Case("nb-intrusive.cold", "a.x", _read("nb-intrusive", False),
             "nb-intrusive: a.x, no Python reference to x (C++ pins its wrapper)"),
        Case("tether.hot", "a.x", _read("tether", True), "tether: a.x, wrapper of x held (BOUND)"),
        Case("tether.revive", "a.x", _read("tether", False),
             "tether: a.x, no Python reference to x: the header keeps its wrapper"),
        Case("cpython.getset", "i.real", _names(i=12345),
             "CPython anchor: int.real, a C getset descriptor (no specialisation in 3.11)"),
        Case("slots.int", "i.value", _one("i", lambda: SlotsInner(1)), "slots: i.value"),
        Case("nb.int", "i.value", _one("i", lambda: nbp.Plain(1)), "nb: i.value (def_rw int64)"),
        Case("tether.int", "i.value", _one("i", lambda: tt.Inner(1)),
             "tether: i.value (def_field int64)"),
        Case("slots.new", "C(1)", _names(C=SlotsInner), "slots: SlotsInner(1) (+ free)"),
        Case("nb.new", "C(1)", _names(C=nbp.Plain), "nb: Plain(1) (+ free)"),
        Case("nb-intrusive.new", "C(1)", _names(C=nbp.IntrInner),
             "nb-intrusive: IntrInner(1), an intrusive_base object (+ free)"),
        Case("nb.boxed", "C(1)", _names(C=nbp.Boxed),
             "nb: Boxed(1), the value in a heap block of its own (+ free)"),
        Case("tether.new", "C(1)", _names(C=tt.Inner), "tether: Inner(1) (+ free)"),
        Case("untied.new", "C(1)", _names(C=tt.Untied), "tether: Untied(1), no header (+ free)"),
        Case("nb.echo", "echo(x)", lambda: {"echo": nbp.echo, "x": nbp.RefInner(1)},
             "nb: echo(x), Inner* -> Inner*"),
        Case("nb-intrusive.echo", "echo(x)",
             lambda: {"echo": nbp.echo_ref, "x": nbp.IntrInner(1)},
             "nb-intrusive: echo_ref(x), nb::ref<Inner> -> nb::ref<Inner>"),
        Case("tether.echo_inner", "echo(x)", lambda: {"echo": tt.echo_inner, "x": tt.Inner(1)},
             "tether: echo_inner(x), Inner* -> Inner*"),
        Case("tether.echo", "echo(x)", lambda: {"echo": tt.echo, "x": tt.Inner(1)},
             "tether: echo(x), Ref<Object> -> Ref<Object>"),
        Case("untied.read", "b.value", lambda: {"b": tt.Box(tt.Untied(1))},
             "tether: box.value of an Untied (fresh wrapper per read)"),
    ]


# ---- scaling: the same reads with many live objects ---------------------------------------

SAMPLE = 1000  # objects read per statement, spread evenly over the live population


def _population(holder: str, n: int, hot: bool):
    def setup() -> dict:
        make = HOLDERS[holder]
        everyone = [make(7) for _ in range(n)]
        step = max(1, n // SAMPLE)
        sample = everyone[::step][:SAMPLE]
        ns = {f"a{k}": a for k, a in enumerate(sample)}
        ns["_everyone"] = everyone
        if hot:
            ns["_keep"] = [a.x for a in sample]
        return ns
    return setup


def scaling_cases(n: int) -> list:
    """Reads over SAMPLE objects picked from ``n`` live ones; one op = one ``a.x``."""
    sample = min(SAMPLE, n)
    stmt = "\n".join(f"a{k}.x" for k in range(sample))
    out = []
    for key, holder, hot in (("slots.read", "slots", True), ("tether.hot", "tether", True),
                             ("tether.revive", "tether", False), ("nb-ref.cold", "nb-ref", False),
                             ("nb-ref.hot", "nb-ref", True),
                             ("nb-intrusive.hot", "nb-intrusive", True)):
        out.append(Case(f"{key}@{n}", stmt, _population(holder, n, hot),
                        f"{key} over {sample} of {n} live objects", ops_per_stmt=sample, unroll=1))
    return out
