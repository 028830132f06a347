# SPDX-License-Identifier: Apache-2.0
"""A newcomer's first model: Document -> Section -> Paragraph, types that refer to each other.

tether.testing binds them in the "wrong" order (Paragraph's fields name Section, bound after
it; Section's name Document, bound last: bindings/src/testing_document.cpp), with strong links
down (Ref, vector, optional, map), weak links up (WeakRef), constructors with arguments and a
virtual overridden in Python. The module imports, every annotation names the right type, and
identity, pickle and the stubs hold.
"""
import copy
import dataclasses
import gc
import pickle
import typing
import weakref
from pathlib import Path

import pytest

import tether
from tether import testing as t

from conftest import collect

pytestmark = pytest.mark.usefixtures("clean")


def make_document():
    doc = t.Document("Guide")
    intro, usage = t.Section("Intro"), t.Section("Usage")
    doc.add(intro)
    doc.add(usage)
    for text in ("one", "two"):
        intro.add(t.Paragraph(text))
    usage.add(t.Paragraph("three"))
    doc.cover = intro
    return doc


class TestAnnotations:
    def test_every_field_names_its_type(self):
        hints = typing.get_type_hints(t.Paragraph)
        assert hints["section"] == typing.Optional[t.Section]
        assert hints["see_also"] == typing.Optional[t.Section]
        hints = typing.get_type_hints(t.Section)
        assert hints["paragraphs"] == list[t.Paragraph]
        assert hints["slots"] == list[typing.Optional[t.Paragraph]]
        assert hints["anchors"] == dict[str, t.Paragraph]
        assert hints["weights"] == list[float]
        assert hints["document"] == typing.Optional[t.Document]
        hints = typing.get_type_hints(t.Document)
        assert hints["sections"] == list[t.Section]
        assert hints["cover"] == typing.Optional[t.Section]
        assert hints["index"] == dict[str, t.Section]

    def test_nothing_left_pending(self):
        for cls in (t.Paragraph, t.Section, t.Document):
            assert cls.__dict__.get("__tether_pending__", {}) == {}
        assert tether._core._deferred_annotations == []

    def test_docstrings_and_dataclass_fields_name_the_types(self):
        assert t.Section.paragraphs.__doc__ == "paragraphs: list[Paragraph]"
        assert t.Document.cover.__doc__ == "cover: Section | None"
        fields = {f.name: f.type for f in dataclasses.fields(t.Section)}
        assert fields["document"] == typing.Optional[t.Document]

    def test_default_base_is_tether_object(self):
        # tether::class_<Section>(m, "Section") names no base: tether.Object is the base.
        assert t.Section.__mro__[1:] == (tether.Object, object)


class TestIdentity:
    def test_links_are_the_same_wrappers(self):
        doc = make_document()
        intro = doc.sections[0]
        assert intro is doc.sections[0] is doc.cover is doc.index["Intro"]
        para = intro.paragraphs[0]
        assert para.section is intro and intro.document is doc
        assert t.first_paragraph(doc) is para

    def test_id_survives_dropping_every_python_reference(self):
        class Noted(t.Paragraph):
            pass

        doc = make_document()
        para = Noted("noted")
        para.note = "kept"
        doc.sections[0].add(para)
        first = id(para)
        del para
        collect()
        keep = [Noted("") for _ in range(64)]  # same-size junk: a reused block cannot fake id()
        para = doc.sections[0].paragraphs[-1]
        assert id(para) == first and type(para) is Noted and para.note == "kept"
        assert para.section is doc.sections[0]
        del keep

    def test_weak_parent_link_ends_with_the_parent(self):
        doc = make_document()
        para = doc.sections[0].paragraphs[0]
        section = para.section
        ref = weakref.ref(section)
        del section
        doc.sections = []
        doc.cover = None
        doc.index = {}
        collect()
        assert ref() is None and para.section is None

    def test_python_override_is_called_from_cpp(self):
        class Loud(t.Paragraph):
            def render(self):
                return self.text.upper()

        doc = make_document()
        doc.sections[1].add(Loud("shout"))
        assert doc.render().splitlines() == ["Guide", "# Intro", "one", "two", "# Usage",
                                             "three", "SHOUT"]


class TestNoneInContainers:
    def test_refused_in_a_vector_of_ref(self):
        section = t.Section("s")
        with pytest.raises(TypeError, match=r"Section\.paragraphs: expected list\[Paragraph\], "
                                            r"got None at index 1.*std::optional"):
            section.paragraphs = [t.Paragraph("a"), None]
        assert section.paragraphs == []

    def test_refused_in_a_map_of_ref(self):
        doc = t.Document("d")
        with pytest.raises(TypeError, match=r"Document\.index: .*got None for key 'x'"):
            doc.index = {"x": None}

    def test_refused_in_a_vector_argument(self):
        with pytest.raises(TypeError, match="incompatible function arguments"):
            t.paragraph_count([t.Paragraph("a"), None])
        assert t.paragraph_count([t.Paragraph("a")]) == 1

    def test_accepted_where_the_items_are_optional(self):
        section = t.Section("s")
        p = t.Paragraph("a")
        section.slots = [None, p]
        assert section.slots == [None, p] and section.slots[1] is p

    def test_ref_field_itself_stays_nullable(self):
        para = t.Paragraph("a")
        para.see_also = None
        para.section = None
        assert para.see_also is None and para.section is None


class TestPickleAndCopy:
    @pytest.mark.parametrize("protocol", [2, 5])
    def test_round_trip_keeps_sharing_and_weak_links(self, protocol):
        doc = make_document()
        doc2 = pickle.loads(pickle.dumps(doc, protocol=protocol))
        intro = doc2.sections[0]
        assert intro is doc2.cover is doc2.index["Intro"]
        assert intro.document is doc2
        assert all(p.section is intro for p in intro.paragraphs)
        assert doc2.render() == doc.render()

    def test_deepcopy(self):
        doc = make_document()
        doc2 = copy.deepcopy(doc)
        assert doc2.sections[0] is not doc.sections[0]
        assert doc2.sections[0].paragraphs[0].section is doc2.sections[0]

    def test_repr_ends_at_weak_back_links(self):
        text = repr(make_document())
        assert text.startswith("Document(title='Guide', sections=[Section(title='Intro'")
        assert len(text) < 5000


def _stub_text():
    """tether.testing's stub: next to the installed module, or in the build's stubs/."""
    here = Path(t.__file__).with_name("testing.pyi")
    if here.is_file():
        return here.read_text()
    pytest.skip("tether.testing has no installed .pyi next to it (a build without stubs)")


class TestStubs:
    def test_stub_types_the_fields(self):
        text = _stub_text()
        for line in ("section: Section | None", "paragraphs: list[Paragraph]",
                     "slots: list[Paragraph | None]", "document: Document | None",
                     "index: dict[str, Section]"):
            assert line in text, line
