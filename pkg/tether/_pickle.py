# SPDX-License-Identifier: Apache-2.0
"""Pickle and copy for every tether type, from the fields it declares (no code per type).

The work is done in C++ (``bindings/src/reduce.cpp``); ``install()`` puts its methods on
``tether.Object``:

- ``__reduce_ex__`` returns ``(tether._core._rebuild, ((cls, ctor_names), *ctor_values),
  state)`` with ``state = (state_names, *state_values)``, ``(__dict__, state_names,
  *state_values)`` when the object has a non-empty ``__dict__``, or None when empty. The
  constructor gets the fields whose names are parameters of the C++ constructor
  (``tether::init`` records the names given with ``nb::arg``), so types whose constructor
  takes arguments rebuild; ``state`` holds the other fields, the set ``__slots__`` of a
  Python subclass and its ``__dict__``. Pickle memoizes the object before it writes
  ``state``, so two fields holding one object, and cycles, come back shared: the second
  occurrence is a memo reference to the wrapper already rebuilt, which stands for one C++
  object. That is why a constructor parameter with a default whose field holds tether objects
  is left to ``state`` too: a cycle through it (``box.value = box``) still comes back. The
  ``(cls, ctor_names)`` key and the state names are the same tuples for every object of a
  type, so pickle writes them once per message (the keys are kept in a list in the class's
  own dict, ``__tether_rebuild_keys__``, so that they die with the class). A weak link (a
  ``WeakRef`` field) is a field like any other: it comes back pointing at the copy of its
  target when the target is part of what was copied, and to None if nothing in the copy
  keeps the target alive.
- A field holding a ``std::vector`` of numbers (annotated ``list[float]`` or ``list[int]``)
  of 64 items or more is read as one bytes snapshot of its memory, not as a list: with
  protocol 5 it is a ``pickle.PickleBuffer``, which pickle hands to ``buffer_callback``
  (out of band) when one is given. Loading writes the bytes back with one copy. Which fields
  are such vectors is checked once per field (the member's memory must hold the numbers its
  getter returned); a class lists fields that must travel as lists (a vector with an
  allocator of its own) in ``__tether_list_fields__``.
- ``_rebuild((cls, names), *values)`` (or ``_rebuild(cls, names, *values)``, as earlier
  versions wrote) allocates ``cls.__new__(cls)`` and runs the C++ ``__init__`` of the nearest
  bound base with ``names=values``: a new C++ object, tied to that wrapper.
- ``__setstate__`` sets each field and slot (bypassing ``__setattr__``, so a frozen
  ``@tether.dataclass`` can be restored) and updates ``__dict__``. It takes the state above
  (and ``(None, state_names, *state_values)``, as earlier versions wrote) and the
  ``(__dict__ or None, {field or slot: value})`` layout of ``__getstate__``.
- ``__copy__`` and ``__deepcopy__`` build the copy directly from the same parts (a deep copy
  keeps sharing and cycles through the memo, as ``copy.deepcopy`` does).

A subclass that overrides ``__reduce__`` is reduced by it; one that overrides
``__getstate__`` or ``__setstate__`` gets ``__getstate__()``'s value as the state (and its
copies go through ``copy``'s generic path).

``__reduce__`` (called directly; pickle uses ``__reduce_ex__``) still gives the older
``(rebuild, (cls, kwargs), state)``; ``rebuild(cls, kwargs)`` loads pickles of that form.

A type none of whose constructor overloads can be called from its fields (a parameter with
no default and no field of its name, or parameters bound without names) cannot be rebuilt
this way: pickling it raises TypeError naming it.

A Python subclass that pickle cannot find by name in another process (defined in
``__main__``, or inside a function) is named in pickles through a ``_ClassByValue``: the
receiver uses the class of that name if it has one, else makes it from its bases and body
(cloudpickle, which Dask and Ray use, cannot rebuild such a class itself: its metaclass,
nanobind's ``nb_type``, is not importable by name). Plain pickle cannot write the functions
of a class defined inside a function, so it leaves such a body out: the pickle loads in this
process and in processes forked from it; cloudpickle (seen on the stack) sends the body.
"""
import copy
import hashlib
import pickle
import sys
import types
import uuid
import weakref

from . import _core, _fields
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


def _lookup(cls, name):
    """``cls``'s attribute ``name`` as the MRO gives it (no descriptor call), or None."""
    for klass in cls.__mro__:
        if name in klass.__dict__:
            return klass.__dict__[name]
    return None


def _numeric_kind(annotation):
    """1 for ``list[float]``, 2 for ``list[int]`` (a std::vector candidate), else 0."""
    if annotation == list[float]:
        return 1
    if annotation == list[int]:
        return 2
    return 0


def _fast_layout(cls):
    """What the C++ reducer needs about ``cls`` (computed once per class and version):
    ``(constructible, init, fields, slots, class_ref, user_reduce, user_getstate,
    user_setstate, keys)``, ``fields`` a tuple of ``(name, readonly, param, has_default,
    numeric)`` (``param`` the index of the constructor parameter of that name, or -1);
    ``keys`` the list in ``cls.__dict__`` where the reducer keeps the ``(class_ref,
    ctor_names)`` tuples it hands ``_rebuild`` (the class keeps them, not a global cache), or
    None if the class cannot take one."""
    lay = _fields.layout(cls)
    params = {}
    if lay.constructible:
        for i, p in enumerate(lay.init):
            if p.name is not None and p.name in lay.fields:
                params[p.name] = (i, p.has_default)
    try:
        types_ = _fields.field_types(cls)
    except Exception:  # an annotation that does not resolve: no vector fast path
        types_ = {}
    as_lists = set()
    for klass in cls.__mro__:
        as_lists.update(klass.__dict__.get("__tether_list_fields__", ()))
    fields = []
    for name in lay.fields:
        index, has_default = params.get(name, (-1, False))
        numeric = 0 if name in as_lists else _numeric_kind(types_.get(name))
        fields.append((name, name in lay.readonly, index, has_default, numeric))
    init = lay.bound.__dict__["__init__"] if lay.constructible else None
    own = Object.__dict__
    class_ref = _class_ref(cls)
    keys = cls.__dict__.get("__tether_rebuild_keys__")
    if type(keys) is not list:
        keys = []
        try:
            setattr(cls, "__tether_rebuild_keys__", keys)
        except (AttributeError, TypeError):
            # A class that refuses it, or an allocation that failed inside (CPython 3.13+'s
            # type setattr reports that as AttributeError): a fresh key per object, uncached.
            keys = None
    else:
        keys.clear()  # a new layout (the class changed): new keys
    return (lay.constructible, init, tuple(fields), tuple(lay.slots), class_ref,
            _lookup(cls, "__reduce__") is not own["__reduce__"],
            _lookup(cls, "__getstate__") is not own["__getstate__"],
            _lookup(cls, "__setstate__") is not own["__setstate__"], keys)


# ---- classes pickle cannot name -------------------------------------------------------------

_by_value = weakref.WeakValueDictionary()  # uid -> class, made here or sent from here


def _findable(cls):
    """True if ``module.qualname`` names ``cls`` in a module other than __main__."""
    module = cls.__module__
    if module == "__main__" or "<locals>" in cls.__qualname__:
        return False
    obj = sys.modules.get(module)
    for part in cls.__qualname__.split("."):
        obj = getattr(obj, part, None)
    return obj is cls


def _class_ref(cls):
    """What a pickle names for ``cls``: ``cls`` itself, or for a Python subclass that another
    process cannot import by name, its ``_ClassByValue`` (one per class, so pickle memoizes it)."""
    if cls.__dict__.get("__init__") is not None and _fields._is_bound_init(cls.__dict__["__init__"]):
        return cls  # a bound type
    if _findable(cls):
        return cls
    spec = cls.__dict__.get("__tether_by_value__")
    if spec is None or spec.cls is not cls:
        spec = _ClassByValue(cls)
        setattr(cls, "__tether_by_value__", spec)
    return spec


_BODY_SKIP = frozenset(("__dict__", "__weakref__", "__tether_layout__", "__tether_by_value__"))


def _class_body(cls):
    """The class dict to rebuild ``cls`` from: no slot descriptors, no caches."""
    return {k: v for k, v in cls.__dict__.items()
            if k not in _BODY_SKIP
            and not isinstance(v, (types.MemberDescriptorType, types.GetSetDescriptorType))}


class _ClassByValue:
    """A Python subclass of a bound type, named in a pickle by module, qualname, bases, body
    and a uid: see ``_class_by_value``."""

    __slots__ = ("cls", "uid", "__weakref__")

    def __init__(self, cls):
        self.cls = cls
        self.uid = uuid.uuid4().hex
        _by_value[self.uid] = cls

    def __reduce__(self):
        cls = self.cls
        body = _class_body(cls)
        try:  # plain pickle names functions: a body it cannot write stays behind
            pickle.dumps(body, pickle.HIGHEST_PROTOCOL)
        except Exception:
            if not _cloudpickle_is_pickling():
                body = None
        return (_class_by_value, (cls.__module__, cls.__qualname__, cls.__name__,
                                  cls.__bases__, body, self.uid))


def _cloudpickle_is_pickling():
    """True if the pickle being written is cloudpickle's (or a vendored copy's, as Ray's), which
    writes local functions by value. What is imported does not decide: Dask imports cloudpickle
    and still pickles with plain pickle first."""
    frame = sys._getframe(1)
    while frame is not None:
        if "cloudpickle" in frame.f_globals.get("__name__", ""):
            return True
        frame = frame.f_back
    return False


def _class_by_value(module, qualname, name, bases, body, uid):
    """The class a ``_ClassByValue`` stands for: the one made or sent here under ``uid``, the
    one named ``module.qualname`` here (as pickle by reference would find it), or a new one
    made from ``bases`` and ``body`` (once per uid)."""
    if not isinstance(uid, str) or not isinstance(bases, tuple) or not bases or \
            not all(isinstance(b, type) and issubclass(b, Object) for b in bases):
        raise TypeError("tether._pickle._class_by_value: bad class description for %r"
                        % (qualname,))
    cls = _by_value.get(uid)
    if cls is not None:
        return cls
    if isinstance(module, str) and isinstance(qualname, str) and "<locals>" not in qualname:
        obj = sys.modules.get(module)
        for part in qualname.split("."):
            obj = getattr(obj, part, None)
        if isinstance(obj, type) and obj.__bases__ == bases:
            _by_value[uid] = obj
            return obj
    if not isinstance(body, dict):
        raise pickle.UnpicklingError(
            "cannot rebuild class %s.%s: it is not defined here and its body was not sent "
            "(use cloudpickle to send it)" % (module, qualname))
    ns = dict(body)
    ns["__module__"] = module
    ns["__qualname__"] = qualname
    cls = type(bases[0])(name, bases, ns)
    spec = _ClassByValue.__new__(_ClassByValue)
    spec.cls, spec.uid = cls, uid
    setattr(cls, "__tether_by_value__", spec)
    _by_value[uid] = cls
    return cls


# ---- Dask ------------------------------------------------------------------------------------

def __dask_tokenize__(self):
    """Dask's deterministic token for a tether object: a hash of its pickle (the reachable
    graph, cycle-safe, out-of-band buffers included), so equal graphs give equal tokens and
    a changed field a new one."""
    h = hashlib.sha1()
    buffers = []
    h.update(pickle.dumps(self, 5, buffer_callback=buffers.append))
    for b in buffers:
        h.update(b.raw())
    return ("tether", type(self).__module__, type(self).__qualname__, h.hexdigest())


def install():
    """Put the generic pickle/copy methods on tether.Object (once, at import of tether)."""
    Object.__reduce__ = __reduce__
    Object.__getstate__ = __getstate__
    Object.__replace__ = __replace__
    # The C++ methods (bindings/src/reduce.cpp): pickle calls __reduce_ex__, copy calls
    # __copy__ / __deepcopy__.
    Object.__reduce_ex__ = _core._object__reduce_ex__
    Object.__setstate__ = _core._object__setstate__
    Object.__copy__ = _core._object__copy__
    Object.__deepcopy__ = _core._object__deepcopy__
    Object.__dask_tokenize__ = __dask_tokenize__
