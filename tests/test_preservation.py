# SPDX-License-Identifier: Apache-2.0
"""Park (T3) and revive (T4): a dropped wrapper comes back in place while C++ holds the object."""
import gc

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


class TestRevive:
    """After every Python reference is dropped, the next read gives the same id, type, value."""

    def test_same_id_type_value(self):
        o = t.Outer(t.Inner(42))
        first = id(o.x)
        assert tether.stats()["parked"] == 1
        j = junk()
        again = o.x
        assert id(again) == first
        assert type(again) is t.Inner and again.value == 42
        assert t.use_count(again) == 2  # outer's count and the wrapper's
        del j

    def test_parked_wrapper_owns_no_count(self):
        o = t.Outer(t.Inner(1))
        o.x  # make and park a wrapper
        assert tether.stats()["parked"] == 1
        # the parked wrapper holds no C++ count (I3): only the outer does
        assert t.use_count(o) == 1
        x = o.x
        assert t.use_count(x) == 2

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

    def test_value_change_survives_park(self):
        o = t.Outer(t.Inner(5))
        o.x.value = 6
        junk()
        assert o.x.value == 6

    def test_many_objects_revive_independently(self):
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

    def test_revived_through_every_path(self):
        o = t.Outer(t.Inner(3))
        first = id(o.x)
        junk()
        assert id(t.echo(o.x)) == first
        junk()
        assert id(t.as_list(o)[0]) == first
        junk()
        assert id(t.cast_x(o)) == first


class TestSubclassRevive:
    """Python subclass instances stored in C++ keep their attributes across park and revive."""

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


class TestTypeMismatchOnRevive:
    """A parked wrapper that does not fit the requested type falls through to a fresh one."""

    def test_mismatch_replaces_parked_wrapper(self):
        class A(t.Inner):
            pass

        class B(t.Inner):
            pass

        o = t.Outer(A(1))
        assert tether.stats()["parked"] == 1
        b = t.rewrap_x(o, B)
        assert type(b) is B and b.value == 1
        assert o.x is b  # the fresh wrapper is now the canonical one
        assert tether.stats()["parked"] == 0

    def test_fitting_parked_wrapper_is_revived(self):
        class A(t.Inner):
            pass

        a = A(1)
        first = id(a)
        o = t.Outer(a)
        del a
        junk(A)
        back = t.rewrap_x(o, t.Inner)  # A is an Inner: the parked wrapper fits
        assert id(back) == first and type(back) is A


class TestBounded:
    """Parked wrappers exist only for objects C++ still holds: no unbounded growth."""

    def test_1000_distinct_objects(self):
        outers = [t.Outer(t.Inner(i)) for i in range(1000)]
        for o in outers:
            o.x  # made, then parked at once
        assert tether.stats()["parked"] == 1000
        for o in outers:  # reading again revives and re-parks the same wrappers
            o.x
        assert tether.stats()["parked"] == 1000
        del outers, o
        assert tether.stats()["parked"] == 0

    def test_repeated_reads_do_not_grow(self):
        o = t.Outer(t.Inner(1))
        for _ in range(1000):
            o.x
        assert tether.stats()["parked"] == 1


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
        class D(t.Inner):
            def __del__(self):
                pass

        o = t.Outer(D(3))
        assert o.x is o.x
        first = id(o.x)
        junk()
        assert id(o.x) == first and o.x.value == 3
