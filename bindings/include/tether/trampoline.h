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
//  - each call takes the GIL (PyGILState_Ensure), so C++ threads without it may call; once
//    the interpreter finalizes, such a thread runs the C++ method instead (a pure virtual
//    throws std::runtime_error);
//  - `self` in the override is the wrapper Python had (`self is` holds, __dict__ intact);
//  - a method the Python class does not override runs the C++ base method, with the GIL
//    released again first; a pure virtual raises NotImplementedError naming the class;
//  - the override is found on the class and called as `self.name(...)` would be: functions,
//    staticmethod, classmethod, functools.partialmethod and other descriptors (__get__)
//    all work; attributes set on the instance are not overrides;
//  - `super().name()` inside the override runs the C++ base method (not the override again),
//    and so does any call of the same virtual on the same object that C++ makes while the
//    override runs (re-entrant calls; docs/guide.md, section 5);
//  - out of memory anywhere in a dispatch raises MemoryError and releases the GIL and self;
//  - after tether.move(self) the object is reached through a fresh wrapper of the bound type,
//    which has no override.
#pragma once

#include <tether/compat.h>
#include <tether/nanobind.h>

namespace tether::detail {

/// One dispatch of a trampoline method: finds the Python override of `name` on the object's
/// wrapper, and holds the GIL and the wrapper while it runs. Not overridden: holds nothing.
/// Every exit path, including an exception from the constructor (out of memory making the
/// name, the wrapper or the bound method), releases what it took: the GIL, self, the method.
class Override {
public:
    Override(const Object *obj, PyTypeObject *base, const char *name, bool pure) {
        // A thread that cannot run Python asks tether first (python.h, begin_python_call):
        // once finalization began, a thread waiting for the GIL would be ended (3.11) or hang
        // (3.13+) inside CPython, so the C++ method runs instead, as without an interpreter.
        bool attached = tether::py::compat::thread_can_run_python();
        if (base == nullptr || (!attached && !tether::py::begin_python_call())) {
            if (pure)
                throw std::runtime_error(std::string("tether: pure virtual ") + name +
                                         "() called without a Python interpreter");
            return;
        }
        m_counted = !attached;
        m_gil = PyGILState_Ensure();
        m_have_gil = true;
        m_self = tether::py::wrap(const_cast<Object *>(obj), base);
        int found = m_self ? resolve(base, name) : -1;
        if (found > 0)
            return; // overridden: keep the GIL, self and the method until the call is over
        if (found == 0 && pure) {
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
        if (found < 0 || pure) {
            if (!PyErr_Occurred()) // (wrap() and resolve() set one; never throw without)
                PyErr_SetString(PyExc_SystemError, "tether: trampoline lookup failed");
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
        nb::object result = m_call ? nb::handle(m_call)(std::forward<Args>(args)...)
                                   : nb::handle(m_func)(nb::handle(m_self), std::forward<Args>(args)...);
        if constexpr (!std::is_void_v<R>)
            return nb::cast<R>(result);
    }

private:
    /// 1 if the Python class of m_self overrides `name` (defines it, not as the bound C++
    /// method), 0 if not, -1 with a Python error set (out of memory).
    ///
    /// Whether the class overrides is decided on the class, as nanobind does: the attribute
    /// found along type(self)'s MRO, without descriptors, differs from the base's. The call
    /// then goes where `self.name(...)` would go in Python: the attribute is bound through
    /// the descriptor protocol (__get__(self, type(self))), so staticmethod, classmethod,
    /// functools.partialmethod and any other descriptor work; a plain function is called
    /// with self (what binding it would do, without making a bound method); a class attribute
    /// with no __get__ (a functools.partial, a callable object) is called as it is, without
    /// self. Attributes set on the instance (self.name = ...) are not overrides.
    int resolve(PyTypeObject *base, const char *name) noexcept {
        PyObject *key = PyUnicode_FromString(name);
        if (!key)
            return -1;
        PyObject *found = tether::py::compat::type_lookup(Py_TYPE(m_self), key); // borrowed
        PyObject *bound = tether::py::compat::type_lookup(base, key);
        Py_DECREF(key);
        if (!found || found == bound)
            return 0;
        Py_INCREF(found); // is_nanobind_function() and __get__ may run code
        int nb_func = is_nanobind_function(found);
        // super().name() inside the override re-enters through the vtable, with this very
        // dispatch on top of the thread's stack: run the C++ method then (as nanobind does).
        // So does any other call of the same virtual on the same object made (through C++)
        // while the override runs: docs/guide.md, section 5, "Re-entrant calls".
        Frame *top = current();
        if (nb_func != 0 || (top && top->self == m_self && top->func == found)) {
            Py_DECREF(found);
            return nb_func < 0 ? -1 : 0;
        }
        if (!PyFunction_Check(found)) {
            if (descrgetfunc get = Py_TYPE(found)->tp_descr_get)
                m_call = get(found, m_self, reinterpret_cast<PyObject *>(Py_TYPE(m_self)));
            else
                m_call = Py_NewRef(found);
            if (!m_call) {
                Py_DECREF(found);
                return -1;
            }
        }
        m_func = found;
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
        return 1;
    }
    /// 1 if `o` is a nanobind function (a C++ method bound on a class between base and
    /// type(self)), 0 if not, -1 with a Python error set.
    static int is_nanobind_function(PyObject *o) noexcept {
        PyObject *mod = PyObject_GetAttrString(reinterpret_cast<PyObject *>(Py_TYPE(o)), "__module__");
        if (!mod) {
            if (!PyErr_ExceptionMatches(PyExc_AttributeError))
                return -1; // (MemoryError): not "no", or a C++ method would pass as an override
            PyErr_Clear();
            return 0;
        }
        bool nb_func = PyUnicode_Check(mod) && PyUnicode_CompareWithASCIIString(mod, "nanobind") == 0;
        Py_DECREF(mod);
        return nb_func ? 1 : 0;
    }
    void release() noexcept {
        if (!m_have_gil)
            return;
        if (m_func) {
            current() = m_frame.prev;
            Py_CLEAR(m_call);
            Py_CLEAR(m_func);
        }
        Py_CLEAR(m_self);
        m_have_gil = false;
        PyGILState_Release(m_gil);
        if (m_counted) {
            m_counted = false;
            tether::py::end_python_call();
        }
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
    bool m_counted = false; ///< begin_python_call() said yes: end_python_call() after release
    PyObject *m_self = nullptr;
    PyObject *m_func = nullptr; ///< the class attribute that overrides (what the frame names)
    PyObject *m_call = nullptr; ///< what to call without self (m_func bound), or null: m_func(self, ...)
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
