# SPDX-License-Identifier: Apache-2.0
"""``@tether.dataclass``: a dataclass declared in Python whose instances are tether objects.

    @tether.dataclass
    class Point(tether.Object):
        x: int
        y: float = 0.0
        child: Inner | None = None

The class is rebased onto ``tether._data.DataObject`` (a C++ type: one Value per field, in
a block with a header, so it is tied like any bound type), processed by
``dataclasses.dataclass`` for ``__init__``, ``__eq__``, ``frozen``, ``order``, default
factories and ``__match_args__``, and then each field becomes a C++ getset descriptor that
checks what is assigned (``int``, ``float``, ``bool``, ``str``, a tether type, each optionally
``| None``; other annotations store the Python object, checked with isinstance when the
annotation is a class). ``repr()`` is tether's own (depth-limited).

Annotations are read and resolved when the decorator runs (``_annotations``: PEP 649 on 3.14+,
strings under ``from __future__ import annotations``), with the class's own name bound, so
``left: Node | None`` inside ``Node`` is checked. A name that is not defined yet at that point
(a class further down the module) cannot be checked: that field stores any Python object,
as for ``typing.Any``.

Limits: a DataObject reaching Python again after ``tether.move`` (its wrapper gone) comes back
as a plain DataObject; Python objects stored in fields are not seen by the cycle GC.
"""
import dataclasses
import functools
import types
import typing

from . import _annotations, _fields
from ._core import Object
from ._data import DataObject, is_initialized, slot

_ANY, _INT, _FLOAT, _BOOL, _STR, _OBJECT = range(6)
_KINDS = {int: _INT, float: _FLOAT, bool: _BOOL, str: _STR}
_UNIONS = (typing.Union,) + ((types.UnionType,) if hasattr(types, "UnionType") else ())


def _name(tp):
    if isinstance(tp, type):
        return tp.__qualname__
    return repr(tp).replace("typing.", "")


def _is_class(tp):
    """True for a class isinstance() accepts (typing.Any is a class since 3.11, but refuses)."""
    return isinstance(tp, type) and tp is not typing.Any


def _classify(tp):
    """(kind, nullable, check, expected) for annotation ``tp`` (already resolved)."""
    nullable = False
    if typing.get_origin(tp) in _UNIONS:
        args = typing.get_args(tp)
        nullable = type(None) in args
        rest = tuple(a for a in args if a is not type(None))
        if len(rest) == 1:
            tp = rest[0]
        else:
            classes = tuple(typing.get_origin(a) or a for a in rest)
            ok = all(_is_class(c) for c in classes)
            return (_ANY, nullable, classes if ok else None,
                    " | ".join(_name(a) for a in rest) + (" | None" if nullable else ""))
    expected = _name(tp) + (" | None" if nullable else "")
    if tp in _KINDS:
        return _KINDS[tp], nullable, None, expected
    if isinstance(tp, type) and issubclass(tp, Object):
        return _OBJECT, nullable, tp, expected
    origin = typing.get_origin(tp)
    if _is_class(tp) and tp is not type(None):
        return _ANY, nullable, tp, expected
    if isinstance(origin, type):
        return _ANY, nullable, origin, expected
    return _ANY, True, None, expected  # Any, TypeVar, Literal, unresolved names: unchecked


def _fix_class_cells(old, new):
    """Point zero-argument ``super()`` in the methods of a rebased class at the new class."""
    for value in new.__dict__.values():
        funcs = [getattr(value, "__func__", value)]
        if isinstance(value, property):
            funcs = [value.fget, value.fset, value.fdel]
        for f in funcs:
            code, cells = getattr(f, "__code__", None), getattr(f, "__closure__", None)
            if code is None or not cells:
                continue
            for name, cell in zip(code.co_freevars, cells):
                if name == "__class__" and cell.cell_contents is old:
                    cell.cell_contents = new


def _rebase(cls):
    """``cls`` derives from tether.Object: the same class, deriving from DataObject instead."""
    if Object not in cls.__bases__:
        raise TypeError("@tether.dataclass: %s must derive from tether.Object directly or from "
                        "another @tether.dataclass type" % cls.__qualname__)
    bases = tuple(DataObject if b is Object else b for b in cls.__bases__)
    ns = dict(cls.__dict__)
    slots = ns.get("__slots__", ())
    for name in ("__dict__", "__weakref__") + ((slots,) if isinstance(slots, str) else tuple(slots)):
        ns.pop(name, None)
    new = type(cls)(cls.__name__, bases, ns)
    new.__qualname__ = cls.__qualname__
    _fix_class_cells(cls, new)
    return new


def _check_base(cls):
    if not _fields.is_tether_type(cls):
        raise TypeError("@tether.dataclass: %s must derive from tether.Object" % cls.__qualname__)
    bound = _fields.bound_base(cls)
    if bound not in (None, DataObject):
        raise TypeError("@tether.dataclass: %s derives from the bound type %s, whose fields "
                        "live in its own C++ class; derive from tether.Object or from another "
                        "@tether.dataclass type" % (cls.__qualname__, bound.__qualname__))
    return cls if bound is DataObject else _rebase(cls)


def _mask_inherited_descriptors(cls):
    # A field redeclared without a default would otherwise see the base's descriptor as its
    # default; a bare dataclasses.field() says "no default" (dataclasses removes it again).
    for name in _annotations.own_annotations(cls):
        if name not in cls.__dict__ and name in getattr(cls, "__tether_slot_index__", {}):
            setattr(cls, name, dataclasses.field())


def _install_slots(cls):
    index = dict(getattr(cls, "__tether_slot_index__", {}))
    own = _annotations.own_annotations(cls)
    declared = []
    for f in dataclasses.fields(cls):
        if f.name not in index:
            index[f.name] = len(index)
        if f.name not in own:
            continue  # inherited: the base's descriptor serves it at the same index
        kind, nullable, check, expected = _classify(_annotations.resolve(cls, f.type))
        doc = f.metadata.get("doc") or "%s: %s" % (f.name, expected)
        setattr(cls, f.name, slot(cls, f.name, index[f.name], kind, nullable, check, expected, doc))
        declared.append(f.name)
    cls.__tether_slot_index__ = index
    cls.__tether_slot_count__ = len(index)
    cls.__tether_fields__ = tuple(declared)
    _fields.forget(cls)


def _sets_a_field(f):
    return f.init or f.default is not dataclasses.MISSING or \
        f.default_factory is not dataclasses.MISSING


def _wrap_init(cls, generated):
    """Make sure ``__init__`` makes the C++ object before anything reads a field.

    A field write on an uninitialized wrapper makes it (data_object.cpp, data_for_write), so
    the ``__init__`` dataclasses generated needs nothing when it sets at least one field. Any
    other ``__init__`` is wrapped to make the object first.
    """
    init = cls.__dict__.get("__init__")
    if init is None:
        return
    if generated and any(_sets_a_field(f) for f in dataclasses.fields(cls)):
        return

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        if not is_initialized(self):
            DataObject.__init__(self)  # the C++ object, with type(self)'s slot count
        init(self, *args, **kwargs)

    __init__.__doc__ = init.__doc__ or "Make the C++ object, then set its fields."
    cls.__init__ = __init__


_T = typing.TypeVar("_T")


# For type checkers: dataclass_transform (PEP 681) makes them synthesize __init__ from the
# fields as for dataclasses.dataclass (`Point(1, 2.0)` against `x: int; y: float = 0.0`), and
# read frozen/order/kw_only from the call; the overloads give both spellings their types.
@typing.overload
def dataclass(cls: type[_T], /) -> type[_T]: ...
@typing.overload
def dataclass(*, init: bool = True, repr: bool = True, eq: bool = True, order: bool = False,
              unsafe_hash: bool = False, frozen: bool = False, match_args: bool = True,
              kw_only: bool = False) -> typing.Callable[[type[_T]], type[_T]]: ...
@typing.dataclass_transform(field_specifiers=(dataclasses.field, dataclasses.Field))
def dataclass(cls=None, /, *, init=True, repr=True, eq=True, order=False, unsafe_hash=False,
              frozen=False, match_args=True, kw_only=False):
    """Like ``dataclasses.dataclass``, for a class deriving from ``tether.Object``: instances
    are C++ objects with one typed slot per field, tied to one wrapper. ``repr`` is tether's."""

    def wrap(cls):
        cls = _check_base(cls)
        _mask_inherited_descriptors(cls)
        cls = dataclasses.dataclass(cls, init=init, repr=False, eq=eq, order=order,
                                    unsafe_hash=unsafe_hash, frozen=frozen,
                                    match_args=match_args, kw_only=kw_only)
        _install_slots(cls)
        _wrap_init(cls, generated=init)
        return cls

    return wrap if cls is None else wrap(cls)
