# SPDX-License-Identifier: Apache-2.0
"""``repr()`` for every tether object: its type and declared fields, nested up to a depth.

``Outer(x=Inner(value=1), y=Inner(value=1), items=[])``. Below ``MAX_DEPTH`` levels, and for
an object already being printed (a cycle), a tether object prints as ``Inner(...)``; lists
longer than ``MAX_ITEMS`` are cut with ``...``. A Python subclass that defines its own
``__repr__`` keeps it, here and when nested. An object moved into C++ (tether.move) prints as
``<Inner (moved into C++)>``. Depth and cycles are counted across containers too: a tether
object inside a dict, a set or any other value printed with its own ``repr`` continues the
count of the object being printed (a weak parent link back through a ``dict`` field ends).
"""
import threading

from . import _fields
from ._core import Object

_printing = threading.local()  # (depth, active) of the repr under way on this thread

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
    outer = getattr(_printing, "state", None)
    _printing.state = (depth, active)  # a tether object inside continues from here
    try:
        return repr(value)
    finally:
        _printing.state = outer


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
    state = getattr(_printing, "state", None)
    if state is not None:  # inside a container another tether object's repr is printing
        depth, active = state
        _printing.state = None
        try:
            return _format(self, depth, active)
        finally:
            _printing.state = state
    return _format(self, 0, set())


def install():
    """Put the generic ``__repr__`` on tether.Object (once, at import of tether)."""
    Object.__repr__ = __repr__
