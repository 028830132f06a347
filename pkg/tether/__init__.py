# SPDX-License-Identifier: Apache-2.0
"""tether: C++ objects tied to exactly one Python wrapper.

A tether object reaches Python as the same wrapper every time while its C++ object lives:
``a.x is a.x``, ``id()`` is stable across dropping and re-fetching, and a Python subclass
instance stored in C++ comes back with its attributes.
"""
from ._core import Object, abi_version, header_size, move, stats

Object.__module__ = "tether"

__all__ = ["Object", "abi_version", "header_size", "move", "stats"]
__version__ = "0.1.0"
