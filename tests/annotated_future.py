# SPDX-License-Identifier: Apache-2.0
"""@tether.dataclass types under ``from __future__ import annotations`` (every annotation is a
string), for tests/test_annotations.py. Not a test module: pytest does not collect it."""
from __future__ import annotations

import dataclasses

import tether
from tether import testing as t


@tether.dataclass
class Point(tether.Object):
    x: int
    y: float = 0.0
    child: t.Inner | None = None
    tags: list[str] = dataclasses.field(default_factory=list)


@tether.dataclass
class Node(tether.Object):
    """Self-referential without quotes: the class's own name is bound when the strings resolve."""

    value: int = 0
    left: Node | None = None


@tether.dataclass
class Early(tether.Object):
    """``Later`` is defined below: when the decorator runs it cannot be resolved."""

    later: Later | None = None
    count: int = 0


@tether.dataclass
class Later(tether.Object):
    value: int = 0
