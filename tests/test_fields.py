# SPDX-License-Identifier: Apache-2.0
"""def_field for every kind of C++ member (tether.testing.Node): a vector of floats, an optional
object, a map, an enum, a nanobind-bound value struct, a weak link, objects; each through
reading, writing, pickle, copy, deepcopy, repr and dataclasses. Also the constructor-by-name
rebuild that pickle uses, and field error messages."""
import copy
import dataclasses
import gc
import pickle
import typing
import weakref

import pytest

import tether
from tether import testing as t

from conftest import collect

pytestmark = pytest.mark.usefixtures("clean")

PROTOCOLS = range(2, pickle.HIGHEST_PROTOCOL + 1)


def full_node():
    """A node with every field set, a child whose parent link is weak."""
    n = t.Node("root", [1.0, 2.5], t.Color.green)
    n.extra = t.Inner(7)
    n.counts = {"a": 1, "b": 2}
    n.transform.x = 3.0
    n.transform.scale = 2.0
    child = t.Node("child", [0.5])
    child.parent = n
    n.children = [child]
    return n


def same_values(a, b):
    """Node a and b hold equal values (not the same objects)."""
    assert (a.name, a.weights, a.counts, a.color) == (b.name, b.weights, b.counts, b.color)
    assert a.transform == b.transform
    assert (a.extra is None) == (b.extra is None)
    if a.extra is not None:
        assert a.extra.value == b.extra.value
    assert [c.name for c in a.children] == [c.name for c in b.children]


# ---- reading and writing ---------------------------------------------------------------


class TestReadWrite:
    """Each kind reads as nanobind's caster gives it and writes back into C++."""

    def test_vector_of_floats(self):
        n = t.Node("n", [1, 2.5])
        assert n.weights == [1.0, 2.5] and t.call_weight_count(n) == 2
        n.weights = (3.0,)  # any sequence converts
        assert n.weights == [3.0] and t.call_weight_count(n) == 1
        n.weights.append(9.0)  # a copy: C++ keeps its vector
        assert n.weights == [3.0]

    def test_optional_object(self):
        n = t.Node()
        assert n.extra is None
        i = t.Inner(4)
        n.extra = i
        assert n.extra is i and n.extra is n.extra  # one wrapper, through std::optional
        n.extra = None
        assert n.extra is None

    def test_map(self):
        n = t.Node()
        assert n.counts == {}
        n.counts = {"x": 1, "y": -2}
        assert n.counts == {"x": 1, "y": -2}

    def test_enum(self):
        n = t.Node(color=t.Color.blue)
        assert n.color is t.Color.blue
        n.color = t.Color.red
        assert n.color is t.Color.red

    def test_read_only_field(self):
        n = t.Node("fixed")
        assert n.name == "fixed"
        with pytest.raises(AttributeError):
            n.name = "other"

    def test_annotations(self):
        hints = typing.get_type_hints(t.Node)
        assert hints["weights"] == list[float]
        assert hints["counts"] == dict[str, int]
        assert hints["extra"] == typing.Optional[t.Inner]
        assert hints["color"] is t.Color
        assert hints["transform"] is t.Transform
        assert hints["parent"] == typing.Optional[t.Node]
        assert hints["children"] == list[t.Node]
        assert hints["name"] is str

    def test_docstrings(self):
        assert "std::vector<double>" in t.Node.weights.__doc__
        assert t.Outer.items.__doc__.startswith("Children")


class TestValueStructByReference:
    """A nanobind-bound value struct is returned as a view of the member (as def_rw does):
    writes reach C++, and the view keeps its owner alive."""

    def test_write_reaches_cpp(self):
        n = t.Node()
        n.transform.x = 5.0
        assert n.transform.x == 5.0
        tr = n.transform
        tr.y = 6.0
        assert n.transform == t.Transform(5.0, 6.0, 1.0)

    def test_assign_copies_in(self):
        n = t.Node()
        mine = t.Transform(1.0, 2.0, 3.0)
        n.transform = mine
        mine.x = 100.0  # the field holds a copy
        assert n.transform == t.Transform(1.0, 2.0, 3.0)

    def test_view_keeps_owner_alive(self):
        n = t.Node("owner")
        alive = weakref.ref(n)
        tr = n.transform
        del n
        collect()
        assert alive() is not None  # the view holds the owner
        tr.x = 8.0
        assert alive().transform.x == 8.0
        del tr
        collect()
        assert alive() is None

    def test_wrong_type(self):
        with pytest.raises(TypeError, match=r"Node.transform: expected Transform, got int"):
            t.Node().transform = 3


class TestWeakRef:
    """WeakRef<T>: reads as the object while it lives, None after; no cycle through C++."""

    def test_field_reads_object_then_none(self):
        parent = t.Node("p")
        child = t.Node("c")
        child.parent = parent
        assert child.parent is parent
        assert t.use_count(parent) == 1  # the weak link holds no strong count
        del parent
        collect()
        assert child.parent is None

    def test_no_cycle_through_cpp(self):
        parent = t.Node("p")
        child = t.Node("c")
        parent.children = [child]
        child.parent = parent
        gone = weakref.ref(parent)
        del parent, child
        collect()
        assert gone() is None  # freed: the back link was weak

    def test_argument_and_result(self):
        p = t.Node("p")
        c = t.Node("c")
        c.parent = p
        assert t.parent_of(c) is p
        assert t.weak_is_set(p) and not t.weak_is_set(None)
        t.keep_weak(p)
        assert t.kept_weak() is p
        del p, c
        collect()
        assert t.kept_weak() is None
        t.keep_weak(None)

    def test_wrong_type_and_moved(self):
        c = t.Node()
        with pytest.raises(TypeError, match="Node.parent: expected Node | None, got Inner"):
            c.parent = t.Inner(1)
        shell = t.Node()
        t.consume(tether.move(shell))
        with pytest.raises(ValueError, match="moved"):
            c.parent = shell


# ---- pickle, copy, deepcopy ------------------------------------------------------------


class TestPickle:
    """Every kind survives pickle; weak links inside the pickled graph stay weak links."""

    @pytest.mark.parametrize("proto", PROTOCOLS)
    def test_round_trip(self, proto):
        n = full_node()
        m = pickle.loads(pickle.dumps(n, proto))
        same_values(m, n)
        assert m.children[0].parent is m  # the weak link points into the copy
        assert m.transform is not n.transform

    def test_weak_target_outside_the_graph(self):
        parent = t.Node("p")
        child = t.Node("c")
        child.parent = parent
        c2 = pickle.loads(pickle.dumps(child))
        collect()
        assert c2.parent is None  # nothing in the copy kept the copied parent alive
        both = pickle.loads(pickle.dumps([parent, child]))
        assert both[1].parent is both[0]

    def test_constructor_gets_fields_by_name(self):
        n = t.Node("named", [1.0], t.Color.blue)
        reduced = n.__reduce__()
        assert reduced[1][1] == {"name": "named", "weights": [1.0], "color": t.Color.blue}
        assert "name" not in reduced[2][1]  # read-only: only the constructor sets it
        m = pickle.loads(pickle.dumps(n))
        assert m.name == "named"

    def test_subclass_with_override(self):
        n = Greeter("g")
        n.tag = "mine"
        m = pickle.loads(pickle.dumps(n))
        assert type(m) is Greeter and m.tag == "mine"
        assert t.call_greet(m, "you") == "g/mine -> you"


class TestOverrideSurvivesCopies:
    """The virtual overridden in Python, through pickle, deepcopy and dataclasses."""

    def test_deepcopy(self):
        g = Greeter("g", [1.0])
        g.tag = "deep"
        d = copy.deepcopy(g)
        assert type(d) is Greeter and d is not g and d.tag == "deep"
        assert t.call_greet(d, "x") == "g/deep -> x"

    def test_dataclasses(self):
        g = Greeter("g", [1.0])
        g.tag = "dc"
        assert [f.name for f in dataclasses.fields(g)][:2] == ["name", "weights"]
        r = dataclasses.replace(g, weights=[5.0])
        assert type(r) is Greeter and r.weights == [5.0]
        r.tag = "new"
        assert t.call_greet(r, "y") == "g/new -> y"
        assert dataclasses.asdict(g)["weights"] == [1.0]


class Greeter(t.Node):
    def greet(self, who):
        return "%s/%s -> %s" % (self.name, self.tag, who)


class TestCopy:
    def test_deepcopy(self):
        n = full_node()
        d = copy.deepcopy(n)
        same_values(d, n)
        assert d.extra is not n.extra and d.children[0] is not n.children[0]
        assert d.children[0].parent is d
        d.transform.x = 99.0
        assert n.transform.x == 3.0

    def test_shallow_copy(self):
        n = full_node()
        c = copy.copy(n)
        same_values(c, n)
        assert c.extra is n.extra and c.children[0] is n.children[0]
        c.transform.x = 42.0  # a value: copied, not shared
        assert n.transform.x == 3.0

    def test_weak_link_copies_as_weak(self):
        p = t.Node("p")
        c = t.Node("c")
        c.parent = p
        c2 = copy.copy(c)
        assert c2.parent is p
        del p
        collect()
        assert c.parent is None and c2.parent is None


# ---- repr and dataclasses --------------------------------------------------------------


class TestReprAndDataclasses:
    def test_repr(self):
        r = repr(full_node())
        assert r.startswith("Node(name='root', weights=[1.0, 2.5], extra=Inner(value=7), "
                            "counts={'a': 1, 'b': 2}, color=Color.green, "
                            "transform=Transform(x=3.0, y=0.0, scale=2.0), parent=None, "
                            "children=[Node(name='child'")
        assert "parent=Node(...)" in r  # the weak link back is a cycle: cut

    def test_fields_and_defaults(self):
        fs = {f.name: f for f in dataclasses.fields(t.Node)}
        assert list(fs) == ["name", "weights", "extra", "counts", "color", "transform",
                            "parent", "children"]
        assert fs["name"].init and fs["name"].default == ""
        assert fs["color"].default is t.Color.red
        assert not fs["counts"].init
        assert fs["weights"].type == list[float]

    def test_asdict_and_astuple(self):
        n = t.Node("leaf", [1.0], t.Color.blue)
        n.counts = {"k": 3}
        n.extra = t.Inner(2)
        n.parent = other = t.Node("other")
        d = dataclasses.asdict(n)
        assert d["weights"] == [1.0] and d["counts"] == {"k": 3} and d["color"] is t.Color.blue
        assert d["extra"] == {"value": 2}
        assert d["transform"] == t.Transform()
        assert d["parent"]["name"] == "other"
        assert dataclasses.astuple(t.Node("x"))[0] == "x"
        del other

    def test_replace(self):
        n = t.Node("a", [1.0], t.Color.green)
        n.counts = {"z": 1}
        r = dataclasses.replace(n, weights=[2.0, 3.0])
        assert (r.name, r.weights, r.color) == ("a", [2.0, 3.0], t.Color.green)
        assert r.counts == {}  # not a constructor parameter: starts empty, as init=False


# ---- error messages --------------------------------------------------------------------


class TestErrors:
    """What a rejected write says (issue 9's small holes)."""

    def test_int_out_of_range(self):
        i = t.Inner(1)
        with pytest.raises(OverflowError, match=r"Inner.value: 9223372036854775808 is out of "
                                                r"range for the C\+\+ type int64_t"):
            i.value = 2 ** 63
        with pytest.raises(OverflowError, match="out of range"):
            i.value = -2 ** 64
        assert i.value == 1

    def test_uninitialized_item_in_list(self):
        o = t.Outer()
        # (free-threaded builds name types with their module: tether.testing.Inner)
        with pytest.raises(TypeError, match=r"Outer.items: expected list\[Inner\], got list: an "
                                            r"item \((tether\.testing\.)?Inner\) is not "
                                            r"initialized"):
            o.items = [t.Inner(1), t.Inner.__new__(t.Inner)]
        assert o.items == []

    def test_wrong_item_type(self):
        with pytest.raises(TypeError, match=r"Node.weights: expected list\[float\], got list"):
            t.Node().weights = ["x"]
        with pytest.raises(TypeError, match=r"Node.counts: expected dict\[str, int\], got dict"):
            t.Node().counts = {1: 1}

    def test_cannot_rebuild_without_matching_names(self):
        from tether import _data
        with pytest.raises(TypeError, match="_NoDefault.*not fields"):
            pickle.dumps(_data._NoDefault(1))
