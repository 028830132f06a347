# SPDX-License-Identifier: Apache-2.0
"""tests/test_lifetime_holes.py: the lifetime holes of issue 9, one class per numbered item.

Each scenario once crashed tether or lost a wrapper's state with nothing but ordinary Python.
The ones that crashed run in a child interpreter, so a regression fails one test, not the run.
Why each is closed by the design rather than patched: docs/lifecycle.md.
"""
import gc
import subprocess
import sys
import textwrap
import weakref

import pytest

import tether
from tether import testing as t

from conftest import collect, junk

pytestmark = pytest.mark.usefixtures("clean")


def child(code, timeout=300):
    """Run `code` in a fresh interpreter; it must exit 0 and print OK last."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, (proc.returncode, proc.stdout[-2000:], proc.stderr[-4000:])
    assert proc.stdout.strip().endswith("OK"), proc.stdout[-2000:]
    return proc.stdout


class TestItem1MoveOfAWrapperCppHolds:
    """A wrapper reached without a trip through C++ (weakref, WeakValueDictionary,
    gc.get_objects) is a live wrapper like any other: moving it hands C++ exactly the count it
    owns, and the object C++ still holds is untouched."""

    def test_move_through_weakref(self):
        child("""
            import gc, weakref, tether
            from tether import testing as t
            o = t.Outer(t.Inner(5))
            r = weakref.ref(o.x)            # o.x is dropped at once; C++ keeps it
            junk = [t.Inner(0) for _ in range(64)]
            assert t.consume(tether.move(r())) == 2   # o's field + the moved count
            x = o.x                          # a fresh wrapper of the same object
            assert type(x) is t.Inner and x.value == 5 and t.use_count(x) == 2
            del x, o, junk; gc.collect()
            s = tether.stats()
            assert s["live"] == 0 and s["bound"] == 0 and s["shared"] == 0, s
            print("OK")
        """)

    def test_move_through_weak_value_dictionary_and_gc(self):
        child("""
            import gc, weakref, tether
            from tether import testing as t
            class Sub(t.Inner): pass
            o = t.Outer(Sub(6))
            d = weakref.WeakValueDictionary(k=o.x)
            found = [x for x in gc.get_objects() if type(x) is Sub]
            assert found == [d["k"]]
            t.consume(tether.move(found[0]))
            del found
            assert o.x.value == 6 and type(o.x) is t.Inner   # the C++ type: the shell was moved
            del o; gc.collect()
            assert tether.stats()["live"] == 0, tether.stats()
            print("OK")
        """)


class TestItem2InitTypeCheck:
    """The bound __init__ checks self's type every time: no cached type pointer to outlive its
    class and be matched by another class allocated at the same address."""

    def test_init_refuses_other_types_after_class_churn(self):
        child("""
            import gc
            from tether import testing as t
            for i in range(200):
                S = type("S%d" % i, (t.Inner,), {})
                S(1).value
                del S; gc.collect()
                Z = type("Z%d" % i, (t.Outer,), {})
                z = Z.__new__(Z)
                try:
                    t.Inner.__init__(z, 5)
                except TypeError:
                    pass
                else:
                    raise AssertionError("Inner.__init__ accepted a %s" % type(z).__name__)
                del z, Z; gc.collect()
            print("OK")
        """)


class TestItem4FinalizerInstalledLate:
    """tether installs no finalizer on Python subclasses any more, so there is none to get
    around: a late __del__, a removed one and __class__ assignment all keep __dict__."""

    def roundtrip(self, o, make):
        o.x = make()
        o.x.tag = "kept"
        first = id(o.x)
        collect()
        j = junk()
        assert id(o.x) == first and o.x.tag == "kept" and gc.is_tracked(o.x)
        del j

    def test_del_added_after_instances_exist(self):
        class P(t.Inner):
            pass
        o = t.Outer()
        self.roundtrip(o, P)
        calls = []
        P.__del__ = lambda self: calls.append(1)
        self.roundtrip(o, P)
        o.x = None
        collect()
        assert len(calls) == 2  # each P really died once

    def test_del_added_then_removed(self):
        class P(t.Inner):
            pass
        o = t.Outer()
        P.__del__ = lambda self: None
        del P.__del__
        self.roundtrip(o, P)

    def test_class_assignment_to_never_instantiated_class(self):
        class P(t.Inner):
            pass

        class Q(t.Inner):
            pass

        o = t.Outer(P(1))
        o.x.__class__ = Q
        o.x.tag = "kept"
        first = id(o.x)
        collect()
        j = junk()
        assert type(o.x) is Q and o.x.tag == "kept" and id(o.x) == first
        del j


class TestItem5DelStoresSelf:
    """A __del__ that stores self into C++ resurrects it as plain Python would, with its
    __dict__ and GC tracking, whichever side dropped the last reference; echo(self) inside
    __del__ behaves the same on both paths."""

    @pytest.fixture
    def phoenix(self):
        """A subclass whose __del__ stores self into `Phoenix.box`. Reached through the class,
        not a closure: on 3.13t a class made after the first thread started is immortal, and
        a closure would keep the Box alive with it."""
        class Phoenix(t.Inner):
            def __del__(self):
                type(self).seen.append(t.echo(self) is self)
                type(self).box.value = self
        Phoenix.box, Phoenix.seen = t.Box(), []
        yield Phoenix
        Phoenix.box.value = None
        del Phoenix.box
        collect()

    def test_python_drops_last_reference(self, phoenix):
        box, seen = phoenix.box, phoenix.seen
        p = phoenix(1)
        p.tag = "kept"
        first = id(p)
        del p
        collect()
        j = junk()
        assert seen == [True]
        assert id(box.value) == first and box.value.tag == "kept" and gc.is_tracked(box.value)
        del j

    def test_cpp_drops_last_reference(self, phoenix):
        box, seen = phoenix.box, phoenix.seen
        holder = t.Box(phoenix(2))
        holder.value.tag = "kept"
        first = id(holder.value)
        holder.value = None  # C++ lets go: the wrapper really dies, __del__ stores it again
        collect()
        j = junk()
        assert seen == [True]
        assert id(box.value) == first and type(box.value).__name__ == "Phoenix"
        assert box.value.tag == "kept" and gc.is_tracked(box.value)
        del j

    def test_resurrected_self_cycle_is_collected_later(self, phoenix):
        box = phoenix.box
        p = phoenix(3)
        del p
        collect()
        survivor = box.value
        survivor.me = survivor  # a self-cycle the GC must still see
        wr = weakref.ref(survivor)
        box.value = None
        del survivor
        collect()
        assert wr() is None


class TestItem6GcKeepsWeakrefsOfHeldObjects:
    """A wrapper C++ holds is referenced by its header: the GC never takes it for garbage, so
    its weak references, their callbacks and its __dict__'s objects are left alone."""

    @pytest.mark.parametrize("kind", ["subclass", "dataclass"])
    def test_cycle_garbage_around_a_held_wrapper(self, kind):
        if kind == "subclass":
            class Sub(t.Inner):
                pass
            x = Sub(1)
        else:
            @tether.dataclass
            class D(tether.Object):
                value: int = 1
            x = D()
        deleted = []

        class Witness:
            def __del__(self):
                deleted.append(1)

        calls = []
        wx = weakref.ref(x, calls.append)
        x.witness = Witness()
        box = t.Box(x)
        lst = [x]
        lst.append(lst)
        del x, lst
        collect()
        assert wx() is box.value and calls == [] and deleted == []
        assert hasattr(box.value, "witness")
        box.value = None
        collect()
        assert wx() is None and len(calls) == 1 and deleted == [1]


class TestItem7ObjectsTetherDidNotAllocate:
    """An Object embedded in another object or on the stack is refused with TypeError, and
    counts taken on it never free it."""

    def test_embedded_reference_refused(self):
        h = t.Holder()
        with pytest.raises(TypeError, match="make_object did not allocate"):
            h.leaf_ref()
        with pytest.raises(TypeError, match="make_object did not allocate"):
            h.leaf_ptr()
        assert h.leaf_ref is not None

    def test_stack_object_refused(self):
        with pytest.raises(TypeError, match="make_object did not allocate"):
            t.call_with_stack_leaf(lambda leaf: leaf)

    def test_counts_on_embedded_object_never_free_it(self):
        assert t.count_embedded()


class TestItem8SizeLimits:
    """Objects of any size, and wrappers whose size does not depend on sizeof(T)."""

    def test_object_larger_than_64k(self):
        b = t.Big(3)
        assert b.size() >= 100000 and b.value == 3
        box = t.Box(b)
        first = id(b)
        del b
        collect()
        j = junk()
        assert id(box.value) == first and box.value.value == 3
        del j

    def test_wrapper_size_does_not_depend_on_object_size(self):
        class SubBig(t.Big):
            pass

        class SubInner(t.Inner):
            pass

        assert sys.getsizeof(t.Big()) == sys.getsizeof(t.Inner()) <= 64
        assert sys.getsizeof(SubBig()) == sys.getsizeof(SubInner()) < 128


class TestItem9SmallerHoles:
    def test_absurd_dataclass_slot_count(self):
        @tether.dataclass
        class D(tether.Object):
            value: int = 0
        D.__tether_slot_count__ = 2 ** 62
        with pytest.raises((ValueError, MemoryError)):
            D()
        D.__tether_slot_count__ = 1
        assert D().value == 0
