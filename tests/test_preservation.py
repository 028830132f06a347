# SPDX-License-Identifier: Apache-2.0
"""Preservation (T4 share / T5 unshare): while C++ shares an object, the header owns a strong
reference to its one wrapper, so the wrapper simply stays alive after Python drops it: same
id(), type, value, __dict__ and slots when it is read again. When C++ stops sharing, the
header lets go and the wrapper dies normally if Python holds none."""
import gc
import sys
import weakref

import pytest

import tether
from tether import testing as t

from conftest import collect, junk

pytestmark = pytest.mark.usefixtures("clean")


class Sub(t.Inner):
    """A Python subclass with a __dict__."""


class Slotted(t.Inner):
    """A Python subclass with __slots__ and no __dict__."""

    __slots__ = ("tag", "count")


def delta(before, **want):
    """tether.stats() minus `before`, for the keys named."""
    now = tether.stats()
    return {k: now[k] - before[k] for k in want} == want


class TestPreserved:
    """After every Python reference is dropped, the next read gives the same id, type, value."""

    def test_same_id_type_value(self):
        before = tether.stats()
        o = t.Outer(t.Inner(42))
        first = id(o.x)
        # the outer (held by Python only) and the inner (shared with the outer) are bound;
        # only the inner's wrapper is kept by its header
        assert delta(before, live=2, bound=2, shared=1)
        j = junk()
        again = o.x
        assert id(again) == first
        assert type(again) is t.Inner and again.value == 42
        assert t.use_count(again) == 2  # outer's count and the wrapper's
        del j

    def test_shared_wrapper_is_held_by_the_header(self):
        """The header's reference is a real one: sys.getrefcount shows it, and the wrapper
        still owns exactly one C++ count (the outer owns the other)."""
        alone = t.Inner(1)
        base = sys.getrefcount(alone)  # Python alone holds it: no header reference
        assert t.use_count(alone) == 1
        o = t.Outer(t.Inner(1))
        x = o.x
        assert sys.getrefcount(x) == base + 1
        assert t.use_count(x) == 2 and t.use_count(o) == 1
        before = tether.stats()
        o.x = None  # C++ stops sharing (T5): the header drops its reference
        assert sys.getrefcount(x) == base
        assert t.use_count(x) == 1
        assert delta(before, live=0, bound=0, shared=-1)
        o.x = x  # and shares again (T4)
        assert sys.getrefcount(x) == base + 1 and t.use_count(x) == 2
        assert delta(before, live=0, bound=0, shared=0)

    def test_unshared_wrapper_dies_at_once(self):
        o = t.Outer(t.Inner(1))
        r = weakref.ref(o.x)
        assert r() is not None  # kept by the header, nothing else
        before = tether.stats()
        o.x = None
        assert r() is None  # no gc.collect(): a plain refcount death
        assert delta(before, live=-1, bound=-1, shared=-1)

    def test_gc_sees_shared_wrapper_as_referenced(self):
        """A wrapper C++ shares is externally referenced: the cyclic GC never frees it,
        even in a cycle through its own __dict__."""
        s = Sub(1)
        s.me = s
        r = weakref.ref(s)
        o = t.Outer(s)
        del s
        for _ in range(3):
            assert gc.collect() >= 0
        assert r() is o.x and o.x.me is o.x
        o.x = None  # now only the cycle holds it: the GC frees it
        collect()
        assert r() is None

    def test_2000_cycles_one_address(self):
        o = t.Outer(t.Inner(1))
        ids = set()
        for i in range(2000):
            ids.add(id(o.x))
            if i % 100 == 0:
                junk()
        assert len(ids) == 1

    def test_gc_collect_between_drop_and_refetch(self):
        o = t.Outer(t.Inner(5))
        first = id(o.x)
        for _ in range(10):
            gc.collect()
            j = junk()
            assert id(o.x) == first and o.x.value == 5
            del j

    def test_value_change_survives_drop(self):
        o = t.Outer(t.Inner(5))
        o.x.value = 6
        junk()
        assert o.x.value == 6

    def test_many_objects_preserved_independently(self):
        outers = [t.Outer(t.Inner(i)) for i in range(50)]
        ids = [id(o.x) for o in outers]
        j = junk(n=200)
        assert [id(o.x) for o in outers] == ids
        assert [o.x.value for o in outers] == list(range(50))
        del j

    def test_interleaved_reverse_order(self):
        outers = [t.Outer(t.Inner(i)) for i in range(30)]
        ids = {i: id(o.x) for i, o in enumerate(outers)}
        junk(n=100)
        for i in reversed(range(30)):
            assert id(outers[i].x) == ids[i]
            assert outers[i].x.value == i

    def test_preserved_through_every_path(self):
        o = t.Outer(t.Inner(3))
        first = id(o.x)
        junk()
        assert id(t.echo(o.x)) == first
        junk()
        assert id(t.as_list(o)[0]) == first
        junk()
        assert id(t.cast_x(o)) == first
        junk()
        assert id(t.optional_x(o)) == first


class TestSubclassPreserved:
    """Python subclass instances stored in C++ keep their attributes while C++ holds them."""

    def test_dict_attributes_survive(self):
        s = Sub(1)
        s.tag = "kept"
        s.payload = [1, 2, 3]
        o = t.Outer(s)
        first = id(s)
        del s
        collect()
        j = junk(Sub)
        back = o.x
        assert id(back) == first and type(back) is Sub
        assert back.tag == "kept" and back.payload == [1, 2, 3]
        del j

    def test_slots_survive(self):
        s = Slotted(2)
        s.tag, s.count = "slot", 7
        o = t.Outer(s)
        first = id(s)
        del s
        j = junk(Slotted)
        back = o.x
        assert id(back) == first and type(back) is Slotted
        assert (back.tag, back.count, back.value) == ("slot", 7, 2)
        del j

    def test_subclass_2000_cycles_and_gc(self):
        s = Sub(1)
        s.n = 0
        o = t.Outer(s)
        del s
        ids = set()
        for i in range(2000):
            x = o.x
            x.n += 1
            ids.add(id(x))
            del x
            if i % 200 == 0:
                gc.collect()
                junk(Sub)
        assert len(ids) == 1 and o.x.n == 2000

    def test_self_cycle_in_dict_survives_gc(self):
        s = Sub(1)
        s.me = s
        o = t.Outer(s)
        del s
        collect()
        assert o.x.me is o.x

    def test_subclass_made_by_cpp_holder(self):
        b = t.Box(Sub(3))
        b.value.label = "boxed"
        j = junk(Sub)
        assert b.value.label == "boxed" and type(b.value) is Sub
        del j


class TestRequestedType:
    """rewrap_x(o, cls) returns the object's one wrapper; cls only types a fresh wrapper."""

    def test_existing_wrapper_is_returned_whatever_cls(self):
        class A(t.Inner):
            pass

        class B(t.Inner):
            pass

        o = t.Outer(A(1))
        first = id(o.x)
        before = tether.stats()
        b = t.rewrap_x(o, B)
        assert type(b) is A and id(b) == first and b is o.x  # never replaced (I1)
        assert delta(before, live=0, bound=0, shared=0)

    def test_fitting_wrapper_is_returned(self):
        class A(t.Inner):
            pass

        a = A(1)
        first = id(a)
        o = t.Outer(a)
        del a
        junk(A)
        back = t.rewrap_x(o, t.Inner)
        assert id(back) == first and type(back) is A

    def test_fresh_wrapper_gets_cls(self):
        class B(t.Inner):
            pass

        o = t.make_shared_outer(4)  # its inner has no wrapper yet
        before = tether.stats()
        b = t.rewrap_x(o, B)
        assert type(b) is B and b.value == 4
        assert o.x is b and o.y is b
        assert delta(before, live=0, bound=1, shared=1)
        assert t.use_count(b) == 3  # x, y and the wrapper's


class TestBounded:
    """The header keeps wrappers only for objects C++ still holds: no unbounded growth."""

    def test_1000_distinct_objects(self):
        before = tether.stats()
        outers = [t.Outer(t.Inner(i)) for i in range(1000)]
        for o in outers:
            o.x  # made, then kept by the header
        assert delta(before, live=2000, bound=2000, shared=1000)
        for o in outers:  # reading again hands out the same wrappers
            o.x
        assert delta(before, live=2000, bound=2000, shared=1000)
        del outers, o
        assert delta(before, live=0, bound=0, shared=0)

    def test_repeated_reads_do_not_grow(self):
        before = tether.stats()
        o = t.Outer(t.Inner(1))
        for _ in range(1000):
            o.x
        assert delta(before, live=2, bound=2, shared=1)


class TestSubclassDepth:
    """Multi-level Python subclasses and finalizer types tie like any other wrapper."""

    def test_two_level_subclass(self):
        class A(t.Inner):
            pass

        class B(A):
            __slots__ = ("s",)

        b = B(4)
        b.s, b.d = "slot", "dict"
        o = t.Outer(b)
        first = id(b)
        del b
        junk(B)
        back = o.x
        assert id(back) == first and type(back) is B
        assert (back.s, back.d, back.value) == ("slot", "dict", 4)

    def test_finalizer_type_identity_across_refetch(self):
        calls = []

        class D(t.Inner):
            def __del__(self):
                calls.append(self.value)

        o = t.Outer(D(3))
        assert o.x is o.x
        first = id(o.x)
        junk()
        assert id(o.x) == first and o.x.value == 3
        assert calls == []  # kept alive, never finalized while shared
        o.x = None
        assert calls == [3]
