# SPDX-License-Identifier: Apache-2.0
"""``repr()`` for every tether object: its type and declared fields, nested up to a depth.

``Outer(x=Inner(value=1), y=Inner(value=1), items=[])``. Below ``MAX_DEPTH`` levels, and for
an object already being printed (a cycle), a tether object prints as ``Inner(...)``; lists
longer than ``MAX_ITEMS`` are cut with ``...``. A Python subclass that defines its own
``__repr__`` keeps it, here and when nested. An object moved into C++ (tether.move) prints as
``<Inner (moved into C++)>``.
"""
from . import _fields
from ._core import Object

MAX_DEPTH = 3
MAX_ITEMS = 8


def _value(value, depth, active):
    if isinstance(value, Object) and type(value).__repr__ is __repr__:
        return _format(value, depth, active)
    if type(value) in (list, tuple) and any(isinstance(v, Object) for v in value):
        items = [_value(v, depth, active) for v in value[:MAX_ITEMS]]
        if len(value) > MAX_ITEMS:
            items.append("...")
        if type(value) is tuple:
            return "(%s%s)" % (", ".join(items), "," if len(value) == 1 else "")
        return "[%s]" % ", ".join(items)
    return repr(value)


def _format(obj, depth, active):
    name = type(obj).__qualname__
    names = _fields.layout(type(obj)).fields
    if id(obj) in active or (depth >= MAX_DEPTH and names):
        return "%s(...)" % name
    active.add(id(obj))
    try:
        parts = []
        for field in names:
            try:
                value = getattr(obj, field)
            except ValueError as e:  # moved into C++, or never initialized
                return "<%s (%s)>" % (name, "moved into C++" if "moved" in str(e)
                                      else "uninitialized")
            parts.append("%s=%s" % (field, _value(value, depth + 1, active)))
        return "%s(%s)" % (name, ", ".join(parts))
    finally:
        active.discard(id(obj))


def __repr__(self):
    """Type and declared fields, nested tether objects down to MAX_DEPTH levels."""
    return _format(self, 0, set())


def install():
    """Put the generic ``__repr__`` on tether.Object (once, at import of tether)."""
    Object.__repr__ = __repr__
