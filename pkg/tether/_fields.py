# SPDX-License-Identifier: Apache-2.0
"""Reading the fields a tether type declares: the metadata pickle, copy, dataclasses and repr use.

Bindings declare each field once, in C++, with ``def_field``: the class gets a getset
descriptor, and its own ``__tether_fields__`` (names, in declaration order) and
``__annotations__`` (types) record it. ``@tether.dataclass`` types record theirs the same way.
Annotations are read through ``_annotations.own_annotations`` (PEP 649 on 3.14+). Nothing here
knows any particular type.
"""
import ast
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


class Layout:
    """What pickle, copy and repr need to know about one class, computed once per class."""

    __slots__ = ("fields", "slots", "bound", "constructible")

    def __init__(self, cls):
        self.fields = field_names(cls)
        self.slots = tuple(slot_names(cls))
        self.bound = bound_base(cls)
        self.constructible = self.bound is not None and default_constructible(self.bound)


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
    """One parameter of a bound ``__init__``, read from its nanobind signature."""

    __slots__ = ("name", "has_default", "default")

    def __init__(self, name, has_default, default):
        self.name, self.has_default, self.default = name, has_default, default


_NO_VALUE = object()


def _split_top_level(text):
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _parse_default(text, defaults):
    if text.startswith("\\") and text[1:].isdigit():
        index = int(text[1:])
        if defaults is not None and index < len(defaults):
            return defaults[index]
        return _NO_VALUE
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return _NO_VALUE


def _parse_signature(sig, defaults):
    """Params of one nanobind overload ``def __init__(self, a: T = \\0, ...) -> None``."""
    open_at = sig.find("(")
    depth, close_at = 0, -1
    for i in range(open_at, len(sig)):
        depth += sig[i] in "([{"
        depth -= sig[i] in ")]}"
        if depth == 0:
            close_at = i
            break
    if open_at < 0 or close_at < 0:
        return None
    params = []
    for part in _split_top_level(sig[open_at + 1:close_at])[1:]:  # [0] is self
        if part in ("*", "/"):
            continue
        if part.startswith("*"):
            params.append(Param(part, True, _NO_VALUE))  # *args / **kwargs need nothing
            continue
        head, eq, tail = part.partition("=")
        name = head.split(":", 1)[0].strip()
        if eq:
            params.append(Param(name, True, _parse_default(tail.strip(), defaults)))
        else:
            params.append(Param(name, False, _NO_VALUE))
    return params


_init_cache = weakref.WeakKeyDictionary()


def init_overloads(bound):
    """The overloads of a bound type's C++ ``__init__``: a list of Param lists."""
    try:
        return _init_cache[bound]
    except KeyError:
        pass
    overloads = []
    init = bound.__dict__.get("__init__")
    for entry in getattr(init, "__nb_signature__", ()):
        sig, defaults = entry[0], entry[2] if len(entry) > 2 else None
        params = _parse_signature(sig, defaults)
        if params is not None:
            overloads.append(params)
    _init_cache[bound] = overloads
    return overloads


def default_constructible(bound):
    """True if the C++ ``__init__`` of ``bound`` can run with no arguments."""
    return any(all(p.has_default for p in params) for params in init_overloads(bound))


def no_value():
    """The marker for "no default known" in Param.default."""
    return _NO_VALUE


def is_tether_type(cls):
    return isinstance(cls, type) and issubclass(cls, Object)
