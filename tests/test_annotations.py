# SPDX-License-Identifier: Apache-2.0
"""Annotations read through each version's API (pkg/tether/_annotations.py).

3.14+ evaluates class annotations lazily (PEP 649, PEP 749) and keeps an ``__annotations__``
assigned from C++ in ``__annotations_cache__``; 3.11-3.13 keep a dict in ``cls.__dict__``.
Either way bound types and ``@tether.dataclass`` types must get the same fields, types and
checks, under ``from __future__ import annotations`` (tests/annotated_future.py) and with
bare forward references (tests/annotated_pep649.py, 3.14+) too.
"""
import dataclasses
import pickle
import sys
import typing

import pytest

import tether
from tether import _annotations, _data
from tether import testing as t

import annotated_future as fut

pytestmark = pytest.mark.usefixtures("clean")

PEP649 = sys.version_info >= (3, 14)
needs_pep649 = pytest.mark.skipif(not PEP649, reason="bare forward references need PEP 649")


class TestOwnAnnotations:
    """own_annotations: a class's own annotations (never a base's), on every version."""

    def test_premise_where_the_version_keeps_them(self):
        """3.14+ keeps no "__annotations__" in the class dict: reading it there finds nothing."""
        class Plain:
            x: int
        assert ("__annotations__" in Plain.__dict__) == (not PEP649)
        assert ("__annotations__" in t.Inner.__dict__) == (not PEP649)
        assert _annotations.own_annotations(Plain) == {"x": int}

    def test_bound_types_set_from_cpp(self):
        assert _annotations.own_annotations(t.Inner) == {"value": int}
        assert _annotations.own_annotations(t.Outer) == {
            "x": typing.Optional[t.Inner], "y": typing.Optional[t.Inner],
            "items": list[t.Inner]}

    def test_python_subclass_of_bound_type(self):
        class Sub(t.Inner):
            extra: str

        class Bare(t.Inner):
            pass

        assert _annotations.own_annotations(Sub) == {"extra": str}
        assert _annotations.own_annotations(Bare) == {}
        assert _annotations.own_annotations(t.Inner) == {"value": int}
        assert [(f.name, f.type) for f in dataclasses.fields(Sub)] == [("value", int)]

    def test_returns_a_new_dict(self):
        _annotations.own_annotations(t.Inner)["junk"] = str
        assert _annotations.own_annotations(t.Inner) == {"value": int}

    def test_resolve(self):
        assert _annotations.resolve(fut.Node, "Node | None") == typing.Optional[fut.Node]
        assert _annotations.resolve(fut.Node, "t.Inner") is t.Inner
        assert _annotations.resolve(fut.Node, "NoSuchName") is typing.Any
        assert _annotations.resolve(fut.Node, int) is int


class TestFutureImport:
    """``from __future__ import annotations``: strings, resolved when the decorator runs."""

    def test_fields_and_slots(self):
        assert fut.Point.__tether_fields__ == ("x", "y", "child", "tags")
        assert [f.name for f in dataclasses.fields(fut.Point)] == ["x", "y", "child", "tags"]
        p = fut.Point(1, 2.0, t.Inner(3))
        assert _data.is_initialized(p) and _data.slot_count(p) == 4
        assert (p.x, p.y, p.child.value, p.tags) == (1, 2.0, 3, [])
        assert repr(p) == "Point(x=1, y=2.0, child=Inner(value=3), tags=[])"
        assert typing.get_type_hints(fut.Point)["child"] == typing.Optional[t.Inner]

    def test_types_are_checked(self):
        p = fut.Point(1)
        for field, bad in [("x", "1"), ("x", None), ("y", "2"), ("child", t.Outer()),
                           ("tags", (1,))]:
            with pytest.raises(TypeError, match="Point.%s" % field):
                setattr(p, field, bad)
        with pytest.raises(TypeError, match="Point.x"):
            fut.Point("x")

    def test_self_reference_is_checked(self):
        n = fut.Node(1, fut.Node(2))
        assert n.left.value == 2 and n.left is n.left
        with pytest.raises(TypeError, match="Node.left"):
            n.left = t.Inner(1)
        assert pickle.loads(pickle.dumps(n)).left.value == 2

    def test_name_defined_later_is_stored_unchecked(self):
        """``Later`` did not exist when ``Early`` was decorated: the field holds any object."""
        later = fut.Later(5)
        e = fut.Early(later, 1)
        assert e.later is later and e.count == 1
        restored = pickle.loads(pickle.dumps(e))
        assert restored.later.value == 5 and type(restored.later) is fut.Later
        e.later = "not checked"
        assert e.later == "not checked"
        with pytest.raises(TypeError, match="Early.count"):
            e.count = "1"

    def test_any_is_unchecked(self):
        """typing.Any (a class since 3.11) stores any object; isinstance would refuse it."""
        @tether.dataclass
        class Loose(tether.Object):
            a: typing.Any = None
            b: "typing.Any | int" = 0
            c: "NoSuchName" = None  # noqa: F821 (cannot be resolved: unchecked, like Any)

        canary = object()
        x = Loose(canary, "s", [1])
        assert (x.a, x.b, x.c) == (canary, "s", [1])

    def test_local_class_with_string_annotations(self):
        @tether.dataclass
        class Local(tether.Object):
            peer: "Local | None" = None
            inner: "t.Inner | None" = None

        a = Local(Local(), t.Inner(1))
        assert a.peer.peer is None and a.inner.value == 1
        with pytest.raises(TypeError, match="Local.peer"):
            a.peer = t.Inner(2)


@pytest.fixture(scope="module")
def mod():
    """tests/annotated_pep649.py, which only 3.14+ can import."""
    import annotated_pep649
    return annotated_pep649


@needs_pep649
class TestPep649ForwardReferences:
    """Bare names that are not defined yet when the class body runs (3.14+ only)."""

    def test_premise_lazy(self, mod):
        assert "__annotations__" not in mod.Node.__dict__
        assert "__annotate_func__" in mod.Node.__dict__ or "__annotate__" in mod.Node.__dict__

    def test_fields_and_self_reference(self, mod):
        assert mod.Node.__tether_fields__ == ("value", "left", "child")
        n = mod.Node(1, mod.Node(2), t.Inner(3))
        assert _data.slot_count(n) == 3 and n.left.value == 2 and n.child.value == 3
        for field, bad in [("value", "1"), ("left", t.Inner(1)), ("child", mod.Node())]:
            with pytest.raises(TypeError, match="Node.%s" % field):
                setattr(n, field, bad)
        assert typing.get_type_hints(mod.Node)["left"] == typing.Optional[mod.Node]

    def test_name_defined_later_is_stored_unchecked(self, mod):
        later = mod.Later(5)
        e = mod.Early(later, 1)
        assert e.later is later and e.count == 1
        assert typing.get_type_hints(mod.Early)["later"] == typing.Optional[mod.Later]
        e.later = "not checked"
        assert e.later == "not checked"
        with pytest.raises(TypeError, match="Early.count"):
            e.count = "1"

    def test_local_class_self_reference(self):
        @tether.dataclass
        class Local(tether.Object):
            peer: Local | None = None  # noqa: F821 (a bare forward reference, PEP 649)
            inner: t.Inner | None = None

        a = Local(Local(), t.Inner(1))
        assert a.peer.peer is None and a.inner.value == 1
        with pytest.raises(TypeError, match="Local.peer"):
            a.peer = t.Inner(2)
