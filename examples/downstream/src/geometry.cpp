// SPDX-License-Identifier: Apache-2.0
// examples/downstream/src/geometry.cpp: tether_geometry, a downstream module's own tether types
//
// It knows tether only through the installed headers (<tether/nanobind.h>) and links the
// installed libtether + libtether_python, so its objects share the one header layout and the
// one process-wide state with tether.testing and every other tether module. Shape shows the
// two things real scene graphs need: a weak parent link (no cycle through C++) and a virtual
// function a Python subclass overrides (a trampoline, see <tether/trampoline.h>).
#include <tether/nanobind.h>
#include <tether/trampoline.h>

#include <nanobind/stl/map.h>

#include <cmath>
#include <map>
#include <string>

namespace nb = nanobind;
using namespace nb::literals;
using tether::make_object;
using tether::Object;
using tether::Ref;
using tether::WeakRef;

namespace geometry {

struct Point : Object {
    double x, y;
    Point(double x_, double y_) : x(x_), y(y_) {}
};

struct Segment : Object {
    Ref<Point> a, b;
    Segment(Ref<Point> a_, Ref<Point> b_) : a(std::move(a_)), b(std::move(b_)) {}
    double length() const {
        if (!a || !b)
            throw std::invalid_argument("Segment.length(): both ends must be set");
        return std::hypot(b->x - a->x, b->y - a->y);
    }
};

/// Holds any tether object, from this module or another one.
struct Holder : Object {
    Ref<Object> value;
    explicit Holder(Ref<Object> v) : value(std::move(v)) {}
};

struct Scene;

/// A node of a scene: children held strongly, the parent and the scene weakly.
struct Shape : Object {
    WeakRef<Shape> parent;
    WeakRef<Scene> scene; // Scene is declared and bound after Shape: any order works
    std::vector<Ref<Shape>> children;
    virtual double area() const { return 0.0; }
    /// Calls area() through the vtable, so Python overrides count.
    double total_area() const {
        double a = area();
        for (const Ref<Shape> &c : children)
            a += c->total_area();
        return a;
    }
};
/// The trampoline: Python subclasses of Shape are made as PyShape.
struct PyShape : Shape {
    TETHER_TRAMPOLINE(Shape);
    double area() const override { TETHER_OVERRIDE(area); }
};

/// The scene: its shapes by name. Scene and Shape refer to each other (Shape.scene is weak).
struct Scene : Object {
    std::string name;
    std::map<std::string, Ref<Shape>> shapes;
    explicit Scene(std::string n = "") : name(std::move(n)) {}
    void add(const std::string &key, Ref<Shape> shape) {
        if (!shape)
            throw nb::type_error("Scene.add(): shape must not be None");
        shape->scene = WeakRef<Scene>(this);
        shapes[key] = std::move(shape);
    }
    double total_area() const {
        double a = 0;
        for (const auto &kv : shapes)
            a += kv.second->total_area();
        return a;
    }
};

} // namespace geometry

NB_MODULE(tether_geometry, m) {
    using namespace geometry;
    m.doc() = "Example downstream module: its own types deriving from tether::Object";
    tether::init_module(); // imports tether._core; fails here if libtether's ABI differs

    tether::class_<Point, Object>(m, "Point", "A 2D point.")
        .def(tether::init<double, double>(), "x"_a = 0.0, "y"_a = 0.0)
        .def_field("x", &Point::x, "x coordinate")
        .def_field("y", &Point::y, "y coordinate");

    tether::class_<Segment, Object>(m, "Segment", "Two points, shared with whoever holds them.")
        .def(tether::init<Ref<Point>, Ref<Point>>(), "a"_a.none() = nb::none(),
             "b"_a.none() = nb::none())
        .def_field("a", &Segment::a, "First end (Point or None).")
        .def_field("b", &Segment::b, "Second end (Point or None).")
        .def("length", &Segment::length);

    tether::class_<Holder, Object>(m, "Holder", "Holds any tether object.")
        .def(tether::init<Ref<Object>>(), "value"_a.none() = nb::none())
        .def_field("value", &Holder::value, "The held object (any tether.Object, or None).");

    tether::class_<Shape, Object, PyShape>(m, "Shape", "A scene node; override area() in Python.")
        .def(tether::init<>())
        .def("area", &Shape::area, "This node's own area (0 in C++).")
        .def("total_area", &Shape::total_area, "area() of this node and all below, from C++.")
        .def_field("parent", &Shape::parent, "The parent (a weak link), or None.")
        .def_field("scene", &Shape::scene, "The Scene holding it (a weak link), or None.")
        .def_field("children", &Shape::children, "The children (strong links).");

    tether::class_<Scene>(m, "Scene", "Named shapes; each links back to its scene.")
        .def(tether::init<std::string>(), "name"_a = "")
        .def_field("name", &Scene::name)
        .def_field("shapes", &Scene::shapes, "The shapes by name (strong links).")
        .def("add", &Scene::add, "key"_a, "shape"_a, "Add a shape under key; links it back here.")
        .def("total_area", &Scene::total_area, "Sum of every shape's total_area(), from C++.");

    m.def("echo", [](Ref<Object> o) { return o; }, "obj"_a,
          "Return any tether object through a C++ Ref<tether::Object>.");
    m.def("make_segment",
          [](double x0, double y0, double x1, double y1) {
              return make_object<Segment>(make_object<Point>(x0, y0), make_object<Point>(x1, y1));
          },
          "x0"_a, "y0"_a, "x1"_a, "y1"_a, "A Segment made in C++ (no wrappers yet).");
    m.def("use_count", [](Object &o) { return o.use_count(); }, "obj"_a);
    m.def("abi_version", [] { return tether::abi_version; },
          "tether::abi_version of the headers this module was compiled with.");
}
