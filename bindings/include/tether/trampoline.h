// SPDX-License-Identifier: Apache-2.0
// bindings/include/tether/trampoline.h: C++ virtual functions overridden by Python subclasses
//
//     struct Shape : tether::Object {
//         virtual double area() const = 0;
//         virtual std::string name() const { return "shape"; }
//     };
//     struct PyShape : Shape {                        // the trampoline
//         TETHER_TRAMPOLINE(Shape);
//         double area() const override { TETHER_OVERRIDE_PURE(area); }
//         std::string name() const override { TETHER_OVERRIDE(name); }
//     };
//     tether::class_<Shape, tether::Object, PyShape>(m, "Shape")
//         .def(tether::init<>())
//         .def("area", &Shape::area)
//         .def("name", &Shape::name);
//
// A Python subclass of Shape makes a PyShape (make_object<PyShape>); Shape itself makes a
// plain Shape when it is not abstract. Unlike nanobind's NB_TRAMPOLINE, the trampoline stores
// no `self`: the object's header already names its one wrapper, which stays valid while C++
// holds the object (the wrapper is kept, with its __dict__, after Python dropped it). So:
//  - each call takes the GIL (PyGILState_Ensure), so C++ threads without it may call;
//  - `self` in the override is the wrapper Python had (`self is` holds, __dict__ intact);
//  - a method the Python class does not override runs the C++ base method, with the GIL
//    released again first; a pure virtual raises NotImplementedError naming the class;
//  - `super().name()` inside the override runs the C++ base method (not the override again);
//  - after tether.move(self) the object is reached through a fresh wrapper of the bound type,
//    which has no override.
#pragma once

#include <tether/compat.h>
#include <tether/nanobind.h>

namespace tether::detail {

/// One dispatch of a trampoline method: finds the Python override of `name` on the object's
/// wrapper, and holds the GIL and the wrapper while it runs. Not overridden: holds nothing.
class Override {
public:
    Override(const Object *obj, PyTypeObject *base, const char *name, bool pure) {
        // No interpreter to enter: the C++ method only.
        if (!tether::py::compat::interpreter_accepts_threads() || base == nullptr) {
            if (pure)
                throw std::runtime_error(std::string("tether: pure virtual ") + name +
                                         "() called without a Python interpreter");
            return;
        }
        m_gil = PyGILState_Ensure();
        m_have_gil = true;
        m_self = tether::py::wrap(const_cast<Object *>(obj), base);
        if (m_self && resolve(base, name))
            return; // overridden: keep the GIL and self until the call is over
        if (m_self && pure) {
            if (Py_TYPE(m_self) == base)
                PyErr_Format(PyExc_NotImplementedError,
                             "%s.%s() is a pure virtual C++ method: %s is abstract, subclass it "
                             "in Python and define %s()",
                             base->tp_name, name, base->tp_name, name);
            else
                PyErr_Format(PyExc_NotImplementedError,
                             "%s.%s() is a pure virtual C++ method: the Python class %s must "
                             "define %s()",
                             base->tp_name, name, Py_TYPE(m_self)->tp_name, name);
        }
        if (!m_self || pure) {
            nb::python_error error; // takes the Python error while the GIL is held
            release();
            throw error;
        }
        release(); // not overridden: the C++ base method runs without the GIL
    }
    Override(const Override &) = delete;
    Override &operator=(const Override &) = delete;
    ~Override() { release(); }

    explicit operator bool() const noexcept { return m_func != nullptr; }

    /// Call the override with `args` (converted by nanobind's casters) and convert its result.
    template <typename R, typename... Args> R call(Args &&...args) {
        nb::object result = nb::handle(m_func)(nb::handle(m_self), std::forward<Args>(args)...);
        if constexpr (!std::is_void_v<R>)
            return nb::cast<R>(result);
    }

private:
    /// True if the Python class of m_self defines `name` itself (not the bound C++ method).
    /// The raw class attribute is looked up without binding, as nanobind does.
    bool resolve(PyTypeObject *base, const char *name) {
        nb::str key(name);
        PyObject *found = tether::py::compat::type_lookup(Py_TYPE(m_self), key.ptr()); // borrowed
        PyObject *bound = tether::py::compat::type_lookup(base, key.ptr());
        if (!found || found == bound || is_nanobind_function(found))
            return false;
        // super().name() inside the override re-enters through the vtable, with this very
        // dispatch on top of the thread's stack: run the C++ method then (as nanobind does).
        if (Frame *top = current(); top && top->self == m_self && top->func == found)
            return false;
        m_func = found;
        Py_INCREF(m_func);
        m_frame = Frame{m_self, m_func, current()};
        // The frame lives in this Override, which release() unlinks before it goes: GCC 13+
        // cannot see that and warns (-Wdangling-pointer) where the macros put it on the stack.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdangling-pointer"
#endif
        current() = &m_frame;
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#pragma GCC diagnostic pop
#endif
        return true;
    }
    static bool is_nanobind_function(PyObject *o) noexcept {
        PyObject *mod = PyObject_GetAttrString(reinterpret_cast<PyObject *>(Py_TYPE(o)), "__module__");
        if (!mod) {
            PyErr_Clear();
            return false;
        }
        bool nb_func = PyUnicode_Check(mod) && PyUnicode_CompareWithASCIIString(mod, "nanobind") == 0;
        Py_DECREF(mod);
        return nb_func;
    }
    void release() noexcept {
        if (!m_have_gil)
            return;
        if (m_func) {
            current() = m_frame.prev;
            Py_CLEAR(m_func);
        }
        Py_CLEAR(m_self);
        m_have_gil = false;
        PyGILState_Release(m_gil);
    }

    struct Frame {
        PyObject *self, *func;
        Frame *prev;
    };
    static Frame *&current() noexcept {
        static thread_local Frame *top = nullptr;
        return top;
    }

    PyGILState_STATE m_gil{};
    bool m_have_gil = false;
    PyObject *m_self = nullptr;
    PyObject *m_func = nullptr;
    Frame m_frame{};
};

} // namespace tether::detail

/// In the body of a trampoline class: names its C++ base and inherits its constructors.
#define TETHER_TRAMPOLINE(Base)                                                                \
    using TetherBase = Base;                                                                   \
    using TetherBase::TetherBase

/// Body of a trampoline method: the Python override of `name` if the class has one, else
/// TetherBase::func(args...).
#define TETHER_OVERRIDE_NAME(name, func, ...)                                                  \
    using tether_ret_type = decltype(TetherBase::func(__VA_ARGS__));                           \
    ::tether::detail::Override tether_override(this, ::tether::py_type<TetherBase>(), name,    \
                                               false);                                         \
    if (tether_override)                                                                       \
        return tether_override.template call<tether_ret_type>(__VA_ARGS__);                    \
    return TetherBase::func(__VA_ARGS__)

/// Body of a trampoline method for a pure virtual: the Python override, or NotImplementedError.
#define TETHER_OVERRIDE_PURE_NAME(name, func, ...)                                             \
    using tether_ret_type = decltype(TetherBase::func(__VA_ARGS__));                           \
    ::tether::detail::Override tether_override(this, ::tether::py_type<TetherBase>(), name,    \
                                               true);                                          \
    return tether_override.template call<tether_ret_type>(__VA_ARGS__)

#define TETHER_OVERRIDE(func, ...) TETHER_OVERRIDE_NAME(#func, func, __VA_ARGS__)
#define TETHER_OVERRIDE_PURE(func, ...) TETHER_OVERRIDE_PURE_NAME(#func, func, __VA_ARGS__)
