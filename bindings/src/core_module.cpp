// SPDX-License-Identifier: Apache-2.0
// bindings/src/core_module.cpp: tether._core: tether.Object, move(), stats(), header_size()
#include <tether/nanobind.h>

#include "runtime_api_export.h"
#include "runtime_guard.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace tether {
void bind_reduce(nb::module_ &m); // reduce.cpp: pickle, copy and deepcopy in C++
}

namespace {

/// A concrete type used once at import to check that nanobind reads tether wrappers the way
/// tether writes them (bindings/include/tether/python.h, struct Wrapper).
struct LayoutProbe : tether::Object {
    int64_t value = 0;
};

void check_inst_layout(nb::module_ &m) {
    tether::class_<LayoutProbe, tether::Object>(m, "_LayoutProbe")
        .def(tether::init<>());
    nb::object probe = m.attr("_LayoutProbe")();
    tether::Object *ours = tether::py::object_of(probe.ptr());
    auto [ready, destruct] = nb::inst_state(probe);
    if (!ours || nb::inst_ptr<tether::Object>(probe) != ours || !ready || destruct)
        throw nb::import_error(
            "tether: nanobind's instance layout differs from the one tether was built for "
            "(see bindings/include/tether/python.h); tether needs nanobind 3.1.x");
}

} // namespace

NB_MODULE(_core, m) {
    m.doc() = "tether's extension core: the object base type and the runtime entry points";
    if (tether::py::in_subinterpreter()) // 3.11 (nanobind refuses them on 3.12+)
        throw nb::import_error(tether::py::subinterpreter_refused);
    tether::detail::module_initialized() = true; // tether::init_module() imports this module
    if (tether::py::initialize() != 0)
        throw nb::python_error();
    if (tether::py::export_runtime_api(m.ptr()) != 0) // downstream modules bind to this
        throw nb::python_error();

    // Types with a field naming a type not bound yet (tether/nanobind.h, defer_annotation).
    m.attr("_deferred_annotations") = nb::list();

    tether::class_<tether::Object>(
        m, "Object",
        "Base of every tether object: a C++ object tied to exactly one Python wrapper.\n\n"
        "While the object lives, every trip to Python yields the same wrapper (same id(), "
        "type and __dict__), even after all Python references were dropped.");

    check_inst_layout(m);

    m.def(
        "move",
        [](nb::handle obj) {
            PyTypeObject *base = tether::py_type<tether::Object>();
            if (!PyObject_TypeCheck(obj.ptr(), base))
                throw nb::type_error(("tether.move() expects a tether object, got " +
                                      std::string(Py_TYPE(obj.ptr())->tp_name))
                                         .c_str());
            if (!tether::py::object_of(obj.ptr())) {
                tether::py::raise_unusable(obj.ptr());
                throw nb::python_error();
            }
            return nb::steal(tether::py::make_move_token(obj.ptr()));
        },
        "obj"_a.none(),
        "Mark `obj` to be moved into a C++ parameter of type Ref<T>&&. The call detaches "
        "`obj` from its C++ object; using `obj` afterwards raises ValueError.");

    m.def("stats", [] { return nb::steal(tether::py::stats_dict()); },
          "Counters: live (C++ objects), bound (objects with a wrapper), shared (of those, the "
          "ones C++ also holds, whose wrapper the header keeps alive), orphaned (wrappers left "
          "behind by a finalized interpreter).");
    m.def("settle", [] { tether::py::apply_deferred(); },
          "Apply every release C++ threads handed over instead of waiting for the GIL: "
          "afterwards every wrapper C++ let go of has been released (its __del__ and weakref "
          "callbacks have run). tether does this by itself within about one GIL switch "
          "interval; call it where code needs it done now.");

    m.def("collect_cycles",
          [] {
              Py_ssize_t n = tether::py::collect_cycles();
              if (n < 0)
                  throw nb::python_error();
              return n;
          },
          "A full collection that also reclaims cycles made of C++ fields alone (a.child.parent "
          "= a with Ref both ways). Precondition: no C++ thread without the GIL copies, drops "
          "or writes tether references while it runs. Returns what gc.collect() returns.");

    m.def("header_size", [] { return tether::header_size<LayoutProbe>(); },
          "Bytes tether adds in front of an object of ordinary alignment.");

    m.def("abi_version", [] { return tether::abi_version; });

    tether::bind_reduce(m);
}
