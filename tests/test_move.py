# SPDX-License-Identifier: Apache-2.0
"""tether.move (T9): C++ takes the object over; the moved-from wrapper is an unusable shell."""
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
