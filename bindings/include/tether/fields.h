// SPDX-License-Identifier: Apache-2.0
// bindings/include/tether/fields.h: def_field's machinery: annotations, getset get/set, errors
//
// Included by tether/nanobind.h after the casters (do not include it on its own). Each field
// of a bound type is a CPython getset descriptor whose closure is a Field<T, M>: reads call
// get<T, M>, writes set<T, M>, with no argument parsing and no overload dispatch.
#pragma once

namespace tether {

namespace fields {

/// What a field's annotation is, for dataclasses.fields() and typing.get_type_hints().
template <typename M> nb::object annotation() {
    if constexpr (is_ref<M>::value) {
        nb::handle t = reinterpret_cast<PyObject *>(py_type<typename is_ref<M>::element>());
        return nb::module_::import_("typing").attr("Optional")[t];
    } else if constexpr (std::is_same_v<M, bool>) {
        return nb::borrow(reinterpret_cast<PyObject *>(&PyBool_Type));
    } else if constexpr (std::is_integral_v<M>) {
        return nb::borrow(reinterpret_cast<PyObject *>(&PyLong_Type));
    } else if constexpr (std::is_floating_point_v<M>) {
        return nb::borrow(reinterpret_cast<PyObject *>(&PyFloat_Type));
    } else if constexpr (std::is_same_v<M, std::string>) {
        return nb::borrow(reinterpret_cast<PyObject *>(&PyUnicode_Type));
    } else {
        using V = typename M::value_type; // std::vector<Ref<U>>
        nb::handle t = reinterpret_cast<PyObject *>(py_type<typename is_ref<V>::element>());
        return nb::module_::import_("types").attr("GenericAlias")(
            nb::handle(reinterpret_cast<PyObject *>(&PyList_Type)), nb::make_tuple(t));
    }
}

/// An annotation as people write it: `int`, `Inner | None`, `list[Inner]`.
inline std::string describe(nb::handle a) {
    if (PyType_Check(a.ptr()))
        return nb::cast<std::string>(a.attr("__name__"));
    nb::object args = nb::getattr(a, "__args__", nb::none());
    nb::object origin = nb::getattr(a, "__origin__", nb::none());
    if (nb::isinstance<nb::tuple>(args)) {
        nb::tuple t = nb::borrow<nb::tuple>(args);
        if (t.size() == 2 && t[1].is(nb::handle(reinterpret_cast<PyObject *>(Py_TYPE(Py_None)))))
            return describe(t[0]) + " | None";
        if (t.size() == 1 && origin.is(nb::handle(reinterpret_cast<PyObject *>(&PyList_Type))))
            return "list[" + describe(t[0]) + "]";
    }
    return nb::cast<std::string>(nb::str(a));
}

template <typename T, typename M> struct Field {
    M T::*member;
    const char *owner;
    const char *name;
    PyGetSetDef def;
};

template <typename T> T *self_object(PyObject *self) noexcept {
    Object *o = py::object_of(self);
    return o ? static_cast<T *>(o) : nullptr; // the descriptor already checked the type
}

/// HOT: `a.x`. CPython's getset descriptor calls this directly: no argument parsing and no
/// overload dispatch, just the object pointer, the member and (for objects) wrap().
/// Free-threaded builds: a field is read and written under the owning wrapper's critical
/// section, so a reader never sees a Ref that a concurrent writer is releasing. Nothing that
/// can run Python (wrap, releasing the old value) happens inside it. GIL builds: nothing.
#if defined(Py_GIL_DISABLED)
struct FieldLock {
    PyCriticalSection cs;
    explicit FieldLock(PyObject *self) { PyCriticalSection_Begin(&cs, self); }
    ~FieldLock() { PyCriticalSection_End(&cs); }
};
#endif

template <typename M> PyObject *to_python(const M &v) noexcept {
    if constexpr (is_ref<M>::value) {
        return wrap(v.get());
    } else if constexpr (std::is_same_v<M, bool>) {
        return PyBool_FromLong(v);
    } else if constexpr (std::is_integral_v<M> && std::is_signed_v<M>) {
        return PyLong_FromLongLong((long long) v);
    } else if constexpr (std::is_integral_v<M>) {
        return PyLong_FromUnsignedLongLong((unsigned long long) v);
    } else if constexpr (std::is_floating_point_v<M>) {
        return PyFloat_FromDouble((double) v);
    } else {
        return nb::detail::make_caster<M>::from_cpp(v, nb::rv_policy::copy, nullptr).ptr();
    }
}

template <typename T, typename M> PyObject *get(PyObject *self, void *closure) noexcept {
    auto *f = static_cast<Field<T, M> *>(closure);
    T *t = self_object<T>(self);
    if (!t)
        return py::raise_unusable(self);
#if defined(Py_GIL_DISABLED)
    M copy; // a Ref copy holds its own count while wrap() runs outside the lock
    {
        FieldLock lock(self);
        copy = t->*(f->member);
    }
    return to_python(copy);
#else
    const M &v = t->*(f->member);
    if constexpr (is_ref<M>::value) {
        if (v) // T2 runs no Python code: no copy needed on the hot path
            if (PyObject *p = py::wrap_bound(v.get()))
                return p;
    }
    if constexpr (std::is_arithmetic_v<M>) {
        return to_python(v);
    } else {
        // Making a wrapper allocates, which may run the GC and a __del__ that reassigns this
        // very field: convert a copy that holds its own counts.
        M copy = v;
        return to_python(copy);
    }
#endif
}

template <typename T, typename M> int set(PyObject *self, PyObject *value, void *closure) noexcept {
    auto *f = static_cast<Field<T, M> *>(closure);
    if (!value) {
        PyErr_Format(PyExc_AttributeError, "cannot delete field %s.%s", f->owner, f->name);
        return -1;
    }
    T *t = self_object<T>(self);
    if (!t) {
        py::raise_unusable(self);
        return -1;
    }
    nb::detail::make_caster<M> c;
    nb::detail::cleanup_list cleanup(self);
    bool ok = c.from_python(value, (uint32_t) nb::detail::cast_flags::convert, &cleanup);
    int rv = -1;
    if (!ok) {
        std::string want;
        try {
            want = describe(annotation<M>());
        } catch (nb::python_error &e) {
            want = "another type";
        }
        PyErr_Format(PyExc_TypeError, "%s.%s: expected %s, got %s", f->owner, f->name,
                     want.c_str(), Py_TYPE(value)->tp_name);
    } else {
        try {
            M incoming = c.operator nb::detail::cast_t<M>();
            {
#if defined(Py_GIL_DISABLED)
                FieldLock lock(self);
#endif
                std::swap(t->*(f->member), incoming);
            }
            rv = 0; // `incoming` now holds the old value: released here, outside the lock
        } catch (nb::python_error &e) {
            e.restore();
        } catch (const std::exception &e) {
            PyErr_SetString(PyExc_TypeError, e.what());
        }
    }
    cleanup.release();
    return rv;
}

} // namespace fields

} // namespace tether
