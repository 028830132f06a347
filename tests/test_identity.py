# SPDX-License-Identifier: Apache-2.0
"""One wrapper per C++ object while it lives, on every path from C++ to Python (I1, T1/T2)."""
import pytest

import tether
from tether import testing as t

pytestmark = pytest.mark.usefixtures("clean")


# ---- one wrapper while it lives -------------------------------------------------------------

class TestOneWrapper:
    """`a.x is a.x`, id(a.x) is stable, and distinct objects get distinct wrappers."""

    def test_attr_access_is_same_object(self):
        o = t.Outer(t.Inner(3))
        assert o.x is o.x
        assert o.x.value == 3

    def test_id_stable_over_100_reads(self):
        o = t.Outer(t.Inner(3))
        held = o.x
        assert len({id(o.x) for _ in range(100)}) == 1
        assert id(held) == id(o.x)

    def test_distinct_objects_distinct_wrappers(self):
        o1, o2 = t.Outer(t.Inner(1)), t.Outer(t.Inner(1))
        assert o1.x is not o2.x
        assert id(o1.x) != id(o2.x)

    def test_constructed_wrapper_is_the_canonical_one(self):
        i = t.Inner(4)
        o = t.Outer(i, i)
        assert o.x is i and o.y is i
        assert t.use_count(i) == 3  # the wrapper's count plus x and y

    def test_object_made_in_cpp_gets_one_wrapper(self):
        o = t.make_shared_outer(9)
        assert o.x is o.y
        assert o.x.value == 9

    def test_usable_as_dict_key(self):
        o = t.Outer(t.Inner(1), t.Inner(2))
        d = {o.x: "x", o.y: "y"}
        assert d[o.x] == "x" and d[o.y] == "y"


# ---- identity on every path -----------------------------------------------------------------

class TestEveryPath:
    """Getters, returns, callback arguments, containers and nb::cast all give the same wrapper."""

    def test_function_return(self):
        x = t.Inner(1)
        assert t.echo(x) is x
        assert t.echo_inner(x) is x

    def test_callback_argument(self):
        x = t.Inner(1)
        assert t.call(lambda v: v is x, x) is True

    def test_callback_sees_subclass_instance(self):
        class Sub(t.Inner):
            pass

        s = Sub(2)
        s.tag = "mine"
        assert t.call(lambda v: (v is s, v.tag), s) == (True, "mine")

    def test_vector_elements(self):
        o = t.Outer(t.Inner(1), t.Inner(2))
        lst = t.as_list(o)
        assert lst[0] is o.x and lst[1] is o.y

    def test_vector_field(self):
        a, b = t.Inner(1), t.Inner(2)
        o = t.Outer()
        o.items = [a, b, a]
        items = o.items
        assert items[0] is a and items[1] is b and items[2] is a
        assert o.items[0] is items[0]

    def test_optional(self):
        o = t.Outer(t.Inner(5))
        assert t.optional_x(o) is o.x
        assert t.optional_x(t.Outer()) is None

    def test_nb_cast(self):
        o = t.Outer(t.Inner(5))
        assert t.cast_x(o) is o.x

    def test_box_holds_any_object(self):
        o = t.Outer()
        b = t.Box(o)
        assert b.value is o
        b.value = t.Inner(3)
        assert b.value is b.value and b.value.value == 3

    def test_object_made_in_cpp_returned_twice(self):
        i = t.make_inner(7)
        assert t.echo(i) is i
        assert isinstance(i, t.Inner) and isinstance(i, tether.Object)
