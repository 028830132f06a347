# SPDX-License-Identifier: Apache-2.0
"""Freeing: last references (T5), C++-side release of parked wrappers (T6/T7), __del__, shutdown."""
import gc
import subprocess
import sys
import textwrap

import pytest

import tether
from tether import testing as t

from conftest import collect, junk

pytestmark = pytest.mark.usefixtures("clean")


class TestLastRefCleanFree:
    """A wrapper holding the last C++ count frees both: nothing is parked (T5 then T7)."""

    def test_drop_last_ref(self):
        x = t.Inner(1)
        assert tether.stats()["live"] >= 1
        before = tether.stats()
        del x
        after = tether.stats()
        assert after["live"] == before["live"] - 1
        assert after["parked"] == before["parked"]

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


class TestReleaseWhileParked:
    """When C++ drops an object whose wrapper is parked, the wrapper is freed exactly once."""

    def test_outer_dies_while_inner_parked(self):
        for _ in range(8):
            o = t.Outer(t.Inner(1))
            o.x
            assert tether.stats()["parked"] == 1
            del o
            assert tether.stats()["parked"] == 0
        assert t.Inner(2).value == 2

    def test_assignment_releases_old_parked_wrapper(self):
        o = t.Outer(t.Inner(1))
        o.x  # park a wrapper for the first Inner
        assert tether.stats()["parked"] == 1
        o.x = t.Inner(2)  # old object dies: its parked wrapper is freed; the new one parks
        assert tether.stats()["parked"] == 1
        assert o.x is o.x and o.x.value == 2

    def test_assignment_gives_canonical_new_wrapper(self):
        o = t.Outer(t.Inner(1))
        old = o.x
        new = t.Inner(2)
        o.x = new
        assert o.x is new and o.x is not old
        assert old.value == 1  # the old object lives while Python holds it
        del old  # the old object had only this wrapper left: both are freed
        assert tether.stats()["parked"] == 0
        del new  # the new object's wrapper parks: the outer holds it
        assert tether.stats()["parked"] == 1
        assert o.x.value == 2

    def test_release_on_thread_without_gil(self):
        b = t.Box(t.Inner(5))
        b.value  # park it
        assert tether.stats()["parked"] == 1
        t.release_in_thread(b)  # last count goes on a std::thread
        assert tether.stats()["parked"] == 0
        assert b.value is None

    def test_release_subclass_on_thread(self):
        class Sub(t.Inner):
            pass

        s = Sub(3)
        s.tag = "x"
        b = t.Box(s)
        del s
        t.release_in_thread(b)
        assert tether.stats()["parked"] == 0

    def test_release_in_thread_while_wrapper_alive(self):
        x = t.Inner(5)
        b = t.Box(x)
        t.release_in_thread(b)
        assert x.value == 5 and t.use_count(x) == 1

    def test_objects_made_and_dropped_on_cpp_thread(self):
        before = tether.stats()["live"]
        t.make_in_thread(1000)
        assert tether.stats()["live"] == before


class TestDel:
    """__del__ runs every time a wrapper really dies; parking is not dying (see README)."""

    def test_del_runs_on_each_real_death(self):
        calls = []

        class D(t.Inner):
            def __del__(self):
                calls.append(self.value)

        for i in range(5):
            D(i)
        assert calls == [0, 1, 2, 3, 4]

    def test_del_not_run_when_parked_runs_once_when_released(self):
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

        class R(t.Inner):
            def __del__(self):
                saved.append(self)

        b = t.Box(R(4))
        b.value = None  # T6 -> __del__ keeps self (T8): the object lives on with it
        assert len(saved) == 1 and saved[0].value == 4
        assert t.Box(saved[0]).value is saved[0]
        saved.clear()
        collect()


class TestShutdown:
    """Objects that outlive the interpreter are released without touching Python (T10)."""

    def run(self, body):
        code = "import gc, tether\nfrom tether import testing as t\n" + textwrap.dedent(body)
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=120)

    def test_parked_wrapper_released_after_finalize(self):
        r = self.run("""
            class Sub(t.Inner):
                pass
            for i in range(10):
                o = t.Outer(t.Inner(i), Sub(i))
                o.x, o.y            # wrappers made, then parked
                t.keep_until_exit(o)  # C++ releases these after Py_Finalize
            print("ok", tether.stats()["parked"])
        """)
        assert r.returncode == 0, r.stderr
        # 20 inner wrappers plus the 9 outer wrappers dropped by the loop are parked at exit
        assert r.stdout.strip() == "ok 29" and r.stderr == ""

    def test_bound_wrappers_at_exit(self):
        r = self.run("""
            keep = [t.Outer(t.Inner(i)) for i in range(10)]
            xs = [o.x for o in keep]
            print("ok")
        """)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "ok" and "leak" not in r.stderr
