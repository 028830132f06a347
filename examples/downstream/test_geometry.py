# SPDX-License-Identifier: Apache-2.0
"""Tests of the downstream example: its objects and tether.testing's cross modules keeping identity.

Run after building the module (see CMakeLists.txt or pyproject.toml):
    PYTHONPATH=<build dir> python -m pytest examples/downstream
"""
import copy
import dataclasses
import gc
import math
import pickle
import typing
import weakref

import tether_geometry as geo  # first, before tether: it imports tether._core itself

import tether
from tether import testing


def junk(n=64):
    """Same-size allocations between a drop and a refetch, so a freed wrapper would be reused."""
    return [geo.Point() for _ in range(n)] + [testing.Inner() for _ in range(n)]


class TestOwnTypes:
    """The downstream types are tether types: `s.a is s.a`, fields read and write."""

    def test_identity_and_fields(self):
        s = geo.Segment(geo.Point(0, 0), geo.Point(3, 4))
        assert s.a is s.a
        assert isinstance(s.a, tether.Object)
        assert s.length() == 5.0
        s.b.x = 6.0
        s.b.y = 8.0
        assert s.length() == 10.0


class TestPickleAndFields:
    """tether's generic pickle, copy and dataclass fields work for downstream types too."""

    def test_pickle_keeps_sharing(self):
        p = geo.Point(1, 2)
        s = geo.Segment(p, p)
        r = pickle.loads(pickle.dumps(s))
        assert type(r) is geo.Segment and r.a is r.b and (r.a.x, r.a.y) == (1.0, 2.0)
        c = copy.deepcopy(s)
        assert c.a is c.b and c.a is not p

    def test_dataclass_fields(self):
        assert [f.name for f in dataclasses.fields(geo.Point(3, 4))] == ["x", "y"]
        assert geo.Segment.__tether_fields__ == ("a", "b")


class TestDownstreamObjectInTestingBox:
    """A downstream object stored in tether.testing.Box comes back as the same wrapper."""

    def test_same_wrapper_across_modules(self):
        seg = geo.make_segment(0, 0, 1, 1)
        p = seg.a
        box = testing.Box(p)
        assert box.value is p
        assert testing.echo(p) is p
        wrapper_id = id(p)
        del p
        junk()
        gc.collect()
        assert id(box.value) == wrapper_id
        assert box.value is seg.a

    def test_subclass_keeps_attributes(self):
        class Tagged(geo.Point):
            pass

        t = Tagged(1, 2)
        t.tag = "downstream"
        box = testing.Box(t)
        wrapper_id = id(t)
        del t
        junk()
        got = box.value
        assert id(got) == wrapper_id and type(got) is Tagged and got.tag == "downstream"


class TestTestingObjectInDownstreamFunction:
    """tether.testing objects passed to Ref<tether::Object> in this module keep identity."""

    def test_echo_and_holder(self):
        inner = testing.Inner(7)
        assert geo.echo(inner) is inner
        holder = geo.Holder(inner)
        outer = testing.Outer(x=inner)
        assert holder.value is holder.value
        assert holder.value is outer.x is inner

    def test_counts_are_shared(self):
        inner = testing.Inner(1)
        holder = geo.Holder(inner)
        assert geo.use_count(inner) == testing.use_count(inner) == 2  # wrapper + holder
        del holder


class TestOneProcessWideState:
    """Both modules use the same libtether: one ABI, one set of counters."""

    def test_abi_and_stats(self):
        assert geo.abi_version() == tether.abi_version()
        live = tether.stats()["live"]
        p = geo.Point(1, 1)
        assert tether.stats()["live"] == live + 1
        del p
        assert tether.stats()["live"] == live


class Circle(geo.Shape):
    """A Python subclass overriding the C++ virtual Shape.area()."""

    def __init__(self, r):
        super().__init__()
        self.r = r

    def area(self):
        return math.pi * self.r ** 2


class TestSceneGraph:
    """Weak parent links and a Python override called from C++."""

    def test_override_reached_from_cpp(self):
        root = geo.Shape()
        c = Circle(1.0)
        c.parent = root
        root.children = [c, Circle(2.0)]
        del c
        gc.collect()
        assert math.isclose(root.total_area(), 5 * math.pi)  # C++ sums through the vtable
        assert root.children[0].parent is root and root.children[0].r == 1.0

    def test_weak_parent_does_not_keep_root_alive(self):
        root = geo.Shape()
        child = Circle(1.0)
        child.parent = root
        root.children = [child]
        gone = weakref.ref(root)
        del root
        gc.collect()
        assert gone() is None and child.parent is None

    def test_pickle_keeps_the_weak_link(self):
        root = geo.Shape()
        child = Circle(3.0)
        child.parent = root
        root.children = [child]
        r2 = pickle.loads(pickle.dumps(root))
        assert r2.children[0].parent is r2 and type(r2.children[0]) is Circle
        assert math.isclose(r2.total_area(), 9 * math.pi)


class TestSceneAndShapes:
    """Two types that refer to each other, bound Shape first: Scene.shapes (strong, a map)
    and Shape.scene (weak, back up)."""

    def test_annotations_name_the_later_type(self):
        hints = typing.get_type_hints(geo.Shape)
        assert hints["scene"] == typing.Optional[geo.Scene]
        assert typing.get_type_hints(geo.Scene)["shapes"] == dict[str, geo.Shape]

    def test_links_both_ways(self):
        scene = geo.Scene("garden")
        pond = Circle(1.0)
        scene.add("pond", pond)
        assert pond.scene is scene and scene.shapes["pond"] is pond
        assert math.isclose(scene.total_area(), math.pi)  # C++ reaches the Python override
        del pond
        gc.collect()
        assert scene.shapes["pond"].r == 1.0  # the same wrapper, attributes kept

    def test_weak_scene_link_ends_with_the_scene(self):
        scene = geo.Scene("s")
        shape = geo.Shape()
        scene.add("a", shape)
        del scene
        gc.collect()
        assert shape.scene is None

    def test_none_is_refused_in_the_map(self):
        scene = geo.Scene("s")
        try:
            scene.shapes = {"a": None}
        except TypeError as e:
            assert "Scene.shapes" in str(e) and "None for key 'a'" in str(e)
        else:
            raise AssertionError("None accepted in a map of Ref<Shape>")

    def test_pickle_keeps_both_directions(self):
        scene = geo.Scene("s")
        scene.add("c", Circle(2.0))
        s2 = pickle.loads(pickle.dumps(scene))
        c2 = s2.shapes["c"]
        assert c2.scene is s2 and type(c2) is Circle and c2.r == 2.0
