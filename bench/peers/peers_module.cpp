// SPDX-License-Identifier: Apache-2.0
// bench/peers/peers_module.cpp: tether._peers, plain-nanobind baselines for tether's benchmark
//
// Built by the package's own CMake with the same flags as tether's modules, so that a ratio
// taken in `python -m tether.bench` compares bindings, not compilers. Nothing here uses tether.
//
//   RefInner / RefOuter     "nb-ref": Outer owns its Inner (unique_ptr); `x` is a def_prop_ro
//                           returning RefInner* with rv_policy::reference_internal. A wrapper
//                           lives only while Python holds it (nanobind's inst_c2p map finds it).
//   IntrInner / IntrOuter   "nb-intrusive": Inner derives from nb::intrusive_base; Outer holds an
//                           nb::ref<IntrInner>. Once wrapped, C++ counts become Python counts, so
//                           the wrapper is pinned for as long as C++ holds the object.
//   Plain                   a plain nanobind class: __init__(int) (construction baseline) and a
//                           def_rw int field (int-read baseline).
//   Boxed                   Plain with its value in a heap block of its own (a unique_ptr
//                           member): what a second allocation adds to a nanobind construction,
//                           the layout tether's objects have (their block outlives the wrapper).
//   echo(RefInner*)         a nanobind function returning RefInner*: the borrowed `T*` echo
//                           (the wrapper found again in nanobind's instance map).
//   echo_ref(nb::ref<IntrInner>)  the owning echo: takes and returns nb::ref<IntrInner>
//                           (a count of the C++ object taken and dropped, the wrapper found
//                           through intrusive_base's self_py).
#include <nanobind/nanobind.h>
#include <nanobind/intrusive/counter.h>
#include <nanobind/intrusive/ref.h>
// The intrusive counter's out-of-line part: compiled in exactly one TU of the module.
#include <nanobind/intrusive/counter.inl>

#include <cstdint>
#include <memory>

namespace nb = nanobind;
using namespace nb::literals;

namespace peers {

struct RefInner {
    int64_t value;
};
struct RefOuter {
    std::unique_ptr<RefInner> x;
    explicit RefOuter(int64_t v) : x(new RefInner{v}) {}
};

struct IntrInner : nb::intrusive_base {
    int64_t value;
    explicit IntrInner(int64_t v) : value(v) {}
};
struct IntrOuter {
    nb::ref<IntrInner> x;
    explicit IntrOuter(int64_t v) : x(new IntrInner(v)) {}
};

struct Plain {
    int64_t value;
};

struct Boxed {
    std::unique_ptr<Plain> box;
};

/// The Python half of the intrusive counter: C++ inc/dec_ref on a wrapped object become
/// Python reference count changes (the GIL may not be held by the caller).
void install_intrusive_hooks() {
    nb::intrusive_init(
        [](PyObject *o) noexcept {
            nb::gil_scoped_acquire gil;
            Py_INCREF(o);
        },
        [](PyObject *o) noexcept {
            nb::gil_scoped_acquire gil;
            Py_DECREF(o);
        });
}

} // namespace peers

NB_MODULE(_peers, m) {
    using namespace peers;
    m.doc() = "Plain-nanobind baselines for python -m tether.bench (not part of tether's API)";
    m.attr("nanobind_version") =
        nb::make_tuple(NB_VERSION_MAJOR, NB_VERSION_MINOR, NB_VERSION_PATCH);
    install_intrusive_hooks();

    nb::class_<RefInner>(m, "RefInner")
        .def("__init__", [](RefInner *self, int64_t v) { new (self) RefInner{v}; }, "value"_a)
        .def_rw("value", &RefInner::value);
    nb::class_<RefOuter>(m, "RefOuter")
        .def(nb::init<int64_t>(), "value"_a)
        .def_prop_ro("x", [](RefOuter &o) { return o.x.get(); }, nb::rv_policy::reference_internal);

    nb::class_<IntrInner>(
        m, "IntrInner",
        nb::intrusive_ptr<IntrInner>(
            [](IntrInner *o, PyObject *py) noexcept { o->set_self_py(py); }))
        .def(nb::init<int64_t>(), "value"_a)
        .def_rw("value", &IntrInner::value);
    nb::class_<IntrOuter>(m, "IntrOuter")
        .def(nb::init<int64_t>(), "value"_a)
        .def_ro("x", &IntrOuter::x);

    nb::class_<Plain>(m, "Plain")
        .def("__init__", [](Plain *self, int64_t v) { new (self) Plain{v}; }, "value"_a)
        .def_rw("value", &Plain::value);

    nb::class_<Boxed>(m, "Boxed")
        .def("__init__",
             [](Boxed *self, int64_t v) { new (self) Boxed{std::make_unique<Plain>(Plain{v})}; },
             "value"_a)
        .def_prop_ro("value", [](const Boxed &b) { return b.box->value; });

    m.def("echo", [](RefInner *p) { return p; }, "obj"_a, nb::rv_policy::reference,
          "Return the same RefInner through RefInner* (a lookup in nanobind's instance map).");
    m.def("echo_ref", [](nb::ref<IntrInner> p) { return p; }, "obj"_a,
          "Return the same IntrInner through nb::ref<IntrInner> (owning: counts the object).");
}
