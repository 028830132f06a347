# SPDX-License-Identifier: Apache-2.0
"""Reading the fields a tether type declares: the metadata pickle, copy, dataclasses and repr use.

Bindings declare each field once, in C++, with ``def_field``: the class gets a getset
descriptor, and its own ``__tether_fields__`` (names, in declaration order) and
``__annotations__`` (types) record it. ``@tether.dataclass`` types record theirs the same way.
Annotations are read through ``_annotations.own_annotations`` (PEP 649 on 3.14+). Nothing here
knows any particular type.
"""
import weakref

from . import _annotations
from ._core import Object


def _is_bound_init(f):
    """True for an ``__init__`` defined in C++ through nanobind (an ``nanobind.nb_method``)."""
    tp = type(f)
    return tp.__name__ == "nb_method" and tp.__module__ == "nanobind"


def field_names(cls):
    """Every declared field of ``cls``, base classes first, each name once."""
    names = []
    for klass in reversed(cls.__mro__):
        for name in klass.__dict__.get("__tether_fields__", ()):
            if name not in names:
                names.append(name)
    return tuple(names)


def field_types(cls):
    """``{name: annotation}`` for the declared fields of ``cls`` (the nearest declaration wins)."""
    types = {}
    for klass in reversed(cls.__mro__):
        own = klass.__dict__.get("__tether_fields__", ())
        if not own:
            continue
        ann = _annotations.own_annotations(klass)
        for name in own:
            if name in ann:
                types[name] = ann[name]
    return types


def bound_base(cls):
    """The nearest class in ``cls.__mro__`` whose ``__init__`` is bound in C++ (or None).

    Its ``__init__`` makes the C++ object; a Python subclass only adds Python state.
    """
    for klass in cls.__mro__:
        if _is_bound_init(klass.__dict__.get("__init__")):
            return klass
    return None


def slot_names(cls):
    """Names of the ``__slots__`` of ``cls`` and its bases that hold Python state."""
    names = []
    for klass in cls.__mro__:
        slots = klass.__dict__.get("__slots__", ())
        if isinstance(slots, str):
            slots = (slots,)
        for name in slots:
            if name in ("__dict__", "__weakref__"):
                continue
            if name.startswith("__") and not name.endswith("__"):
                name = "_%s%s" % (klass.__name__.lstrip("_"), name)
            if name not in names:
                names.append(name)
    return names


def readonly_names(cls):
    """Declared fields of ``cls`` that have no setter (``def_field_ro``)."""
    names = set()
    for klass in cls.__mro__:
        names.update(klass.__dict__.get("__tether_readonly__", ()))
    return names


class Layout:
    """What pickle, copy and repr need to know about one class, computed once per class.

    ``init`` is the constructor overload rebuilding uses (a list of Param, see
    ``rebuild_params``), or None when no overload can be called from the fields.
    """

    __slots__ = ("fields", "slots", "bound", "readonly", "init", "constructible")

    def __init__(self, cls):
        self.fields = field_names(cls)
        self.slots = tuple(slot_names(cls))
        self.bound = bound_base(cls)
        self.readonly = frozenset(readonly_names(cls))
        self.init = rebuild_params(self.bound, self.fields) if self.bound is not None else None
        self.constructible = self.init is not None


def layout(cls):
    """The Layout of ``cls``, cached in the class's own ``__dict__`` (never inherited)."""
    lay = cls.__dict__.get("__tether_layout__")
    if lay is None:
        lay = Layout(cls)
        setattr(cls, "__tether_layout__", lay)
    return lay


def forget(cls):
    """Drop the cached Layout of ``cls`` (after its fields changed)."""
    if "__tether_layout__" in cls.__dict__:
        delattr(cls, "__tether_layout__")


class Param:
    """One parameter of a bound ``__init__``, as ``tether::init`` recorded it."""

    __slots__ = ("name", "has_default", "default")

    def __init__(self, name, has_default, default):
        self.name, self.has_default, self.default = name, has_default, default


_NO_VALUE = object()
_init_cache = weakref.WeakKeyDictionary()


def init_overloads(bound):
    """The overloads of a bound type's C++ ``__init__``: a list of Param lists.

    ``tether::init`` records them in the type's own ``__tether_init__`` (one tuple per
    overload, ``(name,)`` or ``(name, default)`` per parameter, name None when the binding
    gave no ``nb::arg``); a type whose ``__init__`` was bound otherwise records none.
    """
    try:
        return _init_cache[bound]
    except KeyError:
        pass
    overloads = []
    for entry in bound.__dict__.get("__tether_init__", ()):
        overloads.append([Param(p[0], len(p) > 1, p[1] if len(p) > 1 else _NO_VALUE)
                          for p in entry])
    _init_cache[bound] = overloads
    return overloads


def rebuild_params(bound, fields):
    """The first overload whose every parameter is a field of the same name or has a default
    (what pickle and copy call to rebuild an object), or None."""
    names = set(fields)
    for params in init_overloads(bound):
        if all(p.has_default or (p.name is not None and p.name in names) for p in params):
            return params
    return None


def default_constructible(bound):
    """True if the C++ ``__init__`` of ``bound`` can run with no arguments."""
    return any(all(p.has_default for p in params) for params in init_overloads(bound))


def no_value():
    """The marker for "no default known" in Param.default."""
    return _NO_VALUE


def is_tether_type(cls):
    return isinstance(cls, type) and issubclass(cls, Object)
