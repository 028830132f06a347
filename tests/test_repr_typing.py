# SPDX-License-Identifier: Apache-2.0
"""repr() of tether objects, help() docstrings, type hints and the installed .pyi stubs."""
import ast
import pathlib
import pydoc
import typing

import pytest

import tether
from tether import _repr
from tether import testing as t

from conftest import collect, junk

pytestmark = pytest.mark.usefixtures("clean")

PKG = pathlib.Path(tether.__file__).parent


class Sub(t.Inner):
    """A Python subclass without its own __repr__."""


class Custom(t.Inner):
    """A Python subclass with its own __repr__."""

    def __repr__(self):
        return "<custom %d>" % self.value


class TestRepr:
    """repr() shows the type and declared fields, nests, and stops at a depth and at cycles."""

    def test_leaf_and_nested(self):
        assert repr(t.Inner(3)) == "Inner(value=3)"
        o = t.Outer(t.Inner(1), t.Inner(2))
        o.items = [o.x]
        assert repr(o) == "Outer(x=Inner(value=1), y=Inner(value=2), items=[Inner(value=1)])"
        assert repr(t.Box()) == "Box(value=None)"

    def test_depth_cut(self):
        b = t.Inner(0)
        for _ in range(10):
            b = t.Box(b)
        text = repr(b)
        assert text.count("Box(") == _repr.MAX_DEPTH + 1 and text.endswith("Box(...))))")

    def test_cycle(self):
        b1, b2 = t.Box(), t.Box()
        b1.value, b2.value = b2, b1
        assert "..." in repr(b1) and len(repr(b1)) < 200
        b1.value = None

    def test_long_list_cut(self):
        o = t.Outer()
        o.items = [t.Inner(i) for i in range(100)]
        text = repr(o)
        assert text.count("Inner(") == _repr.MAX_ITEMS and "..." in text

    def test_subclass_uses_qualname_and_own_repr_wins(self):
        assert repr(Sub(1)) == "Sub(value=1)"
        assert repr(Custom(4)) == "<custom 4>"
        assert repr(t.Box(Custom(5))) == "Box(value=<custom 5>)"

    def test_repr_does_not_disturb_identity(self):
        o = t.Outer(t.Inner(1))
        first = id(o.x)
        repr(o)
        collect()
        j = junk()
        assert id(o.x) == first
        del j

    def test_moved_and_uninitialized(self):
        i = t.Inner(1)
        t.consume(tether.move(i))
        assert repr(i) == "<Inner (moved into C++)>"
        u = t.Inner.__new__(t.Inner)
        assert repr(u) == "<Inner (uninitialized)>"

    def test_every_testing_type(self):
        for name in ("Inner", "Outer", "Box", "Padded", "Aligned32", "Aligned64", "Untied"):
            cls = getattr(t, name)
            assert repr(cls()).startswith(name + "(")


class TestHelp:
    """help() shows a docstring for each type and each declared field."""

    def test_types_and_fields(self):
        for cls in (t.Inner, t.Outer, t.Box):
            text = pydoc.render_doc(cls, renderer=pydoc.plaintext)
            assert cls.__doc__ and cls.__doc__ in text
            for name in cls.__tether_fields__:
                doc = cls.__dict__[name].__doc__
                assert doc and doc in text, (cls, name)

    def test_dataclass_fields(self):
        @tether.dataclass
        class P(tether.Object):
            """A point."""
            x: int = 0
        text = pydoc.render_doc(P, renderer=pydoc.plaintext)
        assert "A point." in text and "x: int" in text

    def test_object(self):
        assert "exactly one Python wrapper" in tether.Object.__doc__


class TestTyping:
    """Field types are visible to typing.get_type_hints."""

    def test_bound(self):
        assert typing.get_type_hints(t.Inner) == {"value": int}
        assert typing.get_type_hints(t.Outer)["items"] == list[t.Inner]

    def test_subclass_inherits(self):
        assert typing.get_type_hints(Sub) == {"value": int}


@pytest.mark.skipif(not any(PKG.glob("*.pyi")),
                    reason="built with TETHER_STUBS=OFF (the default for sanitizer builds)")
class TestStubs:
    """.pyi stubs made by nanobind's stubgen are installed next to the modules, with py.typed."""

    @pytest.mark.parametrize("mod", ["_core", "testing", "_data"])
    def test_stub_parses(self, mod):
        path = PKG / (mod + ".pyi")
        assert path.is_file(), path
        tree = ast.parse(path.read_text())
        classes = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
        expected = {"_core": {"Object"}, "testing": {"Inner", "Outer", "Box"},
                    "_data": {"DataObject"}}[mod]
        assert expected <= classes

    def test_py_typed(self):
        assert (PKG / "py.typed").is_file()

    def test_fields_are_typed(self):
        text = (PKG / "testing.pyi").read_text()
        assert "getset_descriptor" not in text
        assert "value: int" in text and "def __init__(self, value: int = 0) -> None" in text


class TestReadme:
    """The README's Python examples run as written."""

    def test_intro_example(self):
        import re
        readme = (pathlib.Path(__file__).parent.parent / "README.md").read_text()
        code = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
        assert "assert id(o.x) == first" in code
        ns = {"__name__": "readme_intro"}
        exec(compile(code, "README.md", "exec"), ns)
        ns.clear()
        collect()

    def test_example(self):
        import re
        readme = (pathlib.Path(__file__).parent.parent / "README.md").read_text()
        section = readme[readme.index("## Pickle, dataclasses and weak references"):]
        code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
        bad = 'box.value.x = "one"'
        assert bad in code
        code = code.replace(bad, "pass")
        ns = {"__name__": "readme_example"}
        exec(compile(code, "README.md", "exec"), ns)
        with pytest.raises(TypeError, match="Point.x: expected int, got str"):
            ns["box"].value.x = "one"
        ns.clear()
        collect()
