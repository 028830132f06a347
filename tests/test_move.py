# SPDX-License-Identifier: Apache-2.0
"""tether.move (T7): C++ takes the object over; the moved-from wrapper is an unusable shell."""
import gc
import sys
import weakref

import pytest

import tether
from tether import testing as t

pytestmark = pytest.mark.usefixtures("clean")


class TestMove:
    """Ref<T>&& parameters take the wrapper's own count; the wrapper is detached first."""

    def test_consume_sees_single_count(self):
        x = t.Inner(1)
        assert t.consume(tether.move(x)) == 1

    def test_moved_from_raises(self):
        x = t.Inner(1)
        t.consume(tether.move(x))
        with pytest.raises(ValueError, match="moved into C\\+\\+"):
            x.value
        with pytest.raises(ValueError, match="moved"):
            x.value = 3
        with pytest.raises(ValueError, match="moved"):
            t.echo(x)
        with pytest.raises(ValueError, match="moved"):
            tether.move(x)

    def test_move_of_field_then_refetch_is_fresh_and_canonical(self):
        o = t.Outer(t.Inner(5))
        x = o.x
        assert t.consume(tether.move(x)) == 2  # the outer still holds it
        assert o.x is o.x and o.x is not x
        assert o.x.value == 5

    def test_move_into_callback_path(self):
        o = t.Outer(t.Inner(5))
        t.call(lambda v: t.consume(tether.move(v)), o.x)
        assert o.x is o.x and o.x.value == 5

    def test_move_without_consuming_keeps_wrapper(self):
        x = t.Inner(1)
        tok = tether.move(x)
        del tok
        assert x.value == 1

    def test_failed_overload_consumes_nothing(self):
        x = t.Inner(1)
        with pytest.raises(TypeError):
            t.consume(tether.move(x), 5)
        assert x.value == 1

    def test_move_subclass(self):
        class Sub(t.Inner):
            pass

        s = Sub(2)
        s.tag = "t"
        b = t.Box(s)
        t.consume(tether.move(s))
        assert type(b.value) is t.Inner  # the subclass wrapper went with the move
        assert b.value.value == 2


class TestMoveSharedWrapper:
    """tether.move works for any wrapper, also one only the header kept (C++ shares the
    object) and Python reached again through a weakref or gc.get_objects(): the header's
    reference is dropped with SHARED, the wrapper's count goes to the callee."""

    def test_move_through_weakref(self):
        before = tether.stats()
        o = t.Outer(t.Inner(7))
        r = weakref.ref(o.x)  # only the header holds the wrapper now
        w = r()
        assert t.consume(tether.move(w)) == 2  # the outer's count and the wrapper's
        after = tether.stats()
        assert after["shared"] == before["shared"] and after["bound"] == before["bound"] + 1
        alone = t.Inner(6)  # held by one variable only (getrefcount's own count differs by version)
        assert sys.getrefcount(w) == sys.getrefcount(alone)  # no header reference on the shell
        del w
        assert r() is None  # the shell died with its last Python reference
        x = o.x  # a fresh wrapper for the object the outer still holds
        assert x.value == 7 and t.use_count(x) == 2 and x is o.x

    def test_move_through_gc_get_objects(self):
        class Found(t.Inner):
            pass

        o = t.Outer(Found(8))
        o.x.tag = "find me"
        gc.collect()
        found = [w for w in gc.get_objects() if type(w) is Found]
        assert len(found) == 1 and found[0] is o.x
        w = found.pop()
        assert t.consume(tether.move(w)) == 2
        with pytest.raises(ValueError, match="moved"):
            w.value
        assert w.tag == "find me"  # the shell keeps its __dict__
        del w
        assert type(o.x) is t.Inner and o.x.value == 8  # fresh wrapper of the bound type

    def test_move_last_count_from_box_through_weakref(self):
        """Moving the wrapper of an object the box holds, then letting the box go: the
        object dies exactly once, in C++."""
        before = tether.stats()
        b = t.Box(t.Inner(3))
        r = weakref.ref(b.value)
        t.consume(tether.move(r()))
        b.value = None  # the box held the last count
        gc.collect()
        assert r() is None
        after = tether.stats()
        assert after["live"] == before["live"] + 1  # the box
        assert after["shared"] == before["shared"]
