# SPDX-License-Identifier: Apache-2.0
"""@tether.dataclass types with bare forward references, for tests/test_annotations.py.

Importable on Python 3.14+ only (PEP 649: annotations are evaluated lazily, so naming a class
that is not defined yet is no NameError). Not a test module: pytest does not collect it.
"""
import tether
from tether import testing as t


@tether.dataclass
class Node(tether.Object):
    """Self-referential without quotes: ``Node`` is not bound yet when the decorator runs."""

    value: int = 0
    left: Node | None = None
    child: t.Inner | None = None


@tether.dataclass
class Early(tether.Object):
    """``Later`` is defined below: when the decorator runs it cannot be resolved."""

    later: Later | None = None
    count: int = 0


@tether.dataclass
class Later(tether.Object):
    value: int = 0
