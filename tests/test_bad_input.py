# SPDX-License-Identifier: Apache-2.0
"""Bad input raises a clear TypeError or ValueError and leaves the object as it was."""
import pytest

import tether
from tether import testing as t

from conftest import collect

pytestmark = pytest.mark.usefixtures("clean")


class TestBadInput:
    """No crash, a message, and the old value kept."""

    def test_wrong_type_to_object_field(self):
        o = t.Outer(t.Inner(1))
        old = o.x
        with pytest.raises(TypeError, match="Outer.x: expected"):
            o.x = "not an Inner"
        with pytest.raises(TypeError, match="Outer.x"):
            o.x = t.Outer()
        assert o.x is old

    def test_wrong_type_to_int_field(self):
        i = t.Inner(1)
        with pytest.raises(TypeError, match="Inner.value"):
            i.value = "x"
        with pytest.raises(TypeError):
            i.value = 1.5
        assert i.value == 1

    def test_wrong_list_element(self):
        o = t.Outer()
        o.items = [t.Inner(1)]
        with pytest.raises(TypeError, match="Outer.items"):
            o.items = [t.Inner(2), "x"]
        assert [i.value for i in o.items] == [1]

    def test_delete_field(self):
        o = t.Outer(t.Inner(1))
        with pytest.raises(AttributeError, match="cannot delete"):
            del o.x

    def test_none_where_object_required(self):
        with pytest.raises(TypeError):
            t.echo(None)
        with pytest.raises(TypeError):
            t.use_count(None)
        with pytest.raises(TypeError):
            t.consume(None)

    def test_non_tether_object_to_echo(self):
        for bad in (5, "x", object(), [t.Inner(1)]):
            with pytest.raises(TypeError, match="incompatible function arguments"):
                t.echo(bad)

    def test_move_non_object(self):
        for bad in (5, None, "x", object()):
            with pytest.raises(TypeError, match="tether.move\\(\\) expects a tether object"):
                tether.move(bad)

    def test_abstract_base_cannot_be_constructed(self):
        with pytest.raises(TypeError, match="no constructor"):
            tether.Object()

    def test_init_twice(self):
        i = t.Inner(1)
        with pytest.raises(TypeError, match="already initialized"):
            i.__init__(2)
        assert i.value == 1

    def test_failed_constructions_give_back_their_counts(self):
        """tether::init counts an object bound when it allocates it (one per-thread access
        with the live count); each way a construction can fail after that gives both back."""
        collect()
        before = tether.stats()
        i = t.Inner(1)
        with pytest.raises(TypeError, match="already initialized"):
            i.__init__(2)  # the second object was made, then lost to the first wrapper

        @tether.dataclass
        class D(tether.Object):
            value: int = 0

        D.__tether_slot_count__ = 2 ** 62  # the constructor throws after the allocation
        with pytest.raises((ValueError, MemoryError)):
            D()
        del i
        collect()
        assert tether.stats() == before

    def test_uninitialized_wrapper(self):
        i = t.Inner.__new__(t.Inner)
        with pytest.raises(ValueError, match="not initialized"):
            i.value
        with pytest.raises(ValueError, match="not initialized"):
            t.echo(i)

    def test_init_on_wrong_self(self):
        with pytest.raises(TypeError):
            t.Inner.__init__(t.Outer.__new__(t.Outer), 1)

    def test_subclass_init_must_call_super(self):
        class Forgot(t.Inner):
            def __init__(self):
                pass

        f = Forgot()
        with pytest.raises(ValueError, match="not initialized"):
            f.value
