# SPDX-License-Identifier: Apache-2.0
"""tests/test_overrides.py: Python overrides are found as Python finds methods (issue 22).

Defect 6: an override written as a staticmethod, classmethod or functools.partialmethod
failed when C++ called it (the trampoline called the raw class attribute with self). The
trampoline (tether/trampoline.h) now decides on the class whether the method is overridden,
as nanobind does, and calls what `self.name` gives: the class attribute bound through the
descriptor protocol. Attributes set on the instance are not overrides (documented in the
guide, section 5).

Defect 8: a re-entrant call (the override calls C++ that calls the same virtual on the same
object) runs the C++ method, as `super()` does: documented in the guide, with how to reach the
override from such code (through Python).
"""
import functools
import gc
import pathlib
import re

import pytest

import tether
from tether import testing as t

from conftest import collect

pytestmark = pytest.mark.usefixtures("clean")

GUIDE = pathlib.Path(__file__).resolve().parent.parent / "docs" / "guide.md"


class Descriptor:
    """A descriptor of its own: __get__ binds like a function would, recording the id of
    what it was bound to (not the object: that would keep it alive)."""

    def __init__(self):
        self.bound = []

    def __get__(self, obj, cls=None):
        if obj is None:
            return self
        self.bound.append(id(obj))
        return lambda who: f"descriptor: {obj.name} to {who}"


class CallableObject:
    """A class attribute with no __get__: Python calls it without self."""

    def __call__(self, who):
        return f"callable to {who}"


def make_classes():
    class Static(t.Node):
        greet = staticmethod(lambda who: f"static to {who}")

    class Class(t.Node):
        @classmethod
        def greet(cls, who):
            return f"{cls.__name__} to {who}"

    class Partial(t.Node):
        def _greet(self, who, punctuation):
            return f"{self.name} to {who}{punctuation}"

        greet = functools.partialmethod(_greet, punctuation="!")

    class PlainPartial(t.Node):
        # A functools.partial class attribute: before 3.14 it has no __get__ and is called
        # without self; from 3.14 it is a method descriptor (bound like a function), as
        # `obj.greet(who)` shows in Python too. The lambda takes either form.
        greet = functools.partial(lambda *args: f"partial to {args[-1]}")

    class Custom(t.Node):
        greet = Descriptor()

    class Callable(t.Node):
        greet = CallableObject()

    return Static, Class, Partial, PlainPartial, Custom, Callable


EXPECTED = {
    "Static": "static to bob",
    "Class": "Class to bob",
    "Partial": "n to bob!",
    "PlainPartial": "partial to bob",
    "Custom": "descriptor: n to bob",
    "Callable": "callable to bob",
}


class TestOverrideKinds:
    """Property: C++ reaches every kind of override exactly as `obj.greet(who)` does in Python,
    from the calling thread and from a std::thread without the GIL."""

    @pytest.mark.parametrize("index", range(6))
    def test_called_from_cpp_as_python_calls_it(self, index):
        cls = make_classes()[index]
        n = cls("n")
        want = EXPECTED[cls.__name__]
        assert n.greet("bob") == want                      # Python's own lookup
        assert t.call_greet(n, "bob") == want              # C++, through the vtable
        assert t.call_greet_in_thread(n, "bob", 3) == [want] * 3

    def test_kinds_reached_after_python_dropped_the_wrapper(self):
        """The override stays reachable while only C++ holds the object."""
        holder = t.Node("holder")
        holder.children = [cls("n") for cls in make_classes()]
        collect()
        want = [EXPECTED[c.__name__] for c in make_classes()]
        got = t.greet_children(holder, "bob", in_thread=True)
        assert got == want
        del holder

    def test_descriptor_binds_the_one_wrapper(self):
        _, _, _, _, Custom, _ = make_classes()
        n = Custom("n")
        Custom.greet.bound.clear()
        t.call_greet(n, "bob")
        assert Custom.greet.bound == [id(n)]
        Custom.greet.bound.clear()

    def test_pure_virtual_as_staticmethod_and_classmethod(self):
        class Square(t.Shape):
            area = staticmethod(lambda: 4.0)

        class Unit(t.Shape):
            @classmethod
            def area(cls):
                return 1.0

            kind = functools.partialmethod(lambda self, suffix: "unit" + suffix, "!")

        assert t.call_area(Square()) == 4.0
        assert t.call_area(Unit()) == 1.0
        assert t.call_kind(Unit()) == "unit!"

    def test_exceptions_propagate_from_every_kind(self):
        class Failing(t.Node):
            @classmethod
            def greet(cls, who):
                raise KeyError(who)

        class FailingStatic(t.Node):
            greet = staticmethod(lambda who: 1 / 0)

        with pytest.raises(KeyError):
            t.call_greet(Failing("f"), "bob")
        with pytest.raises(ZeroDivisionError):
            t.call_greet_in_thread(FailingStatic("f"), "bob")

    def test_super_from_a_classmethod_override_is_refused_by_python(self):
        """A classmethod has no instance for super().greet: Python raises TypeError, and
        C++ sees that error, as for any exception of an override."""
        class Odd(t.Node):
            @classmethod
            def greet(cls, who):
                return super().greet(who)

        with pytest.raises(TypeError):
            t.call_greet(Odd("o"), "bob")

    def test_instance_attributes_are_not_overrides(self):
        """Whether a method is overridden is decided by the class (as in nanobind): a callable
        stored on the instance shadows the method for Python callers only."""
        class Polite(t.Node):
            def greet(self, who):
                return f"{self.name} bows to {who}"

        p = Polite("ann")
        p.greet = lambda who: "instance"
        assert p.greet("bob") == "instance"
        assert t.call_greet(p, "bob") == "ann bows to bob"
        n = type("Plain", (t.Node,), {})("plain")
        n.greet = lambda who: "instance"
        assert t.call_greet(n, "bob") == "plain greets bob"

    def test_replacing_the_class_attribute_is_seen(self):
        class Mutable(t.Node):
            def greet(self, who):
                return "first"

        m = Mutable("m")
        assert t.call_greet(m, "x") == "first"
        Mutable.greet = staticmethod(lambda who: "second")
        assert t.call_greet(m, "x") == "second"
        Mutable.greet = classmethod(lambda cls, who: cls.__name__)
        assert t.call_greet(m, "x") == "Mutable"
        del Mutable.greet                                  # back to the C++ method
        assert t.call_greet(m, "x") == "m greets x"


class TestReentrantCalls:
    """Property (documented, guide section 5): while an override runs, a call of the same
    virtual on the same object that comes back through C++ runs the C++ method, as super()
    does; other objects and other virtuals dispatch normally; calling through Python reaches
    the override."""

    def test_same_object_runs_the_cpp_method(self):
        class Echo(t.Node):
            def greet(self, who):
                if who == "outer":
                    return "override(" + t.call_greet(self, "inner") + ")"
                return "override " + who

        e = Echo("e")
        assert t.call_greet(e, "outer") == "override(e greets inner)"

    def test_through_python_reaches_the_override(self):
        class Echo(t.Node):
            def greet(self, who):
                if who == "outer":
                    return "override(" + self.greet("inner") + ")"
                return "override " + who

        assert t.call_greet(Echo("e"), "outer") == "override(override inner)"

    def test_other_objects_dispatch_normally(self):
        class Echo(t.Node):
            def greet(self, who):
                if who == "outer":
                    return "override(" + t.call_greet(self.other, "inner") + ")"
                return "override " + who

        a, b = Echo("a"), Echo("b")
        a.other = b
        assert t.call_greet(a, "outer") == "override(override inner)"

    def test_on_a_thread_too(self):
        class Echo(t.Node):
            def greet(self, who):
                if who == "outer":
                    return "override(" + t.call_greet(self, "inner") + ")"
                return "override " + who

        assert t.call_greet_in_thread(Echo("e"), "outer", 2) == ["override(e greets inner)"] * 2

    def test_the_guide_documents_it(self):
        text = GUIDE.read_text()
        section = text[text.index("## 5. "):text.index("## 6. ")]
        assert re.search(r"re-entrant", section, re.I), "guide section 5 says nothing about re-entrant calls"
        assert "staticmethod" in section and "classmethod" in section
        assert "partialmethod" in section
        assert "instance" in section


def test_stats_back_to_zero_after_all_kinds():
    for cls in make_classes():
        t.call_greet_in_thread(cls("n"), "bob")
    collect()
    s = tether.stats()
    assert s["shared"] == 0
