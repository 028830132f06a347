# SPDX-License-Identifier: Apache-2.0
"""``dataclasses`` support for bound tether types, made from the fields they declare in C++.

``tether.Object`` carries two lazy class attributes, ``__dataclass_fields__`` and
``__dataclass_params__``. Looked up on a bound type (or a Python subclass of one) that
declares fields, they build, once per class, what ``@dataclasses.dataclass`` would have
stored: one ``dataclasses.Field`` per declared field (its type from ``__annotations__``, its
default and ``init`` flag from the parameters ``tether::init`` recorded). So ``dataclasses.fields``,
``asdict``, ``astuple``, ``replace`` and ``is_dataclass`` work on them. A class that declares no
field (``tether.Object`` itself) is not a dataclass: the attributes raise AttributeError.

``dataclasses.replace(obj, ...)`` calls ``type(obj)(**changes)`` with the fields whose
``init`` flag is set, so a field the constructor does not take (``Outer.items``) starts
empty in the result, as for any dataclass field declared with ``init=False``;
``copy.replace`` (Python 3.13+) keeps every field.
"""
import dataclasses
import typing
import weakref

from . import _fields
from ._core import Object


@dataclasses.dataclass(eq=False)
class _Params:
    """Only here for its __dataclass_params__ (init, repr, no eq, not frozen)."""


_PARAMS = _Params.__dataclass_params__
_cache = weakref.WeakKeyDictionary()


def _make_field(name, annotation, param):
    if param is not None and param.has_default and param.default is not _fields.no_value():
        f = dataclasses.field(default=param.default, init=True)
    else:
        f = dataclasses.field(init=param is not None)
    f.name = name
    f.type = annotation
    f._field_type = dataclasses._FIELD  # what dataclasses.fields() keeps
    return f


def ensure(cls):
    """``cls``'s ``{name: dataclasses.Field}``, built on first use; None if it declares none."""
    try:
        return _cache[cls]
    except KeyError:
        pass
    names = _fields.field_names(cls)
    result = None
    if names:
        types = _fields.field_types(cls)
        bound = _fields.bound_base(cls)
        overloads = _fields.init_overloads(bound) if bound is not None else []
        params = {p.name: p for p in overloads[0]} if overloads else {}
        result = {n: _make_field(n, types.get(n, typing.Any), params.get(n)) for n in names}
    _cache[cls] = result
    return result


class _LazyClassAttribute:
    """A class attribute computed per class (and per subclass) on lookup."""

    def __init__(self, attr, make):
        self.attr, self.make = attr, make

    def __get__(self, obj, cls=None):
        cls = type(obj) if cls is None else cls
        value = self.make(cls)
        if value is None:
            raise AttributeError("%s declares no tether fields, so it has no %s"
                                 % (cls.__qualname__, self.attr))
        return value


def install():
    """Put the lazy dataclass attributes on tether.Object (once, at import of tether)."""
    Object.__dataclass_fields__ = _LazyClassAttribute("__dataclass_fields__", ensure)
    Object.__dataclass_params__ = _LazyClassAttribute(
        "__dataclass_params__", lambda cls: _PARAMS if ensure(cls) else None)
