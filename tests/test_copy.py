# SPDX-License-Identifier: Apache-2.0
"""copy.copy and copy.deepcopy of tether objects: new C++ objects, canonical wrappers, sharing."""
import copy
import sys

import pytest

import tether
from tether import testing as t

from conftest import collect, junk

pytestmark = pytest.mark.usefixtures("clean")


class Sub(t.Outer):
    """A Python subclass with a __dict__."""


class TestShallowCopy:
    """copy.copy makes a new C++ object whose fields point to the same children."""

    def test_new_object_same_children(self):
        o = t.Outer(t.Inner(1), t.Inner(2))
        o.items = [o.x]
        c = copy.copy(o)
        assert type(c) is t.Outer and c is not o
        assert c.x is o.x and c.y is o.y and c.items[0] is o.x
        assert t.use_count(o.x) == 5  # o.x, o.items[0], c.x, c.items[0], the wrapper

    def test_independent_fields(self):
        o = t.Outer(t.Inner(1))
        c = copy.copy(o)
        c.x = t.Inner(9)
        assert o.x.value == 1 and c.x.value == 9

    def test_leaf(self):
        i = t.Inner(5)
        c = copy.copy(i)
        c.value = 6
        assert (i.value, c.value) == (5, 6)

    def test_subclass_dict_is_shallow(self):
        s = Sub(t.Inner(1))
        s.tags = ["a"]
        c = copy.copy(s)
        assert type(c) is Sub and c.tags is s.tags and c.x is s.x


class TestDeepCopy:
    """copy.deepcopy copies the graph and keeps its sharing."""

    def test_copies_children(self):
        o = t.make_shared_outer(3)
        d = copy.deepcopy(o)
        assert d.x is d.y and d.x is not o.x
        assert d.x.value == 3
        d.x.value = 4
        assert o.x.value == 3

    def test_sharing_across_fields_and_lists(self):
        i = t.Inner(1)
        o = t.Outer(i, t.Inner(2))
        o.items = [i, o.y, i]
        d = copy.deepcopy(o)
        assert d.items[0] is d.x and d.items[2] is d.x and d.items[1] is d.y

    def test_memo_shared_with_caller(self):
        i = t.Inner(1)
        a, b = copy.deepcopy([t.Outer(i), t.Box(i)])
        assert a.x is b.value and a.x is not i

    def test_cycle(self):
        b1, b2 = t.Box(), t.Box()
        b1.value, b2.value = b2, b1
        d = copy.deepcopy(b1)
        assert d.value.value is d and d is not b1
        d.value.value = None
        b1.value = None

    def test_subclass_dict_is_deep(self):
        s = Sub(t.Inner(1))
        s.tags = [t.Inner(2)]
        d = copy.deepcopy(s)
        assert type(d) is Sub and d.tags is not s.tags and d.tags[0] is not s.tags[0]
        assert d.tags[0].value == 2


class TestCanonical:
    """Copies are ordinary tied objects: they revive to the same id and echo back as themselves."""

    @pytest.mark.parametrize("how", [copy.copy, copy.deepcopy])
    def test_revive(self, how):
        o = how(t.Outer(t.Inner(7)))
        box = t.Box(o)
        first = id(o)
        del o
        collect()
        j = junk()
        assert id(box.value) == first and box.value.x.value == 7
        assert t.echo(box.value) is box.value
        del j

    def test_no_leak(self):
        collect()
        before = tether.stats()
        for i in range(100):
            o = t.make_shared_outer(i)
            d = copy.deepcopy(o)
            c = copy.copy(d)
            assert c.x is d.x
            del o, d, c
        collect()
        assert tether.stats() == before


@pytest.mark.skipif(sys.version_info < (3, 13), reason="copy.replace is new in 3.13")
class TestReplace:
    """copy.replace keeps every field and sets the ones named."""

    def test_replace(self):
        o = t.Outer(t.Inner(1))
        o.items = [o.x]
        r = copy.replace(o, y=t.Inner(2))
        assert r.x is o.x and r.y.value == 2 and r.items[0] is o.x
        with pytest.raises(TypeError):
            copy.replace(o, nope=1)
