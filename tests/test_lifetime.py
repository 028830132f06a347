# SPDX-License-Identifier: Apache-2.0
"""Freeing: last references (T6, T9), C++ letting go of shared wrappers (T5), __del__, shutdown (T8)."""
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


class TestLastRefCleanFree:
    """A wrapper holding the last C++ count frees both: nothing is kept (T6 then T9)."""

    def test_drop_last_ref(self):
        x = t.Inner(1)
        assert tether.stats()["live"] >= 1
        before = tether.stats()
        del x
        after = tether.stats()
        assert after["live"] == before["live"] - 1
        assert after["bound"] == before["bound"] - 1
        assert after["shared"] == before["shared"]

    def test_100_rounds_create_and_drop(self):
        start = tether.stats()
        for i in range(100):
            x = t.Inner(i)
            assert x.value == i
            del x
        assert tether.stats() == start

    def test_drop_then_realloc_value_correct(self):
        for i in range(100):
            t.Inner(i)
            y = t.Inner(i + 1)
            assert y.value == i + 1

    def test_temporary_returned_from_cpp(self):
        for i in range(100):
            assert t.make_inner(i).value == i


def shared():
    return tether.stats()["shared"]


class TestReleaseWhileShared:
    """When C++ drops an object whose wrapper only the header holds, the wrapper is freed
    exactly once (T5 then T6 and T9)."""

    def test_outer_dies_while_inner_shared(self):
        base = tether.stats()
        for _ in range(8):
            o = t.Outer(t.Inner(1))
            r = weakref.ref(o.x)
            assert shared() == base["shared"] + 1
            del o
            assert shared() == base["shared"] and r() is None
            assert tether.stats()["live"] == base["live"]
        assert t.Inner(2).value == 2

    def test_assignment_releases_old_shared_wrapper(self):
        base = shared()
        o = t.Outer(t.Inner(1))
        r = weakref.ref(o.x)  # the header keeps a wrapper for the first Inner
        assert shared() == base + 1
        o.x = t.Inner(2)  # old object dies with its wrapper; the new one is shared
        assert r() is None
        assert shared() == base + 1
        assert o.x is o.x and o.x.value == 2

    def test_assignment_gives_canonical_new_wrapper(self):
        o = t.Outer(t.Inner(1))
        old = o.x
        new = t.Inner(2)
        o.x = new
        assert o.x is new and o.x is not old
        assert old.value == 1  # the old object lives while Python holds it
        base = shared()
        del old  # the old object had only this wrapper left: both are freed
        assert shared() == base
        rn = weakref.ref(new)
        del new  # the new object's wrapper stays: the outer shares it
        assert shared() == base and rn() is o.x
        assert o.x.value == 2

    def test_release_on_thread_without_gil(self):
        base = tether.stats()
        b = t.Box(t.Inner(5))
        r = weakref.ref(b.value)  # the header keeps the wrapper
        assert shared() == base["shared"] + 1
        t.release_in_thread(b)  # last count goes on a std::thread, which takes the GIL
        assert shared() == base["shared"] and r() is None
        assert tether.stats()["live"] == base["live"] + 1  # the box alone
        assert b.value is None

    def test_release_subclass_on_thread(self):
        class Sub(t.Inner):
            pass

        base = tether.stats()
        s = Sub(3)
        s.tag = "x"
        r = weakref.ref(s)
        b = t.Box(s)
        del s
        assert r().tag == "x"
        t.release_in_thread(b)
        assert r() is None
        s = tether.stats()
        assert (s["bound"], s["shared"]) == (base["bound"] + 1, base["shared"])

    def test_release_in_thread_while_wrapper_alive(self):
        base = shared()
        x = t.Inner(5)
        b = t.Box(x)
        assert shared() == base + 1
        t.release_in_thread(b)  # E2 on a std::thread: the header lets the wrapper go
        assert x.value == 5 and t.use_count(x) == 1
        assert shared() == base
        alone = t.Inner(6)  # held by one variable only (getrefcount's own count differs by version)
        assert sys.getrefcount(x) == sys.getrefcount(alone)  # no header reference

    def test_objects_made_and_dropped_on_cpp_thread(self):
        before = tether.stats()["live"]
        t.make_in_thread(1000)
        assert tether.stats()["live"] == before


class TestDel:
    """__del__ runs once, when a wrapper really dies; being kept by C++ is not dying."""

    def test_del_runs_on_each_real_death(self):
        calls = []

        class D(t.Inner):
            def __del__(self):
                calls.append(self.value)

        for i in range(5):
            D(i)
        assert calls == [0, 1, 2, 3, 4]

    def test_del_not_run_while_shared_runs_once_when_released(self):
        calls = []

        class D(t.Inner):
            def __del__(self):
                calls.append(self.value)

        o = t.Outer(D(7))
        for _ in range(5):
            o.x
            junk()
        assert calls == []
        o.x = None
        assert calls.count(7) == 1

    def test_del_runs_when_released_from_thread(self):
        calls = []

        class D(t.Inner):
            def __del__(self):
                calls.append(self.value)

        b = t.Box(D(9))
        t.release_in_thread(b)
        assert calls == [9]

    def test_del_that_resurrects(self):
        saved = []
        calls = []

        class R(t.Inner):
            def __del__(self):
                calls.append(self.value)
                saved.append(self)

        b = t.Box(R(4))
        b.value = None  # T5 then the wrapper dies: __del__ keeps self, CPython resurrects it
        assert len(saved) == 1 and saved[0].value == 4 and calls == [4]
        assert t.Box(saved[0]).value is saved[0]
        saved.clear()  # really dies now: PEP 442, __del__ does not run again
        collect()
        assert calls == [4]

    def test_del_that_stores_self_into_cpp(self):
        """A __del__ that hands self to C++ resurrects it (T4 from inside its death), with
        its __dict__; __del__ does not run again when it finally dies (PEP 442)."""
        keeper = t.Box()
        calls = []

        class R(t.Inner):
            # Reached through the class, not a closure: on 3.13t a class made after the first
            # thread started is immortal, and a closure would keep `keeper` alive with it.
            def __del__(self):
                type(self).calls.append(self.value)
                type(self).keeper.value = self

        R.keeper, R.calls = keeper, calls

        r = R(5)
        r.tag = "kept"
        first = id(r)
        del r
        assert calls == [5]

        class Same(t.Inner):  # R's size, no __del__ (junk is dropped while `back` lives)
            pass

        j = junk(Same)
        back = keeper.value
        assert id(back) == first and type(back) is R
        assert back.tag == "kept" and back.value == 5 and t.use_count(back) == 2
        wr = weakref.ref(back)
        del back, j
        assert wr() is not None and calls == [5]
        keeper.value = None
        collect()
        assert wr() is None and calls == [5]
        del R.keeper


class TestShutdown:
    """Objects that outlive the interpreter are released without touching Python (T8)."""

    def run(self, body):
        code = "import gc, tether\nfrom tether import testing as t\n" + textwrap.dedent(body)
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=120)

    def test_shared_wrapper_released_after_finalize(self):
        r = self.run("""
            class Sub(t.Inner):
                pass
            for i in range(10):
                o = t.Outer(t.Inner(i), Sub(i))
                o.x, o.y            # wrappers made, then kept by their headers
                t.keep_until_exit(o)  # C++ releases these after Py_Finalize
            s = tether.stats()
            print("ok", s["shared"], s["bound"])
        """)
        assert r.returncode == 0, r.stderr
        # keep_until_exit shares all 10 outers and the outers share their 20 inners: every
        # wrapper is kept by its header at exit, and orphaned when C++ lets go
        assert r.stdout.strip() == "ok 30 30" and r.stderr == ""

    def test_bound_wrappers_at_exit(self):
        r = self.run("""
            keep = [t.Outer(t.Inner(i)) for i in range(10)]
            xs = [o.x for o in keep]
            print("ok")
        """)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "ok" and "leak" not in r.stderr
