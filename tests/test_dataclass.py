# SPDX-License-Identifier: Apache-2.0
"""dataclasses on bound types (fields declared in C++), and @tether.dataclass types in Python."""
import copy
import dataclasses
import gc
import pickle
import typing
import weakref

import pytest

import tether
from tether import _data
from tether import testing as t

from conftest import collect, junk

pytestmark = pytest.mark.usefixtures("clean")


@tether.dataclass
class Point(tether.Object):
    x: int
    y: float = 0.0
    child: t.Inner | None = None

    def describe(self):
        """Zero-argument super() must work in a class @tether.dataclass rebased."""
        return "<%s>" % super().__repr__()


@tether.dataclass
class Tagged(Point):
    """A subclass adding fields, one of them with a default factory."""

    name: str = "p"
    tags: list = dataclasses.field(default_factory=list)
    flag: bool = False

    def describe(self):
        return "%s:%s" % (super().describe(), self.name)


@tether.dataclass(frozen=True)
class Frozen(tether.Object):
    a: int
    b: str = "b"


@tether.dataclass
class Node(tether.Object):
    """Self-referential through a string annotation."""

    value: int = 0
    left: "Node | None" = None
    right: "Node | None" = None


@tether.dataclass(order=True)
class Version(tether.Object):
    major: int
    minor: int = 0


class Canary:
    """A weak-referenceable Python object to watch a field's Python reference go."""


@tether.dataclass
class Holder(tether.Object):
    payload: object = None


class TestBoundTypes:
    """dataclasses.fields/asdict/astuple/replace/is_dataclass on C++-declared fields."""

    def test_is_dataclass(self):
        assert dataclasses.is_dataclass(t.Inner) and dataclasses.is_dataclass(t.Inner(1))
        assert not dataclasses.is_dataclass(tether.Object)

    def test_fields(self):
        fs = dataclasses.fields(t.Outer)
        assert [f.name for f in fs] == ["x", "y", "items"]
        assert fs[0].type == typing.Optional[t.Inner] and fs[2].type == list[t.Inner]
        assert fs[0].default is None and fs[0].init and not fs[2].init
        assert dataclasses.fields(t.Inner)[0].default == 0

    def test_asdict_astuple(self):
        o = t.Outer(t.Inner(1), t.Inner(2))
        o.items = [o.x]
        assert dataclasses.asdict(o) == {"x": {"value": 1}, "y": {"value": 2},
                                         "items": [{"value": 1}]}
        assert dataclasses.astuple(o) == ((1,), (2,), [(1,)])

    def test_replace(self):
        o = t.Outer(t.Inner(1), t.Inner(2))
        r = dataclasses.replace(o, y=t.Inner(3))
        assert type(r) is t.Outer and r is not o
        assert r.x is o.x and r.y.value == 3
        assert dataclasses.replace(t.Inner(4), value=5).value == 5

    def test_python_subclass_inherits_fields(self):
        class Sub(t.Inner):
            pass
        assert [f.name for f in dataclasses.fields(Sub)] == ["value"]
        assert dataclasses.asdict(Sub(3)) == {"value": 3}

    def test_type_hints(self):
        assert typing.get_type_hints(t.Outer) == {
            "x": typing.Optional[t.Inner], "y": typing.Optional[t.Inner],
            "items": list[t.Inner]}
        assert typing.get_type_hints(t.Box)["value"] == typing.Optional[tether.Object]


class TestDeclared:
    """@tether.dataclass instances are tether objects with C++ storage and generated methods."""

    def test_basic(self):
        p = Point(1, 2.0)
        assert isinstance(p, tether.Object) and isinstance(p, _data.DataObject)
        assert (p.x, p.y, p.child) == (1, 2.0, None)
        assert _data.slot_count(p) == 3
        assert [f.name for f in dataclasses.fields(Point)] == ["x", "y", "child"]
        assert typing.get_type_hints(Point)["child"] == typing.Optional[t.Inner]

    def test_held_by_cpp_revives(self):
        p = Point(1, 2.0)
        first = id(p)
        box = t.Box(p)
        del p
        collect()
        j = junk(Point, 64)
        assert id(box.value) == first and box.value == Point(1, 2.0)
        del j

    def test_children_are_tied(self):
        i = t.Inner(7)
        p = Point(1, child=i)
        assert p.child is i
        assert t.use_count(i) == 2  # the field's Ref and the wrapper
        del i
        collect()
        j = junk()
        assert p.child.value == 7 and p.child is p.child
        del j

    def test_eq_and_repr(self):
        assert Point(1, 2.0) == Point(1, 2.0)
        assert Point(1, 2.0) != Point(1, 3.0)
        assert repr(Point(1, 2.5, t.Inner(3))) == "Point(x=1, y=2.5, child=Inner(value=3))"
        assert Version(1, 2) < Version(1, 3) < Version(2)

    def test_pickle(self):
        p = Tagged(1, 2.0, t.Inner(3), "n", ["a"], True)
        p.extra = "dict state"
        p2 = pickle.loads(pickle.dumps(p))
        assert type(p2) is Tagged and p2 is not p
        assert dataclasses.asdict(p2) == dataclasses.asdict(p)
        assert p2.extra == "dict state" and p2.child.value == 3

    def test_pickle_sharing_dag(self):
        nodes = [Node(0)]
        for i in range(1, 1000):
            nodes.append(Node(i, nodes[(i * 7919) % i], nodes[(i * 104729) % i]))
        restored = pickle.loads(pickle.dumps(nodes))
        index = {id(n): k for k, n in enumerate(restored)}
        for a, b in zip(nodes[1:], restored[1:]):
            assert index[id(b.left)] == a.left.value and index[id(b.right)] == a.right.value

    def test_frozen(self):
        f = Frozen(1)
        with pytest.raises(dataclasses.FrozenInstanceError):
            f.a = 2
        assert hash(f) == hash(Frozen(1))
        f2 = pickle.loads(pickle.dumps(f))
        assert f2 == f and f2.b == "b"
        assert dataclasses.replace(f, a=5).a == 5

    def test_wrong_types(self):
        p = Point(1)
        for field, bad in [("x", "1"), ("x", 1.5), ("x", None), ("x", True), ("y", "2"),
                           ("child", t.Outer()), ("child", 3)]:
            with pytest.raises(TypeError, match="Point.%s" % field):
                setattr(p, field, bad)
        with pytest.raises(TypeError):
            Point("1")
        t2 = Tagged(1)
        for field, bad in [("name", 1), ("tags", (1,)), ("flag", 1)]:
            with pytest.raises(TypeError, match=field):
                setattr(t2, field, bad)
        p.y = 3  # an int is a fine float
        assert p.y == 3.0 and type(p.y) is float

    def test_big_ints_survive(self):
        p = Point(2 ** 100)
        assert p.x == 2 ** 100
        assert pickle.loads(pickle.dumps(p)).x == 2 ** 100

    def test_subclass_and_default_factory(self):
        a, b = Tagged(1), Tagged(2)
        assert a.tags == [] and a.tags is not b.tags
        a.tags.append("x")
        assert b.tags == [] and a.tags == ["x"]
        assert [f.name for f in dataclasses.fields(Tagged)] == [
            "x", "y", "child", "name", "tags", "flag"]
        assert _data.slot_count(a) == 6
        assert isinstance(a, Point)
        assert a.describe() == "<Tagged(x=1, y=0.0, child=None, name='p', tags=['x'], flag=False)>:p"

    def test_string_annotation_self_reference(self):
        n = Node(1, Node(2))
        assert n.left.value == 2
        with pytest.raises(TypeError, match="Node.left"):
            n.left = t.Inner(1)

    def test_python_value_released_from_cpp_thread(self):
        c = Canary()
        r = weakref.ref(c)
        h = Holder(c)
        del c
        box = t.Box(tether.move(h))  # the only owner is now C++
        t.release_in_thread(box)  # ~DataObject runs on a thread without the GIL
        gc.collect()
        assert r() is None

    def test_rejects_bound_base_and_non_tether(self):
        with pytest.raises(TypeError, match="Inner"):
            @tether.dataclass
            class Bad(t.Inner):
                z: int = 0
        with pytest.raises(TypeError, match="tether.Object"):
            @tether.dataclass
            class NotTether:
                z: int = 0

    def test_own_init_post_init_and_no_fields(self):
        @tether.dataclass(init=False)
        class Own(tether.Object):
            a: int = 0

            def __init__(self, twice):
                self.extra = "before any field"  # __dict__ works before the C++ object
                self.a = 2 * twice

        @tether.dataclass
        class Post(tether.Object):
            a: int
            b: int = dataclasses.field(init=False)

            def __post_init__(self):
                self.b = self.a + 1

        @tether.dataclass
        class Empty(tether.Object):
            pass

        assert Own(4).a == 8 and Post(1).b == 2
        e = Empty()
        assert _data.is_initialized(e) and repr(e).endswith("Empty()")
        assert _data.slot_count(e) == 0 and type(copy.copy(e)) is Empty

    def test_failed_init_leaves_nothing(self):
        with pytest.raises(TypeError):
            Point()
        with pytest.raises(TypeError, match="Point.x"):
            Point("x")

    def test_threads_write_and_read_one_field(self):
        """Racing writers and readers of one field (free-threaded builds: per-object lock)."""
        import threading
        h = Holder()
        p = Point(0)
        values = [[1], "s", t.Inner(1), None, (2,)]
        seen_bad = []

        def work(k):
            for i in range(2000):
                h.payload = values[(i + k) % len(values)]
                if h.payload not in values:
                    seen_bad.append(h.payload)
                p.x = i
                p.child = values[2] if i % 2 else None
                assert p.child in (None, values[2])

        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert seen_bad == [] and 0 <= p.x < 2000

    def test_no_leak(self):
        collect()
        before = tether.stats()
        for i in range(200):
            p = Tagged(i, child=t.Inner(i), tags=[t.Inner(i)])
            q = pickle.loads(pickle.dumps(t.Box(p)))
            assert dataclasses.astuple(q.value) == dataclasses.astuple(p)
            del p, q
        collect()
        assert tether.stats() == before
