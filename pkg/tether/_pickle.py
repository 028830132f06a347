# SPDX-License-Identifier: Apache-2.0
"""Pickle and copy for every tether type, from the fields it declares (no code per type).

``install()`` puts four generic methods on ``tether.Object``:

- ``__reduce__`` returns ``(rebuild, (cls, kwargs), state)``. ``kwargs`` holds the fields
  whose names are parameters of the C++ constructor (``tether::init`` records the names given
  with ``nb::arg``), so types whose constructor takes arguments rebuild; ``state`` holds the
  other fields. Pickle memoizes the object before it writes ``state``, so two fields holding
  one object, and cycles, come back shared: the second occurrence is a memo reference to the
  wrapper already rebuilt, which stands for one C++ object. That is why a constructor
  parameter with a default whose field holds tether objects is left to ``state`` too: a cycle
  through it (``box.value = box``) still comes back. ``copy.copy`` and ``copy.deepcopy`` use
  the same triple. A weak link (a ``WeakRef`` field) is a field like any other: it comes back
  pointing at the copy of its target when the target is part of what was copied, and to None
  if nothing in the copy keeps the target alive.
- ``rebuild(cls, kwargs)`` allocates ``cls.__new__(cls)`` and runs the C++ ``__init__`` of
  the nearest bound base with ``kwargs``: a new C++ object, tied to that wrapper.
- ``__getstate__`` gives ``(__dict__ or None, {field or slot: value})``, the layout pickle
  and copy use for objects with slots. A subclass may override it (and ``__setstate__``).
- ``__setstate__`` sets each field and slot with ``object.__setattr__``, so a frozen
  ``@tether.dataclass`` can be restored, and updates ``__dict__``.

A type none of whose constructor overloads can be called from its fields (a parameter with
no default and no field of its name, or parameters bound without names) cannot be rebuilt
this way: pickling it raises TypeError naming it.
"""
import copy

from . import _fields
from ._core import Object

def _pickle_base(cls):
    """The bound base whose ``__init__`` rebuilds ``cls``; TypeError if there is none."""
    lay = _fields.layout(cls)
    bound = lay.bound
    if not lay.constructible:
        if bound is None:
            why = "it has no constructor"
        elif not _fields.init_overloads(bound):
            why = ("its C++ constructor (%s.__init__) was not bound with tether::init"
                   % bound.__qualname__)
        else:
            why = ("its C++ constructor (%s.__init__) needs arguments that are not fields of "
                   "the same name (name them with nb::arg)" % bound.__qualname__)
        raise TypeError("cannot pickle %r object: tether rebuilds a %s by calling its bound "
                        "__init__ with the fields named like its parameters, and %s"
                        % (cls.__qualname__, cls.__qualname__, why))
    return bound


def _holds_objects(value):
    """True if ``value`` is a tether object or a list, tuple or dict holding one."""
    if isinstance(value, Object):
        return True
    if type(value) in (list, tuple):
        return any(isinstance(v, Object) for v in value)
    if type(value) is dict:
        return any(isinstance(v, Object) for v in value.values())
    return False


def _constructor_kwargs(self, lay):
    """The fields passed to the constructor (see the module docstring)."""
    kwargs = {}
    for p in lay.init:
        if p.name is None or p.name not in lay.fields:
            continue  # its default
        value = getattr(self, p.name)  # ValueError here if self was moved into C++
        if p.has_default and _holds_objects(value) and p.name not in lay.readonly:
            continue  # set with the state, after pickle memoized the object
        kwargs[p.name] = value
    return kwargs


def rebuild(cls, kwargs=None):
    """Pickle's constructor for tether objects: a fresh object of ``cls``, made by its C++
    constructor with ``kwargs`` (fields named like its parameters)."""
    if not _fields.is_tether_type(cls):
        raise TypeError("tether._pickle.rebuild: %r is not a tether type" % (cls,))
    bound = _pickle_base(cls)
    if kwargs is not None and not isinstance(kwargs, dict):
        raise TypeError("tether._pickle.rebuild: constructor arguments must be a dict, got %s"
                        % type(kwargs).__name__)
    obj = cls.__new__(cls)
    bound.__init__(obj, **(kwargs or {}))
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
    """(tether._pickle.rebuild, (type(self), kwargs), state): generic for every type."""
    cls = type(self)
    _pickle_base(cls)
    lay = _fields.layout(cls)
    kwargs = _constructor_kwargs(self, lay)
    state = self.__getstate__()
    if type(state) is tuple and len(state) == 2 and type(state[1]) is dict:
        # What the constructor was given, and read-only fields, are not set again.
        skip = lay.readonly.union(kwargs)
        if skip & state[1].keys():
            state = (state[0], {k: v for k, v in state[1].items() if k not in skip})
    return (rebuild, (cls, kwargs), state)


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
