# SPDX-License-Identifier: Apache-2.0
"""The prefix header: 8 bytes, over-aligned types stay aligned, odd layouts still tie (I6)."""
import pytest

import tether
from tether import testing as t

from conftest import junk

pytestmark = pytest.mark.usefixtures("clean")


class TestHeader:
    """Size and alignment facts that the header's arithmetic relies on."""

    def test_header_is_one_word(self):
        assert tether.header_size() == 8

    @pytest.mark.parametrize("cls,align", [(t.Aligned32, 32), (t.Aligned64, 64)])
    def test_over_aligned(self, cls, align):
        objs = [cls(i) for i in range(20)]
        assert all(o.address() % align == 0 for o in objs)
        b = t.Box(objs[3])
        assert b.value is objs[3] and b.value.value == 3

    @pytest.mark.parametrize("cls", [t.Padded, t.Aligned32, t.Aligned64])
    def test_odd_layouts_park_and_revive(self, cls):
        b = t.Box(cls(7))
        first = id(b.value)
        junk(cls)
        assert id(b.value) == first and b.value.value == 7
        assert t.echo(b.value) is b.value

    def test_padded_base_before_object(self):
        p = t.Padded(3)
        assert p.value == 3 and t.use_count(p) == 1
        p.value = 4
        assert t.Box(p).value.value == 4


class TestOptOut:
    """A type declared without the header pays no header bytes and gives up identity."""

    def test_untied_gets_fresh_wrappers(self):
        u = t.Untied(3)
        b = t.Box(u)
        again = b.value
        assert again is not u and again.value == 3
        assert t.use_count(u) == 3  # b, u's wrapper, again's wrapper
        del again
        assert t.use_count(u) == 2
