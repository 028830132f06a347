# SPDX-License-Identifier: Apache-2.0
"""tests/test_hostile.py: legal Python programs that once corrupted memory or lost identity.

Found by trying tether as a hostile user would, after issue 9's rework: Python code that runs
in the middle of a field write, a view that outlived its object, `__class__` assignment across
C++ types, a weakref callback that reached a dying wrapper's object through C++, and a
container built from a temporary sequence. The ones that crashed run in a child interpreter.
"""
import gc
import subprocess
import sys
import textwrap

import pytest

import tether
from tether import testing as t

from conftest import collect, junk

pytestmark = pytest.mark.usefixtures("clean")


def child(code, timeout=300):
    """Run `code` in a fresh interpreter; it must exit 0 and print OK last."""
    proc = subprocess.run([sys.executable, "-X", "faulthandler", "-c", textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (proc.returncode, proc.stdout[-2000:], proc.stderr[-4000:])
    assert proc.stdout.strip().endswith("OK"), proc.stdout[-2000:]
    return proc.stdout


class TestConversionMovesTheOwner:
    """A field write converts the value first; Python code run by the conversion (__index__,
    __float__, a sequence) may move the owner into C++, which frees it. The write then raises
    ValueError and touches nothing."""

    def test_int_field_index_moves_owner(self):
        child("""
            import tether
            from tether import testing as t
            victim = t.Inner(1)
            keep = []
            class Evil:
                def __index__(self):
                    t.consume(tether.move(victim))       # frees victim's object now
                    keep.extend(t.Inner(1000 + k) for k in range(4))  # reuse its block
                    return 424242
            try:
                victim.value = Evil()
                raise SystemExit("the write went through")
            except ValueError as e:
                assert "moved" in str(e), e
            assert [k.value for k in keep] == [1000, 1001, 1002, 1003]
            del keep
            assert tether.stats()["live"] == 0, tether.stats()
            print("OK")
        """)

    def test_vector_field_float_moves_owner(self):
        child("""
            import tether
            from tether import testing as t
            victim = t.Node("n", [1.0, 2.0])
            keep = []
            class Evil:
                def __float__(self):
                    t.consume(tether.move(victim))       # the Node and its vector are freed
                    keep.extend(t.Node("junk%d" % k, [float(k)] * 3) for k in range(4))
                    return 5.0
            try:
                victim.weights = [Evil()]
                raise SystemExit("the write went through")
            except ValueError:
                pass
            assert [k.weights for k in keep] == [[float(k)] * 3 for k in range(4)]
            print("OK")
        """)

    def test_dataclass_float_field_moves_owner(self):
        child("""
            import tether
            from tether import testing as t
            @tether.dataclass
            class P(tether.Object):
                x: float = 0.0
                y: float = 0.0
            victim = P(1.0, 2.0)
            keep = []
            class EvilInt(int):
                def __float__(self):
                    t.consume(tether.move(victim))
                    keep.extend(P(100.0 + k, 200.0 + k) for k in range(4))
                    return 777.0
            try:
                victim.x = EvilInt(3)
                raise SystemExit("the write went through")
            except ValueError:
                pass
            assert [(k.x, k.y) for k in keep] == [(100.0 + k, 200.0 + k) for k in range(4)]
            print("OK")
        """)

    def test_unusable_owner_still_raises_before_converting(self):
        i = t.Inner(1)
        t.consume(tether.move(i))
        calls = []

        class Counting:
            def __index__(self):
                calls.append(1)
                return 3

        with pytest.raises(ValueError, match="moved"):
            i.value = Counting()
        assert calls == []


class TestViewKeepsTheObject:
    """`n.transform` (a nanobind struct inside a tether object) is a view into the object: it
    keeps the C++ object alive, not just its wrapper, so moving the wrapper out cannot free
    the memory under it."""

    def test_view_outlives_move(self):
        child("""
            import gc, tether
            from tether import testing as t
            n = t.Node("victim", [], t.Color.red)
            n.transform = t.Transform(1.0, 2.0, 3.0)
            view = n.transform
            t.consume(tether.move(n))                 # the view still holds the Node
            junk = [t.Node("junk%d" % k, [], t.Color.red) for k in range(4)]
            assert (view.x, view.y, view.scale) == (1.0, 2.0, 3.0)
            view.x = 12345.0
            assert [j.transform.x for j in junk] == [0.0] * 4
            assert tether.stats()["live"] == 5, tether.stats()
            del view; gc.collect()
            assert tether.stats()["live"] == 4, tether.stats()
            print("OK")
        """)

    def test_view_writes_reach_cpp(self):
        n = t.Node("n", [], t.Color.red)
        n.transform = t.Transform(1.0, 2.0, 3.0)
        v = n.transform
        v.x = 7.0
        assert n.transform.x == 7.0
        del v, n


class TestClassAssignment:
    """`o.__class__ = C` is accepted only for a Python type of the object's C++ type (its bound
    type or a bound base, or a Python subclass of one): every tether wrapper has the same
    layout, so CPython's own check would let any tether type through."""

    @pytest.mark.parametrize("make, target", [
        (lambda: t.Inner(0x41414141), lambda: t.Outer),
        (lambda: t.Inner(1), lambda: t.Box),
        (lambda: t.Box(None), lambda: t.Node),
        (lambda: t.Inner(1), lambda: t.Big),
    ])
    def test_unrelated_bound_type_refused(self, make, target):
        o = make()
        before = type(o)
        with pytest.raises(TypeError, match="not a Python type for this object's C\\+\\+ type"):
            o.__class__ = target()
        assert type(o) is before

    def test_subclass_of_another_bound_type_refused(self):
        class OuterSub(t.Outer):
            pass

        i = t.Inner(1)
        with pytest.raises(TypeError):
            i.__class__ = OuterSub

    def test_between_python_subclasses_and_back(self):
        class A(t.Inner):
            pass

        class B(t.Inner):
            pass

        a = A(3)
        a.__class__ = B
        assert type(a) is B and a.value == 3
        a.__class__ = A
        assert type(a) is A and a.value == 3 and a.__class__ is A
        del a

    def test_non_type_and_delete(self):
        i = t.Inner(1)
        with pytest.raises(TypeError):
            i.__class__ = 5
        with pytest.raises(TypeError):
            del i.__class__

    def test_no_crash_after_refusal(self):
        child("""
            from tether import testing as t
            i = t.Inner(0x41414141)
            for target in (t.Outer, t.Box, t.Node, t.Big, t.Link):
                try:
                    i.__class__ = target
                except TypeError:
                    pass
            assert type(i) is t.Inner and i.value == 0x41414141
            print("OK")
        """)


class TestWeakrefCallbackReachesDyingObject:
    """A weakref callback of a dying wrapper that reaches the same object through C++ (here a
    WeakRef field) finds the wrapper past saving: RuntimeError, no second wrapper, no leak."""

    def test_relock_in_callback(self):
        child("""
            import gc, weakref, tether
            from tether import testing as t
            parent = t.Node("parent", [], t.Color.red)
            child_ = t.Node("child", [], t.Color.red)
            child_.parent = parent                    # a WeakRef<Node> field
            seen = []
            def cb(_r):
                try:
                    seen.append(child_.parent)
                except RuntimeError as e:
                    seen.append(str(e))
            r = weakref.ref(parent, cb)
            del parent
            assert len(seen) == 1 and "being deallocated" in seen[0], seen
            assert child_.parent is None               # the Node is gone now
            del child_, r, seen
            for _ in range(3):
                gc.collect()
            s = tether.stats()
            assert s["live"] == 0 and s["bound"] == 0 and s["shared"] == 0, s
            print("OK")
        """)


class TestContainerOfTemporaries:
    """A container field assigned from a sequence whose items only the sequence holds: every
    item keeps its wrapper (type and __dict__), the last one too."""

    def test_custom_sequence_keeps_every_wrapper(self):
        class Tagged(t.Inner):
            pass

        class Seq:
            def __len__(self):
                return 3

            def __getitem__(self, i):
                if i >= 3:
                    raise IndexError(i)
                x = Tagged(i)
                x.tag = "tag%d" % i
                return x

        o = t.Outer()
        o.items = Seq()
        collect()
        j = junk(Tagged)
        got = [(type(x).__name__, x.value, getattr(x, "tag", None)) for x in o.items]
        assert got == [("Tagged", i, "tag%d" % i) for i in range(3)]
        del o, j, got

    def test_generator_into_list_argument(self):
        class Tagged(t.Inner):
            pass

        def gen():
            for i in range(4):
                x = Tagged(i)
                x.tag = i
                yield x

        o = t.Outer()
        o.items = list(gen())  # a list holds them: the easy case, for comparison
        o.items = tuple(gen())
        collect()
        j = junk(Tagged)
        assert [x.tag for x in o.items] == [0, 1, 2, 3]
        del o, j


class TestCallbackReassignsIteratedList:
    """The documented greet_children example holds the root and a copy of its list while it
    calls Python overrides, which may reassign root.children."""

    def test_override_reassigns_children(self):
        child("""
            from tether import testing as t
            junk = []
            class Kid(t.Node):
                def greet(self, who):
                    root.children = []
                    junk.extend(t.Node("junk", [], t.Color.red) for _ in range(8))
                    return "kid " + self.name
            root = t.Node("root", [], t.Color.red)
            root.children = [Kid("k%d" % i, [], t.Color.red) for i in range(4)]
            assert t.greet_children(root, "x") == ["kid k%d" % i for i in range(4)]
            print("OK")
        """)


def test_move_inside_failed_container_conversion_is_consumed():
    """Documented behaviour (README): an item moved with tether.move() inside a container whose
    conversion then fails has been handed over already, as nanobind's unique_ptr items are;
    the wrapper is a clean moved-from shell and nothing leaks."""
    a = t.Inner(7)
    o = t.Outer()
    with pytest.raises(TypeError):
        o.items = [tether.move(a), "not an Inner"]
    assert o.items == []
    with pytest.raises(ValueError, match="moved"):
        a.value
    del a, o
    gc.collect()


RACE = """
    import gc, sys, threading, tether
    from tether import testing as t
    ROUNDS, B = {rounds}, 16
    batch, bad, results = [None], [], [[], []]
    bar = threading.Barrier(3)
    def run(work):
        def loop(k):
            for r in range(ROUNDS):
                bar.wait()
                for x in batch[0]:
                    try:
                        work(k, r, x)
                    except ValueError:
                        results[k].append("moved")
                    except Exception as ex:
                        bad.append(repr(ex)[:200])
                bar.wait()
        ths = [threading.Thread(target=loop, args=(k,)) for k in range(2)]
        for th in ths:
            th.start()
        base = tether.stats()
        for r in range(ROUNDS):
            batch[0] = [make(r * B + j) for j in range(B)]
            bar.wait(); bar.wait()
            junk = [t.Inner(-1) for _ in range(8)]   # reuse freed blocks
        batch[0] = junk = None
        for th in ths:
            th.join()
        gc.collect()
        assert not bad, bad[:5]
        assert tether.stats() == base, (base, tether.stats())
"""


class TestThreadsRaceAMove:
    """tether.move(x) on one thread while another uses x. Free-threaded builds run them at
    once: the move takes the wrapper's critical section (as field reads and writes do), so
    exactly one of two moves wins, and a Ref argument read just before a move counts the
    object only if it is still alive and still x's (the moved-from wrapper keeps its former
    object's memory until it dies). GIL builds run them interleaved."""

    rounds = 3000 if not hasattr(sys, "_is_gil_enabled") or sys._is_gil_enabled() else 6000

    def test_two_moves_one_wins(self):
        child(RACE.format(rounds=self.rounds) + """
    make = t.Inner
    def work(k, r, x):
        results[k].append(t.consume(tether.move(x)))
    run(work)
    wins = sum(1 for a, b in zip(*results) if a != "moved" and b != "moved")
    assert wins == 0, wins
    print("OK")
""")

    def test_echo_against_move(self):
        child(RACE.format(rounds=self.rounds) + """
    make = t.Inner
    def work(k, r, x):
        if k == 0:
            e = t.echo(x)
            if type(e) is not t.Inner or e.value < 0:
                bad.append((type(e).__name__, e.value))
        else:
            t.consume(tether.move(x))
    run(work)
    print("OK")
""")

    def test_field_write_against_owner_move(self):
        child(RACE.format(rounds=self.rounds) + """
    make = lambda v: t.Outer(t.Inner(v))
    def work(k, r, o):
        if k == 0:
            o.x = t.Inner(r)
            v = o.x
            if v is not None and (type(v) is not t.Inner or v.value < 0):
                bad.append((type(v).__name__, v.value))
        else:
            t.consume(tether.move(o))
    run(work)
    print("OK")
""")
