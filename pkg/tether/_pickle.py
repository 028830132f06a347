# SPDX-License-Identifier: Apache-2.0
"""Pickle and copy for every tether type, from the fields it declares (no code per type).

``install()`` puts four generic methods on ``tether.Object``:

- ``__reduce__`` returns ``(rebuild, (cls,), state)``. Pickle memoizes the object before it
  writes ``state``, so two fields holding one object, and cycles, come back shared: the
  second occurrence is a memo reference to the wrapper already rebuilt, which stands for
  one C++ object. ``copy.copy`` and ``copy.deepcopy`` use the same triple.
- ``rebuild(cls)`` allocates ``cls.__new__(cls)`` and runs the C++ ``__init__`` of the
  nearest bound base with no arguments: a new C++ object, tied to that wrapper.
- ``__getstate__`` gives ``(__dict__ or None, {field or slot: value})``, the layout pickle
  and copy use for objects with slots. A subclass may override it (and ``__setstate__``).
- ``__setstate__`` sets each field and slot with ``object.__setattr__``, so a frozen
  ``@tether.dataclass`` can be restored, and updates ``__dict__``.

A type whose C++ ``__init__`` needs arguments cannot be rebuilt this way: pickling it raises
TypeError naming it.
"""
import copy

from . import _fields
from ._core import Object

def _pickle_base(cls):
    """The bound base whose no-argument ``__init__`` rebuilds ``cls``; TypeError if none."""
    lay = _fields.layout(cls)
    bound = lay.bound
    if not lay.constructible:
        why = ("it has no constructor" if bound is None else
               "its C++ constructor (%s.__init__) needs arguments" % bound.__qualname__)
        raise TypeError("cannot pickle %r object: tether rebuilds a %s by calling its bound "
                        "__init__ with no arguments, and %s"
                        % (cls.__qualname__, cls.__qualname__, why))
    return bound


def rebuild(cls):
    """Pickle's constructor for tether objects: a fresh object of ``cls`` with default fields."""
    if not _fields.is_tether_type(cls):
        raise TypeError("tether._pickle.rebuild: %r is not a tether type" % (cls,))
    bound = _pickle_base(cls)
    obj = cls.__new__(cls)
    bound.__init__(obj)
    return obj


def __getstate__(self):
    """(__dict__ or None, {field or slot: value}): every declared field, then set slots."""
    lay = _fields.layout(type(self))
    values = {}
    for name in lay.fields:
        values[name] = getattr(self, name)  # ValueError here if self was moved into C++
    for name in lay.slots:
        try:
            values[name] = object.__getattribute__(self, name)
        except AttributeError:
            pass  # an unset slot stays unset
    try:
        d = object.__getattribute__(self, "__dict__")
    except AttributeError:
        d = None
    return (d or None, values)


def __setstate__(self, state):
    """Restore what __getstate__ gave: fields and slots, then __dict__ (frozen types too)."""
    if isinstance(state, tuple) and len(state) == 2:
        d, values = state
    elif state is None or isinstance(state, dict):
        d, values = state, None
    else:
        raise TypeError("%s.__setstate__: expected (dict or None, dict), got %s"
                        % (type(self).__qualname__, type(state).__name__))
    if values is not None:
        if not isinstance(values, dict):
            raise TypeError("%s.__setstate__: field values must be a dict, got %s"
                            % (type(self).__qualname__, type(values).__name__))
        for name, value in values.items():
            object.__setattr__(self, name, value)
    if d:
        if not isinstance(d, dict):
            raise TypeError("%s.__setstate__: __dict__ state must be a dict, got %s"
                            % (type(self).__qualname__, type(d).__name__))
        object.__getattribute__(self, "__dict__").update(d)


def __reduce__(self):
    """(tether._pickle.rebuild, (type(self),), self.__getstate__()): generic for every type."""
    cls = type(self)
    _pickle_base(cls)
    return (rebuild, (cls,), self.__getstate__())


def __replace__(self, **changes):
    """``copy.replace(obj, **changes)`` (Python 3.13+): a shallow copy with some fields set."""
    names = _fields.layout(type(self)).fields
    for name in changes:
        if name not in names:
            raise TypeError("%s has no field %r" % (type(self).__qualname__, name))
    new = copy.copy(self)
    for name, value in changes.items():
        setattr(new, name, value)
    return new


def install():
    """Put the generic pickle/copy methods on tether.Object (once, at import of tether)."""
    Object.__reduce__ = __reduce__
    Object.__getstate__ = __getstate__
    Object.__setstate__ = __setstate__
    Object.__replace__ = __replace__
