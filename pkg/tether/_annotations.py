# SPDX-License-Identifier: Apache-2.0
"""A class's own annotations, read through the API each CPython version documents.

The only place in tether that knows how annotations are stored:

- **3.14 and newer** (PEP 649, PEP 749): a class body stores an ``__annotate__`` function, not
  an ``__annotations__`` dict, and assigning ``cls.__annotations__`` (what tether's C++
  ``class_`` does for bound types) stores the dict under ``__annotations_cache__``: either way
  ``cls.__dict__`` has no ``"__annotations__"``. ``annotationlib.get_annotations`` reads both.
  It is asked for ``Format.FORWARDREF``, as ``dataclasses`` does: a name not defined yet (a
  class further down the module, or the class itself while a decorator runs) comes back as an
  ``annotationlib.ForwardRef`` instead of raising ``NameError``.
- **3.11 to 3.13**: ``inspect.get_annotations``, the class's own ``__annotations__`` dict.

Under ``from __future__ import annotations`` (and for annotations written as strings) every
version gives strings. :func:`resolve` turns a string or a ``ForwardRef`` into the object it
names, with the class's own name bound, so ``left: "Node | None"`` inside ``Node`` works.
"""
import sys
import typing



def resolve_pending(cls):
    """Resolve the fields of ``cls`` whose annotation named a type not bound yet.

    A C++ field (``def_field``) whose type is bound later, in the same module or in another
    one, is annotated with a forward reference (a string of the C++ names) and listed in the
    class's own ``__tether_pending__``: each entry is a function that writes the real
    annotation once its type exists and removes itself. Types of the same module are
    resolved when the module binds them; this catches types bound by a module imported later.
    """
    pending = cls.__dict__.get("__tether_pending__")
    if pending:
        for resolve in list(pending.values()):
            resolve()


if sys.version_info >= (3, 14):
    import annotationlib

    _ForwardRef = annotationlib.ForwardRef

    def own_annotations(cls):
        """``{name: annotation}`` declared by ``cls`` itself (never a base), as a new dict.

        Never raises ``NameError``: names not defined yet come back as ``ForwardRef``."""
        resolve_pending(cls)
        return annotationlib.get_annotations(cls, format=annotationlib.Format.FORWARDREF)

else:
    import inspect

    _ForwardRef = ()  # strings only: nothing makes a ForwardRef here before 3.14

    def own_annotations(cls):
        """``{name: annotation}`` declared by ``cls`` itself (never a base), as a new dict."""
        resolve_pending(cls)
        return dict(inspect.get_annotations(cls))


def resolve(cls, annotation, default=typing.Any):
    """The object ``annotation`` (of a field of ``cls``) names; ``default`` if it cannot.

    A string is evaluated in the module of ``cls`` with ``cls``'s own name bound. A
    ``ForwardRef`` (3.14+) goes through its own ``evaluate``, which also sees the enclosing
    function's variables the annotation closed over, with the class namespace (what
    ``evaluate`` uses by default for a class) plus the class's own name as locals. Anything
    else is returned as is.
    """
    if isinstance(annotation, str):
        module = sys.modules.get(cls.__module__)
        try:
            return eval(annotation, vars(module) if module else {}, {cls.__name__: cls})
        except Exception:
            return default
    if isinstance(annotation, _ForwardRef):
        try:
            return annotation.evaluate(owner=cls, locals={**vars(cls), cls.__name__: cls})
        except Exception:
            return default
    return annotation
