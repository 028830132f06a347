# SPDX-License-Identifier: Apache-2.0
"""tether: C++ objects tied to exactly one Python wrapper.

A tether object reaches Python as the same wrapper every time while its C++ object lives:
``a.x is a.x``, ``id()`` is stable across dropping and re-fetching, and a Python subclass
instance stored in C++ comes back with its attributes.
"""
from ._core import Object, abi_version, collect_cycles, header_size, move, settle, stats

Object.__module__ = "tether"

# The Python layer (pickle, copy, dataclasses, repr), generic over every type's declared fields.
from . import _dataclass_support, _pickle, _repr  # noqa: E402
from ._datatype import dataclass  # noqa: E402

_pickle.install()
_repr.install()
_dataclass_support.install()

__all__ = ["Object", "abi_version", "collect_cycles", "dataclass", "header_size", "move", "settle", "stats"]
__version__ = "0.1.0"
