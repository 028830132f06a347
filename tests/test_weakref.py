# SPDX-License-Identifier: Apache-2.0
"""Weak references to tether objects follow the wrapper, which lives while C++ holds the object.

The meaning tether picks: while C++ shares the object the header owns a strong reference to
the wrapper, so a weak reference stays valid while C++ holds the object, even after Python
dropped every strong reference; it dies, and its callback runs once, when the wrapper really
dies (C++ stopped sharing and Python held nothing, or Python held the last reference).
"""
import gc
import weakref

import pytest

import tether
from tether import testing as t

from conftest import collect, junk

pytestmark = pytest.mark.usefixtures("clean")


class Sub(t.Inner):
    """A Python subclass (a GC type with a __dict__, kept by the header while shared)."""


@tether.dataclass
class Point(tether.Object):
    x: int = 0


def counting():
    calls = []
    return calls, (lambda ref: calls.append(ref))


class TestFollowsWrapper:
    """weakref.ref works on every tether type and stays valid while C++ holds the object."""

    @pytest.mark.parametrize("make", [lambda: t.Inner(5), lambda: Sub(5), lambda: Point(5)],
                             ids=["bound", "subclass", "dataclass"])
    def test_valid_while_shared(self, make):
        box = t.Box(make())
        calls, cb = counting()
        r = weakref.ref(box.value, cb)
        first = id(box.value)
        collect()
        j = junk()
        assert r() is not None and id(r()) == first and r() is box.value
        assert calls == [] and tether.stats()["shared"] >= 1
        del j

    def test_dies_with_cpp_object_callback_once(self):
        o = t.Outer(t.Inner(1))
        calls, cb = counting()
        r = weakref.ref(o.x, cb)
        collect()
        o.x = None  # the last C++ reference: the header lets go and the wrapper dies
        collect()
        assert r() is None and len(calls) == 1 and calls[0] is r
        o.x = t.Inner(2)
        collect()
        assert len(calls) == 1

    def test_dies_with_wrapper_when_python_held_last(self):
        calls, cb = counting()
        i = t.Inner(1)
        r = weakref.ref(i, cb)
        del i
        assert r() is None and len(calls) == 1

    def test_subclass_dies_with_wrapper_when_python_held_last(self):
        calls, cb = counting()
        s, p = Sub(1), Point(2)
        rs, rp = weakref.ref(s, cb), weakref.ref(p, cb)
        del s, p
        assert rs() is None and rp() is None and len(calls) == 2

    def test_deref_while_shared_then_cpp_lets_go(self):
        o = t.Outer(t.Inner(6))
        calls, cb = counting()
        r = weakref.ref(o.x, cb)
        collect()
        w = r()  # a strong reference to the shared wrapper
        o.x = None  # C++ lets go while Python holds it through the weakref
        assert w.value == 6 and r() is w and calls == []
        del w
        collect()
        assert r() is None and len(calls) == 1

    def test_many_drop_refetch_cycles(self):
        box = t.Box(Sub(1))
        calls, cb = counting()
        r = weakref.ref(box.value, cb)
        first = id(box.value)
        for _ in range(50):
            v = box.value
            assert v is r()
            del v
            collect()
            j = junk(Sub)
            del j
        assert id(r()) == first and calls == []
        box.value = None
        collect()
        assert r() is None and len(calls) == 1

    def test_release_from_cpp_thread(self):
        box = t.Box(t.Inner(3))
        calls, cb = counting()
        r = weakref.ref(box.value, cb)
        collect()
        t.release_in_thread(box)  # the shared wrapper's object dies on a std::thread
        collect()
        assert r() is None and len(calls) == 1

    def test_moved_from_shell(self):
        i = t.Inner(1)
        r = weakref.ref(i)
        t.consume(tether.move(i))
        assert r() is i  # the shell is a live (unusable) Python object
        with pytest.raises(ValueError):
            r().value
        del i
        assert r() is None

    def test_untied_type_follows_its_wrapper(self):
        o = t.Untied(1)
        r = weakref.ref(o)
        del o
        assert r() is None


class TestWeakValueDictionary:
    """A WeakValueDictionary keeps entries while C++ holds the objects, drops them after."""

    def test_kept_while_shared_and_death(self):
        o = t.Outer(t.Inner(1), t.Inner(2))
        d = weakref.WeakValueDictionary()
        d["x"], d["y"] = o.x, o.y
        d["temp"] = t.Inner(3)  # only Python held it: gone at once
        collect()
        j = junk()
        assert sorted(d.keys()) == ["x", "y"]
        assert d["x"] is o.x and d["y"].value == 2
        o.x = None
        collect()
        assert sorted(d.keys()) == ["y"] and d["y"] is o.y
        del o, j
        collect()
        assert len(d) == 0

    def test_weak_key_dictionary(self):
        box = t.Box(t.Inner(1))
        d = weakref.WeakKeyDictionary()
        d[box.value] = "meta"
        collect()
        assert d[box.value] == "meta"
        box.value = None
        collect()
        assert len(d) == 0


class TestNoLeak:
    """Weak references and their callbacks leave nothing behind."""

    def test_loop(self):
        collect()
        before = tether.stats()
        calls, cb = counting()
        refs = []
        for i in range(200):
            box = t.Box(t.Inner(i))
            refs.append(weakref.ref(box.value, cb))
            del box
        gc.collect()
        assert all(r() is None for r in refs) and len(calls) == 200
        collect()
        assert tether.stats() == before
