// SPDX-License-Identifier: Apache-2.0
// bindings/src/testing_module.cpp: tether.testing, the types the test suite (and bug reports) use
#include <tether/nanobind.h>
#include <nanobind/stl/optional.h>

#include <optional>
#include <thread>

namespace nb = nanobind;
using namespace nb::literals;
using tether::make_object;
using tether::Object;
using tether::Ref;

namespace tt {

struct Inner : Object {
    int64_t value;
    explicit Inner(int64_t v = 0) : value(v) {}
};

struct Outer : Object {
    Ref<Inner> x, y;
    std::vector<Ref<Inner>> items;
    Outer(Ref<Inner> x_, Ref<Inner> y_) : x(std::move(x_)), y(std::move(y_)) {}
};

struct Box : Object {
    Ref<Object> value;
    explicit Box(Ref<Object> v) : value(std::move(v)) {}
};

/// Layout trap: a polymorphic base before Object, so that (T*) != (Object*).
struct PadBase {
    virtual ~PadBase() = default;
    int64_t pad = 0x7e7e7e7e;
};
struct Padded : PadBase, Object {
    int64_t value;
    explicit Padded(int64_t v = 0) : value(v) {}
};

struct alignas(32) Aligned32 : Object {
    int64_t value;
    explicit Aligned32(int64_t v = 0) : value(v) {}
};
struct alignas(64) Aligned64 : Object {
    int64_t value;
    explicit Aligned64(int64_t v = 0) : value(v) {}
};

/// Opted out of the header: no identity, no header bytes.
struct Untied : Object {
    static constexpr bool tether_header = false;
    int64_t value;
    explicit Untied(int64_t v = 0) : value(v) {}
};

} // namespace tt

void bind_lifetime_types(nb::module_ &m); // testing_lifetime.cpp

NB_MODULE(testing, m) {
    using namespace tt;
    m.doc() = "Types and functions for tether's tests, benchmarks and bug reports";
    tether::init_module();
    bind_lifetime_types(m);

    tether::class_<Inner, Object>(m, "Inner", "A leaf object holding one int.")
        .def(tether::init<int64_t>(), "value"_a = 0)
        .def_field("value", &Inner::value, "The int payload.");

    tether::class_<Outer, Object>(m, "Outer", "Holds two Inner objects and a list of them.")
        .def(tether::init<Ref<Inner>, Ref<Inner>>(), "x"_a.none() = nb::none(),
             "y"_a.none() = nb::none())
        .def_field("x", &Outer::x, "First child (Inner or None).")
        .def_field("y", &Outer::y, "Second child (Inner or None).")
        .def_field("items", &Outer::items, "Children as a list, stored as std::vector<Ref<Inner>>.");

    tether::class_<Box, Object>(m, "Box", "Holds any tether object.")
        .def(tether::init<Ref<Object>>(), "value"_a.none() = nb::none())
        .def_field("value", &Box::value, "The boxed object (any tether.Object, or None).");

    tether::class_<Padded, Object>(m, "Padded", "Inner-like, with a base class before Object.")
        .def(tether::init<int64_t>(), "value"_a = 0)
        .def_field("value", &Padded::value);
    tether::class_<Aligned32, Object>(m, "Aligned32", "Inner-like, alignas(32).")
        .def(tether::init<int64_t>(), "value"_a = 0)
        .def_field("value", &Aligned32::value)
        .def("address", [](Aligned32 &a) { return (uintptr_t) &a; });
    tether::class_<Aligned64, Object>(m, "Aligned64", "Inner-like, alignas(64).")
        .def(tether::init<int64_t>(), "value"_a = 0)
        .def_field("value", &Aligned64::value)
        .def("address", [](Aligned64 &a) { return (uintptr_t) &a; });
    tether::class_<Untied, Object>(m, "Untied", "Inner-like, opted out of the header.")
        .def(tether::init<int64_t>(), "value"_a = 0)
        .def_field("value", &Untied::value);

    m.def("echo", [](Ref<Object> o) { return o; }, "obj"_a,
          "Return the same object through C++.");
    m.def("echo_inner", [](Inner *o) { return o; }, "obj"_a, "Return an Inner through Inner*.");
    m.def("call", [](nb::callable fn, Ref<Object> o) { return fn(o); }, "fn"_a, "obj"_a,
          "Call fn(obj) from C++ and return its result.");
    m.def("consume", [](Ref<Object> &&o) { Ref<Object> mine(std::move(o)); return mine.use_count(); },
          "obj"_a, "Take the object over (pass tether.move(x)); returns the strong count seen.");
    m.def("use_count", [](Object &o) { return o.use_count(); }, "obj"_a,
          "The C++ strong count of obj (the live wrapper holds one).");
    m.def("release_in_thread",
          [](Box &box) {
              Ref<Object> taken;
              taken.swap(box.value);
              nb::gil_scoped_release no_gil;
              std::thread t([r = std::move(taken)]() mutable { r.reset(); });
              t.join();
          },
          "box"_a, "Drop box.value's C++ reference on a std::thread without the GIL.");
    m.def("make_inner", [](int64_t v) { return make_object<Inner>(v); }, "value"_a,
          "An Inner made in C++ (Python has no wrapper for it yet).");
    m.def("make_shared_outer",
          [](int64_t v) {
              Ref<Inner> in = make_object<Inner>(v);
              return make_object<Outer>(in, in);
          },
          "value"_a, "An Outer whose x and y are the same Inner.");
    m.def("optional_x", [](Outer &o) -> std::optional<Ref<Inner>> {
              if (!o.x) return std::nullopt;
              return o.x;
          }, "outer"_a);
    m.def("as_list", [](Outer &o) { return std::vector<Ref<Inner>>{o.x, o.y}; }, "outer"_a);
    m.def("cast_x", [](Outer &o) { return nb::cast(o.x); }, "outer"_a, "outer.x through nb::cast.");
    m.def("rewrap_x",
          [](Outer &o, nb::type_object cls) {
              PyTypeObject *tp = reinterpret_cast<PyTypeObject *>(cls.ptr());
              if (!o.x || !PyType_IsSubtype(tp, tether::py_type<Inner>()))
                  throw nb::type_error("rewrap_x: outer.x must be set and cls a subclass of Inner");
              return nb::steal(tether::py::wrap_slow(o.x.get(), tp));
          },
          "outer"_a, "cls"_a,
          "outer.x wrapped from C++ with `cls` as the type a fresh wrapper would get.");
    m.def("keep_until_exit",
          [](Ref<Object> o) {
              // Released by static destruction, after the interpreter has finalized.
              static std::vector<Ref<Object>> *kept = [] {
                  static std::vector<Ref<Object>> v;
                  return &v;
              }();
              kept->push_back(std::move(o));
          },
          "obj"_a, "Keep a C++ reference until the process exits (after Py_Finalize).");
    m.def("make_in_thread",
          [](int64_t n) {
              nb::gil_scoped_release no_gil;
              std::thread t([n] {
                  for (int64_t i = 0; i < n; ++i)
                      make_object<Inner>(i);
              });
              t.join();
          },
          "n"_a, "Create and drop n objects on a C++ thread without the GIL.");
}
