// SPDX-License-Identifier: Apache-2.0
// bindings/src/testing_module.cpp: tether.testing, the types the test suite (and bug reports) use
#include <tether/nanobind.h>
#include <nanobind/stl/map.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/tuple.h>

#include <exception>
#include <map>
#include <optional>
#include <thread>

namespace nb = nanobind;
using namespace nb::literals;
using tether::make_object;
using tether::Object;
using tether::Ref;
using tether::WeakRef;

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

// ---- Binding real C++ types: every field kind, weak links, overrides (tests/test_fields.py,
// tests/test_trampoline.py) ---------------------------------------------------------------

// [doc-node-struct]
enum class Color { red, green, blue };

/// A plain value struct bound with nb::class_ (not a tether type): fields of this type are
/// returned by reference.
struct Transform {
    double x = 0, y = 0, scale = 1;
};

/// One type with a field of each kind, a weak parent link and a virtual function.
struct Node : Object {
    std::string name;
    std::vector<double> weights;
    std::optional<Ref<Inner>> extra;
    std::map<std::string, int64_t> counts;
    Color color = Color::red;
    Transform transform;
    WeakRef<Node> parent;
    std::vector<Ref<Node>> children;

    Node(std::string n, std::vector<double> w, Color c)
        : name(std::move(n)), weights(std::move(w)), color(c) {}
    virtual std::string greet(const std::string &who) const { return name + " greets " + who; }
    virtual int64_t weight_count() const { return (int64_t) weights.size(); }
};
struct PyNode : Node {
    TETHER_TRAMPOLINE(Node);
    std::string greet(const std::string &who) const override { TETHER_OVERRIDE(greet, who); }
    int64_t weight_count() const override { TETHER_OVERRIDE(weight_count); }
};
// [doc-node-struct-end]

/// Abstract: area() must come from a Python subclass.
struct Shape : Object {
    virtual ~Shape() = default;
    virtual double area() const = 0;
    virtual std::string kind() const { return "shape"; }
};
struct PyShape : Shape {
    TETHER_TRAMPOLINE(Shape);
    double area() const override { TETHER_OVERRIDE_PURE(area); }
    std::string kind() const override { TETHER_OVERRIDE(kind); }
};

/// Runs fn on a std::thread that does not hold the GIL, `times` times; returns the results
/// (exceptions are rethrown on the calling thread).
template <typename R, typename F> std::vector<R> run_in_thread(int64_t times, F fn) {
    std::vector<R> out;
    std::exception_ptr error;
    {
        nb::gil_scoped_release no_gil;
        std::thread t([&] {
            try {
                for (int64_t i = 0; i < times; ++i)
                    out.push_back(fn());
            } catch (...) {
                error = std::current_exception();
            }
        });
        t.join();
    }
    if (error)
        std::rethrow_exception(error);
    return out;
}

} // namespace tt

void bind_lifetime_types(nb::module_ &m); // testing_lifetime.cpp
void bind_document_types(nb::module_ &m); // testing_document.cpp
void bind_override_types(nb::module_ &m); // testing_overrides.cpp
void bind_thread_types(nb::module_ &m);   // testing_threads.cpp
void bind_cycle_types(nb::module_ &m);    // testing_cycles.cpp
void bind_vector_types(nb::module_ &m);   // testing_vectors.cpp

static void bind_value_types(nb::module_ &m) {
    using namespace tt;
    nb::enum_<Color>(m, "Color", "An enum field's type.")
        .value("red", Color::red)
        .value("green", Color::green)
        .value("blue", Color::blue);

    nb::class_<Transform>(m, "Transform", "A nanobind-bound value struct (not a tether type).")
        .def(nb::init<double, double, double>(), "x"_a = 0.0, "y"_a = 0.0, "scale"_a = 1.0)
        .def_rw("x", &Transform::x)
        .def_rw("y", &Transform::y)
        .def_rw("scale", &Transform::scale)
        .def("__eq__",
             [](const Transform &a, nb::handle b) {
                 if (!nb::isinstance<Transform>(b))
                     return false;
                 const Transform &o = nb::cast<const Transform &>(b);
                 return a.x == o.x && a.y == o.y && a.scale == o.scale;
             })
        .def("__repr__",
             [](const Transform &t) {
                 return "Transform(x=" + nb::cast<std::string>(nb::repr(nb::float_(t.x))) +
                        ", y=" + nb::cast<std::string>(nb::repr(nb::float_(t.y))) +
                        ", scale=" + nb::cast<std::string>(nb::repr(nb::float_(t.scale))) + ")";
             })
        .def("__getstate__", [](const Transform &t) { return nb::make_tuple(t.x, t.y, t.scale); })
        .def("__setstate__", [](Transform &t, std::tuple<double, double, double> s) {
            new (&t) Transform{std::get<0>(s), std::get<1>(s), std::get<2>(s)};
        });
}

static void bind_real_types(nb::module_ &m) {
    using namespace tt;
    // Loaded a second time (tests/test_misuse.py): nanobind refuses to add enum values twice,
    // so the plain nanobind types of the first load are reused as they are.
    if (nb::handle color = nb::type<Color>(); color.is_valid()) {
        m.attr("Color") = color;
        m.attr("Transform") = nb::type<Transform>();
    } else
        bind_value_types(m);

    // [doc-node-binding]
    tether::class_<Node, Object, PyNode>(
        m, "Node", "A field of every kind, a weak parent link and virtuals Python may override.")
        .def(tether::init<std::string, std::vector<double>, Color>(), "name"_a = "",
             "weights"_a = std::vector<double>{}, "color"_a = Color::red)
        .def("greet", &Node::greet, "who"_a, "The virtual: '<name> greets <who>' in C++.")
        .def_field_ro("name", &Node::name, "Read-only: set by the constructor.")
        .def_field("weights", &Node::weights, "std::vector<double>.")
        .def("weight_count", &Node::weight_count) // chaining in any order
        .def_field("extra", &Node::extra, "std::optional<Ref<Inner>>.")
        .def_field("counts", &Node::counts, "std::map<std::string, int64_t>.")
        .def_field("color", &Node::color, "An enum.")
        .def_field("transform", &Node::transform, "A bound value struct, returned by reference.")
        .def_field("parent", &Node::parent, "WeakRef<Node>: a weak link (no cycle through C++).")
        .def_field("children", &Node::children, "std::vector<Ref<Node>>.")
        .def_static("kinds", [] { return 8; }, "How many field kinds Node shows.")
        .def_prop_ro("child_count", [](const Node &n) { return n.children.size(); });
    // [doc-node-binding-end]

    tether::class_<Shape, Object, PyShape>(m, "Shape", "Abstract: area() is pure virtual.")
        .def(tether::init<>())
        .def("area", &Shape::area)
        .def("kind", &Shape::kind);

    // [doc-node-calls]
    m.def("call_greet", [](const Node &n, const std::string &who) { return n.greet(who); },
          "node"_a, "who"_a, "node.greet(who), called from C++ through the vtable.");
    m.def("call_weight_count", [](const Node &n) { return n.weight_count(); }, "node"_a);
    m.def("call_greet_in_thread",
          [](Ref<Node> n, const std::string &who, int64_t times) {
              return run_in_thread<std::string>(times, [&] { return n->greet(who); });
          },
          "node"_a, "who"_a, "times"_a = 1,
          "node.greet(who) on a std::thread without the GIL (the trampoline takes it).");
    m.def("greet_children",
          [](Ref<Node> root, const std::string &who, bool in_thread) {
              // The root and a copy of its list are held: a Python override of greet may
              // reassign root.children, or move root away, while we iterate.
              std::vector<Ref<Node>> children = root->children;
              auto greet_all = [&] {
                  std::vector<std::string> out;
                  for (const Ref<Node> &c : children)
                      out.push_back(c->greet(who));
                  return out;
              };
              if (!in_thread)
                  return greet_all();
              return run_in_thread<std::vector<std::string>>(1, greet_all)[0];
          },
          "root"_a, "who"_a, "in_thread"_a = false,
          "greet(who) of each of root's children, called by C++ (on a std::thread without the "
          "GIL if in_thread): the children never pass through Python on the way.");
    // [doc-node-calls-end]
    m.def("call_area", [](const Shape &s) { return s.area(); }, "shape"_a);
    m.def("call_kind", [](const Shape &s) { return s.kind(); }, "shape"_a);
    m.def("call_area_in_thread",
          [](Ref<Shape> s, int64_t times) {
              return run_in_thread<double>(times, [&] { return s->area(); });
          },
          "shape"_a, "times"_a = 1);
    m.def("parent_of", [](const Node &n) { return n.parent; }, "node"_a,
          "WeakRef<Node> as a result: the parent, or None once it died.");
    m.def("weak_is_set", [](tether::WeakRef<Node> w) { return !w.expired(); }, "node"_a.none(),
          "WeakRef<Node> as an argument: True if it links a live node.");
    // A WeakRef kept in C++ (a static; keep_weak(None) empties it).
    static WeakRef<Node> *kept_weak = new WeakRef<Node>(); // never destroyed: outlives Python
    m.def("keep_weak", [](WeakRef<Node> w) { *kept_weak = std::move(w); }, "node"_a.none(),
          "Keep only a weak link to node in C++ (read it back with kept_weak()).");
    m.def("kept_weak", [] { return *kept_weak; }, "The node keep_weak() links, or None.");
}

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
              {
                  nb::gil_scoped_release no_gil;
                  std::thread t([r = std::move(taken)]() mutable { r.reset(); });
                  t.join();
              }
              // The thread handed its release to tether's queue (it never waits for the GIL);
              // apply it now, so that callers see the release done when this returns.
              tether::py::apply_deferred();
          },
          "box"_a, "Drop box.value's C++ reference on a std::thread without the GIL, then "
                   "apply it (tether.settle()) before returning.");
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

    bind_real_types(m);
    bind_override_types(m);
    bind_document_types(m);
    bind_cycle_types(m);
    bind_vector_types(m);
    bind_thread_types(m);
    tether::check_bindings("tether.testing"); // tether_add_module's init does this itself
}
