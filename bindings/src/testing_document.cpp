// SPDX-License-Identifier: Apache-2.0
// bindings/src/testing_document.cpp: tether.testing's document model, a newcomer's first model
//
// Document -> Section -> Paragraph: strong links down (Ref, vector, optional, map), weak links
// up (WeakRef), a constructor with arguments, a virtual a Python subclass overrides. The types
// refer to each other, and they are bound in the "wrong" order (Paragraph first, whose field
// names Section, bound next; Section's names Document, bound last): a field's annotation
// names a type bound later is resolved when that type is bound (fields.h, "annotations").
#include <tether/nanobind.h>
#include <tether/trampoline.h>
#include <nanobind/stl/map.h>
#include <nanobind/stl/optional.h>

#include <chrono>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace nb = nanobind;
using namespace nb::literals;
using tether::make_object;
using tether::Object;
using tether::Ref;
using tether::WeakRef;

namespace tt {

// [doc-document-structs]
struct Section;
struct Document;

struct Paragraph : Object {
    std::string text;
    WeakRef<Section> section;            // the parent: a weak link, so no cycle through C++
    std::optional<Ref<Section>> see_also; // a link to another section, or None
    explicit Paragraph(std::string t = "") : text(std::move(t)) {}
    virtual std::string render() const { return text; }
};
struct PyParagraph : Paragraph { // the trampoline: Python subclasses override render()
    TETHER_TRAMPOLINE(Paragraph);
    std::string render() const override { TETHER_OVERRIDE(render); }
};

struct Section : Object {
    std::string title;
    std::vector<Ref<Paragraph>> paragraphs;            // never holds None
    std::vector<std::optional<Ref<Paragraph>>> slots;  // may hold None
    std::map<std::string, Ref<Paragraph>> anchors;
    std::vector<double> weights;
    WeakRef<Document> document;
    explicit Section(std::string t = "") : title(std::move(t)) {}
};

struct Document : Object {
    std::string title;
    std::vector<Ref<Section>> sections;
    std::optional<Ref<Section>> cover;
    std::map<std::string, Ref<Section>> index;
    explicit Document(std::string t = "") : title(std::move(t)) {}
};
// [doc-document-structs-end]

/// Adds p to s (strong) and links p back to s (weak).
void add_paragraph(Section &s, Ref<Paragraph> p) {
    if (!p)
        throw nb::type_error("Section.add(): paragraph must not be None");
    p->section = WeakRef<Section>(&s);
    s.paragraphs.push_back(std::move(p));
}
void add_section(Document &d, Ref<Section> s) {
    if (!s)
        throw nb::type_error("Document.add(): section must not be None");
    s->document = WeakRef<Document>(&d);
    d.index[s->title] = s;
    d.sections.push_back(std::move(s));
}

/// Renders every paragraph through the vtable (Python overrides count). Dereferences every
/// element: a null Ref in `paragraphs` would crash here, which is why the field refuses None.
std::string render(const Document &d) {
    std::string out = d.title;
    for (const Ref<Section> &s : d.sections) {
        out += "\n# " + s->title;
        for (const Ref<Paragraph> &p : s->paragraphs)
            out += "\n" + p->render();
    }
    return out;
}

} // namespace tt

void bind_document_types(nb::module_ &m) {
    using namespace tt;
    // [doc-document-binding]
    tether::class_<Paragraph, Object, PyParagraph>(m, "Paragraph", "A paragraph of a Section.")
        .def(tether::init<std::string>(), "text"_a = "")
        .def_field("text", &Paragraph::text)
        .def_field("section", &Paragraph::section, "The Section holding it (weak), or None.")
        .def_field("see_also", &Paragraph::see_also, "Another Section, or None.")
        .def("render", &Paragraph::render, "The paragraph as text; override it in Python.");

    tether::class_<Section>(m, "Section", "A titled list of paragraphs.") // base: tether.Object
        .def(tether::init<std::string>(), "title"_a = "")
        .def_field("title", &Section::title)
        .def_field("paragraphs", &Section::paragraphs)
        .def_field("slots", &Section::slots)
        .def_field("anchors", &Section::anchors)
        .def_field("weights", &Section::weights)
        .def_field("document", &Section::document, "The Document holding it (weak), or None.")
        .def("add", &add_paragraph, "paragraph"_a, "Append a paragraph and link it back here.");

    tether::class_<Document>(m, "Document", "A titled list of sections.")
        .def(tether::init<std::string>(), "title"_a = "")
        .def_field("title", &Document::title)
        .def_field("sections", &Document::sections)
        .def_field("cover", &Document::cover)
        .def_field("index", &Document::index)
        .def("add", &add_section, "section"_a, "Append a section and link it back here.")
        .def("render", &render, "Every paragraph's render(), through C++.");
    // [doc-document-binding-end]
    m.def("first_paragraph", [](Document &d) -> Ref<Paragraph> {
              if (d.sections.empty() || d.sections[0]->paragraphs.empty())
                  return {};
              return d.sections[0]->paragraphs[0];
          },
          "doc"_a, "The first paragraph of the first section, through C++ (or None).");
    m.def("start_render_storm",
          [](Ref<Paragraph> p, int threads, int64_t millis) {
              // Detached std::threads calling p->render() (a Python override, if p's class
              // has one) in a loop for `millis` ms: the script may end meanwhile.
              for (int i = 0; i < threads; ++i)
                  std::thread([p, millis] {
                      auto end = std::chrono::steady_clock::now() +
                                 std::chrono::milliseconds(millis);
                      while (std::chrono::steady_clock::now() < end) {
                          try {
                              (void) p->render();
                          } catch (...) {
                          }
                      }
                  }).detach();
          },
          "paragraph"_a, "threads"_a, "millis"_a,
          "Detached std::threads calling paragraph.render() through C++ for millis ms.");
    m.def("paragraph_count", [](const std::vector<Ref<Paragraph>> &ps) { return ps.size(); },
          "paragraphs"_a, "len(paragraphs), through a std::vector<Ref<Paragraph>> argument.");
}
