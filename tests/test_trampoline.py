# SPDX-License-Identifier: Apache-2.0
"""Trampolines (tether/trampoline.h): a Python subclass overrides C++ virtual functions.

tether.testing.Node has virtuals greet() and weight_count() (trampoline PyNode); Shape has a
pure virtual area() (trampoline PyShape). C++ calls them through the vtable: call_greet,
call_area, and the *_in_thread variants, which call from a std::thread without the GIL."""
import gc
import threading

import pytest

import tether
from tether import testing as t

from conftest import collect

pytestmark = pytest.mark.usefixtures("clean")


class Polite(t.Node):
    def greet(self, who):
        self.calls = getattr(self, "calls", 0) + 1
        return "%s bows to %s (%s)" % (self.name, who, self.mood)


class Square(t.Shape):
    def __init__(self, side):
        super().__init__()
        self.side = side

    def area(self):
        return float(self.side * self.side)


class TestOverride:
    """C++ calling a virtual reaches the Python override; `self` is the wrapper Python had."""

    def test_cpp_reaches_override(self):
        p = Polite("ann")
        p.mood = "glad"
        assert t.call_greet(p, "bob") == "ann bows to bob (glad)"
        assert p.calls == 1

    def test_not_overridden_runs_cpp(self):
        p = Polite("ann", [1.0, 2.0])
        assert t.call_weight_count(p) == 2
        assert t.call_greet(t.Node("plain"), "x") == "plain greets x"

    def test_self_is_the_same_wrapper(self):
        class Watch(t.Node):
            def greet(self, who):
                return str(id(self))

        w = Watch()
        assert t.call_greet(w, "x") == str(id(w))

    def test_super_calls_cpp(self):
        class Loud(t.Node):
            def greet(self, who):
                return super().greet(who).upper()

        assert t.call_greet(Loud("amy"), "bo") == "AMY GREETS BO"

    def test_python_call_of_method(self):
        p = Polite("ann")
        p.mood = "ok"
        assert p.greet("z") == "ann bows to z (ok)"  # plain Python method resolution

    def test_exception_propagates(self):
        class Broken(t.Node):
            def greet(self, who):
                raise KeyError(who)

        with pytest.raises(KeyError, match="boom"):
            t.call_greet(Broken(), "boom")

    def test_wrong_result_type(self):
        class Wrong(t.Node):
            def greet(self, who):
                return 5

        with pytest.raises((TypeError, RuntimeError)):
            t.call_greet(Wrong(), "x")


class TestHeldOnlyByCpp:
    """The issue's done-when: Python drops every reference to an overriding object that C++
    holds; calling the virtual from C++ (also from a std::thread) still runs the override,
    with the object's __dict__."""

    def test_after_last_python_reference(self):
        p = Polite("kept")
        p.mood = "patient"
        ident = id(p)
        box = t.Box(p)  # C++ holds the only strong reference besides the wrapper
        get = lambda: box.value
        del p
        collect()
        junk = [t.Node() for _ in range(64)]
        q = get()
        assert id(q) == ident and type(q) is Polite and q.mood == "patient"
        del q
        collect()
        assert t.call_greet(get(), "c++") == "kept bows to c++ (patient)"

    def test_cpp_alone_calls_the_override(self):
        """The object is reached by C++ only (a child in root.children), never handed to
        Python on the way: the override still runs with its __dict__, in a std::thread too."""
        root = t.Node("root")
        p = Polite("kid")
        p.mood = "sleepy"
        ident = id(p)
        root.children = [p, t.Node("plain")]
        del p
        collect()
        junk = [t.Node() for _ in range(64)]
        want = ["kid bows to dad (sleepy)", "plain greets dad"]
        assert t.greet_children(root, "dad") == want
        assert t.greet_children(root, "dad", in_thread=True) == want
        kid = root.children[0]
        assert id(kid) == ident and kid.calls == 2
        del junk

    def test_from_a_std_thread(self):
        p = Polite("far")
        p.mood = "calm"
        box = t.Box(p)
        get = lambda: box.value
        del p
        collect()
        out = t.call_greet_in_thread(get(), "thread", 3)
        assert out == ["far bows to thread (calm)"] * 3
        assert get().calls == 3

    def test_threads_in_parallel(self):
        p = Polite("many")
        p.mood = "busy"
        box = t.Box(p)
        get = lambda: box.value
        del p
        errors = []

        def run():
            try:
                assert t.call_greet_in_thread(get(), "t", 50) == ["many bows to t (busy)"] * 50
            except Exception as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=run) for _ in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert not errors

    def test_shape_in_thread(self):
        assert t.call_area_in_thread(Square(3), 2) == [9.0, 9.0]


class TestPureVirtual:
    """A pure virtual left unimplemented raises NotImplementedError, never crashes."""

    def test_missing_override(self):
        class Blob(t.Shape):
            pass

        with pytest.raises(NotImplementedError, match=r"Shape.area\(\) is a pure virtual.*Blob "
                                                      r"must define area\(\)"):
            t.call_area(Blob())
        assert t.call_kind(Blob()) == "shape"

    def test_missing_override_in_thread(self):
        class Blob(t.Shape):
            pass

        with pytest.raises(NotImplementedError, match="pure virtual"):
            t.call_area_in_thread(Blob())

    def test_abstract_base_itself(self):
        with pytest.raises(NotImplementedError, match="Shape is abstract"):
            t.call_area(t.Shape())

    def test_implemented(self):
        class Named(Square):
            def kind(self):
                return "square"

        s = Named(2)
        assert (t.call_area(s), t.call_kind(s)) == (4.0, "square")

    def test_after_move_no_override(self):
        """tether.move detaches the wrapper: C++ keeps the object, Python's override is gone
        with it, so the pure virtual reports itself instead of calling into a dead wrapper."""
        s = Square(2)
        box = t.Box()
        box.value = s
        t.consume(tether.move(s))
        with pytest.raises(NotImplementedError):
            t.call_area(box.value)
