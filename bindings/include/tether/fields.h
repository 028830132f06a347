// SPDX-License-Identifier: Apache-2.0
// bindings/include/tether/fields.h: def_field's machinery: annotations, getset get/set, errors
//
// Included by tether/nanobind.h after the casters (do not include it on its own). Each field
// of a bound type is a CPython getset descriptor whose closure *is* the member pointer (its
// bits, see Field): reads call get<T, M>, writes set<T, M>, with no argument parsing, no
// overload dispatch and no load before the field's own.
//
// What a field of type M reads as, by kind (kind_of<M>):
//   Ref<U>            the object's one wrapper, or None            (HOT: no copy on GIL builds)
//   WeakRef<U>        the object's one wrapper while it lives, else None; a write makes a weak link
//   arithmetic        a new int / float / bool
//   bound value       a nanobind-bound struct (nb::class_, not a tether type): a view of the
//                     member itself, keeping the owner alive (nanobind's reference_internal,
//                     as def_rw does), so `o.transform.x = 5` writes into C++
//   anything else     converted by nanobind's caster from a copy (std::string, std::vector,
//                     std::map, std::optional, enums, tuples, ...): include the matching
//                     <nanobind/stl/...> header, as for any nanobind binding
// Writes convert with the same caster and swap the new value in; the old one is released
// outside the field lock.
#pragma once

#include <cstdint>
#include <cstring>
#include <list>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

namespace tether {

template <typename T> struct is_weak_ref : std::false_type {};
template <typename T> struct is_weak_ref<WeakRef<T>> : std::true_type { using element = T; };

namespace fields {

enum class Kind { ref, weak_ref, arithmetic, bound_value, converted };

/// How a field of type M is read and written (see the table at the top of this file).
template <typename M> constexpr Kind kind_of() {
    static_assert(!std::is_base_of_v<Object, M>,
                  "def_field: a tether::Object held by value inside another object has no header "
                  "and cannot reach Python; hold it with tether::Ref<T> (made by make_object)");
    if constexpr (is_ref<M>::value)
        return Kind::ref;
    else if constexpr (is_weak_ref<M>::value)
        return Kind::weak_ref;
    else if constexpr (std::is_arithmetic_v<M>)
        return Kind::arithmetic;
    else if constexpr (nb::detail::is_base_caster_v<nb::detail::make_caster<M>> &&
                       !std::is_enum_v<M>)
        return Kind::bound_value;
    else
        return Kind::converted;
}

// ---- annotations ---------------------------------------------------------------------------

inline nb::object builtin(PyTypeObject *t) { return nb::borrow(reinterpret_cast<PyObject *>(t)); }
inline nb::object generic(PyTypeObject *origin, nb::object args) {
    return nb::module_::import_("types").attr("GenericAlias")(
        nb::handle(reinterpret_cast<PyObject *>(origin)), args);
}
inline nb::object optional_of(nb::handle t) {
    return nb::module_::import_("typing").attr("Optional")[t];
}

template <typename M> struct annotate;

/// What a field's annotation is, for dataclasses.fields() and typing.get_type_hints():
/// the type nanobind's caster returns (`list[float]`, `dict[str, int]`, `Inner | None`).
template <typename M> nb::object annotation() { return annotate<M>::get(); }

/// A bound class (tether or nanobind, enums too): its Python type; otherwise typing.Any.
template <typename M> nb::object bound_type_or_any() {
    if constexpr (std::is_base_of_v<Object, M>) {
        return nb::borrow(reinterpret_cast<PyObject *>(py_type<M>()));
    } else {
        nb::handle h = nb::type<M>();
        if (h.is_valid())
            return nb::borrow(h);
        return nb::module_::import_("typing").attr("Any");
    }
}

template <typename M> struct annotate {
    static nb::object get() {
        if constexpr (std::is_same_v<M, bool>)
            return builtin(&PyBool_Type);
        else if constexpr (std::is_integral_v<M>)
            return builtin(&PyLong_Type);
        else if constexpr (std::is_floating_point_v<M>)
            return builtin(&PyFloat_Type);
        else
            return bound_type_or_any<M>();
    }
};
template <> struct annotate<std::string> {
    static nb::object get() { return builtin(&PyUnicode_Type); }
};
template <typename U> struct annotate<Ref<U>> {
    static nb::object get() { return optional_of(bound_type_or_any<U>()); }
};
template <typename U> struct annotate<WeakRef<U>> {
    static nb::object get() { return optional_of(bound_type_or_any<U>()); }
};
template <typename U> struct annotate<std::optional<U>> {
    static nb::object get() { return optional_of(annotation<U>()); }
};
/// An element of a container: `Inner` for a Ref<Inner> (None items are unusual there).
template <typename U> nb::object element_annotation() {
    if constexpr (is_ref<U>::value)
        return bound_type_or_any<typename is_ref<U>::element>();
    else
        return annotation<U>();
}
template <typename U, typename A> struct annotate<std::vector<U, A>> {
    static nb::object get() {
        return generic(&PyList_Type, nb::make_tuple(element_annotation<U>()));
    }
};
template <typename U, typename A> struct annotate<std::list<U, A>> {
    static nb::object get() {
        return generic(&PyList_Type, nb::make_tuple(element_annotation<U>()));
    }
};
template <typename K, typename V, typename... R> struct annotate<std::map<K, V, R...>> {
    static nb::object get() {
        return generic(&PyDict_Type, nb::make_tuple(annotation<K>(), element_annotation<V>()));
    }
};
template <typename K, typename V, typename... R> struct annotate<std::unordered_map<K, V, R...>> {
    static nb::object get() {
        return generic(&PyDict_Type, nb::make_tuple(annotation<K>(), element_annotation<V>()));
    }
};
template <typename K, typename... R> struct annotate<std::set<K, R...>> {
    static nb::object get() { return generic(&PySet_Type, nb::make_tuple(annotation<K>())); }
};
template <typename K, typename... R> struct annotate<std::unordered_set<K, R...>> {
    static nb::object get() { return generic(&PySet_Type, nb::make_tuple(annotation<K>())); }
};
template <typename A, typename B> struct annotate<std::pair<A, B>> {
    static nb::object get() {
        return generic(&PyTuple_Type, nb::make_tuple(annotation<A>(), annotation<B>()));
    }
};
template <typename... U> struct annotate<std::tuple<U...>> {
    static nb::object get() { return generic(&PyTuple_Type, nb::make_tuple(annotation<U>()...)); }
};

/// An annotation as people write it: `int`, `Inner | None`, `list[Inner]`, `dict[str, int]`.
inline std::string describe(nb::handle a) {
    if (PyType_Check(a.ptr()))
        return nb::cast<std::string>(a.attr("__name__"));
    nb::object args = nb::getattr(a, "__args__", nb::none());
    nb::object origin = nb::getattr(a, "__origin__", nb::none());
    if (nb::isinstance<nb::tuple>(args) && origin.is_valid() && !origin.is_none()) {
        nb::tuple t = nb::borrow<nb::tuple>(args);
        nb::handle none_type(reinterpret_cast<PyObject *>(Py_TYPE(Py_None)));
        if (t.size() == 2 && t[1].is(none_type))
            return describe(t[0]) + " | None";
        if (PyType_Check(origin.ptr())) {
            std::string s = nb::cast<std::string>(origin.attr("__name__")) + "[";
            for (size_t i = 0; i < t.size(); ++i)
                s += (i ? ", " : "") + describe(t[i]);
            return s + "]";
        }
    }
    std::string s = nb::cast<std::string>(nb::str(a));
    return s.rfind("typing.", 0) == 0 ? s.substr(7) : s;
}

/// The C++ type a failed number conversion was aiming at: "int64_t", "uint8_t", "double".
template <typename M> const char *cpp_number_name() {
    if constexpr (std::is_same_v<M, bool>)
        return "bool";
    else if constexpr (std::is_floating_point_v<M>)
        return sizeof(M) == sizeof(float) ? "float" : sizeof(M) == sizeof(double) ? "double"
                                                                                  : "long double";
    else {
        static const char *const names[2][4] = {{"uint8_t", "uint16_t", "uint32_t", "uint64_t"},
                                                {"int8_t", "int16_t", "int32_t", "int64_t"}};
        int log = sizeof(M) == 1 ? 0 : sizeof(M) == 2 ? 1 : sizeof(M) == 4 ? 2 : 3;
        return names[std::is_signed_v<M>][log];
    }
}

// ---- descriptors ---------------------------------------------------------------------------

/// The member pointer M T::* carried in a getset closure, bit for bit. Reading it back is a
/// register move, where a pointer to a struct holding it cost the getter a dependent load at
/// the head of its chain (measured: hot `a.x` about 0.5 ns faster, and the row's spread over
/// 10 processes above 10 % in 1 of 6 runs instead of 4 of 6; bench/README.md, target 8).
template <typename T, typename M> struct Field {
    static_assert(sizeof(M T::*) <= sizeof(void *), "a member pointer wider than a pointer");
    static void *closure(M T::*member) noexcept {
        void *c = nullptr;
        std::memcpy(&c, &member, sizeof member);
        return c;
    }
    static M T::*member(void *closure) noexcept {
        M T::*m;
        std::memcpy(&m, &closure, sizeof m);
        return m;
    }
};

/// Error messages only: the owner and name of the field whose descriptor has `get` and
/// `closure`, found on self's type and its bases (the descriptor knows both).
inline void field_names(PyObject *self, getter get, void *closure, const char **owner,
                        const char **name) noexcept {
    *owner = Py_TYPE(self)->tp_name;
    *name = "?";
    PyObject *mro = Py_TYPE(self)->tp_mro;
    for (Py_ssize_t i = 0; mro && i < PyTuple_GET_SIZE(mro); ++i) {
        PyObject *dict = reinterpret_cast<PyTypeObject *>(PyTuple_GET_ITEM(mro, i))->tp_dict;
        if (!dict)
            continue;
        bool found = false;
#if defined(Py_GIL_DISABLED)
        Py_BEGIN_CRITICAL_SECTION(dict);
#endif
        Py_ssize_t pos = 0;
        PyObject *k, *v;
        while (!found && PyDict_Next(dict, &pos, &k, &v)) {
            if (!Py_IS_TYPE(v, &PyGetSetDescr_Type))
                continue;
            PyGetSetDef *d = reinterpret_cast<PyGetSetDescrObject *>(v)->d_getset;
            if (d->get == get && d->closure == closure) {
                *owner = PyDescr_TYPE(v)->tp_name;
                *name = d->name;
                found = true;
            }
        }
#if defined(Py_GIL_DISABLED)
        Py_END_CRITICAL_SECTION();
#endif
        if (found)
            return;
    }
}

template <typename T> T *self_object(PyObject *self) noexcept {
    Object *o = py::object_of(self);
    return o ? static_cast<T *>(o) : nullptr; // the descriptor already checked the type
}

/// HOT: `a.x`. CPython's getset descriptor calls this directly: no argument parsing and no
/// overload dispatch, just the object pointer, the member and (for objects) wrap().
/// Free-threaded builds: a field is read and written under the owning wrapper's lock
/// (py::WrapperLock), so a reader never sees a Ref that a concurrent writer is releasing.
/// Nothing that can run Python (wrap, releasing the old value) happens inside it.

template <typename M> PyObject *to_python(const M &v) noexcept {
    if constexpr (is_ref<M>::value) {
        return wrap(v.get());
    } else if constexpr (is_weak_ref<M>::value) {
        auto strong = v.lock(); // holds a count while wrap() runs
        return wrap(strong.get());
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

/// What a view keeps alive: a capsule owning one strong count of the viewed object.
inline void release_view_owner(PyObject *capsule) noexcept {
    if (void *p = PyCapsule_GetPointer(capsule, "tether.view_owner"))
        static_cast<Object *>(p)->dec_ref();
    else
        PyErr_Clear();
}

/// A member of a nanobind-bound value type, as a view into the object (reference_internal:
/// writes through it reach C++). The view keeps the C++ object itself alive, not just the
/// wrapper: after tether.move(self) the wrapper no longer owns it, and the view must not
/// outlive it.
template <typename T, typename M> PyObject *view_of(PyObject *self, M T::*member) noexcept {
    Object *obj;
    {
        py::WrapperLock lock(self); // the object cannot leave the wrapper meanwhile
        obj = py::object_of(self);
        if (obj)
            py::inc_ref_quiet(obj); // settled below, outside the lock
    }
    if (!obj)
        return py::raise_unusable(self);
    py::settle(obj); // the count may have made it shared (T4)
    PyObject *owner = PyCapsule_New(obj, "tether.view_owner", &release_view_owner);
    if (!owner) {
        obj->dec_ref();
        return nullptr;
    }
    nb::detail::cleanup_list cleanup(owner);
    PyObject *r = nb::detail::make_caster<M>::from_cpp(&(static_cast<T *>(obj)->*member),
                                                       nb::rv_policy::reference_internal,
                                                       &cleanup)
                      .ptr();
    cleanup.release();
    Py_DECREF(owner); // the view holds it now (or, on failure, the count goes with it)
    return r;
}

/// Making a wrapper allocates, which may run the GC and a __del__ that reassigns the very
/// field being read: convert a copy that holds its own counts.
template <typename M> __attribute__((noinline)) PyObject *get_copy(const M &v) noexcept {
    M copy = v;
    return to_python(copy);
}

template <typename T, typename M> PyObject *get(PyObject *self, void *closure) noexcept {
    M T::*const member = Field<T, M>::member(closure);
    if constexpr (kind_of<M>() == Kind::bound_value) {
        return view_of<T, M>(self, member); // the member's address never changes
    } else {
#if defined(Py_GIL_DISABLED)
        M copy;
        bool usable = false;
        {
            py::WrapperLock lock(self);
            // tether.move() takes it too: the object cannot leave the wrapper (and be freed
            // by whoever took it) during the read.
            if (T *t = self_object<T>(self)) {
                const M &v = t->*member;
                if constexpr (is_ref<M>::value) {
                    if (!v)
                        Py_RETURN_NONE;
                    // HOT: a live wrapper is taken with a try-incref and no lock of its own;
                    // the critical section keeps a concurrent writer from releasing v.
                    if (PyObject *p = py::wrap_bound(v.get()))
                        return p;
                }
                if constexpr (std::is_arithmetic_v<M>)
                    return to_python(v);
                copy = v; // holds its own count while a wrapper is made outside the lock
                usable = true;
            }
        }
        if (!usable)
            return py::raise_unusable(self); // outside the lock: it allocates
        return to_python(copy);
#else
        T *t = self_object<T>(self);
        if (!t)
            return py::raise_unusable(self);
        const M &v = t->*member;
        if constexpr (is_ref<M>::value) {
            if (v) // T2 runs no Python code: no copy needed on the hot path
                if (PyObject *p = py::wrap_bound(v.get()))
                    return p;
        }
        if constexpr (std::is_arithmetic_v<M> || is_weak_ref<M>::value)
            return to_python(v); // a WeakRef is locked into a Ref of its own first
        else
            return get_copy(v); // out of line: the hot path above saves no registers
#endif
    }
}

/// The first wrapper inside `value` (itself, or an item of a list, tuple, set or dict, at
/// any depth up to 4) that has no object: moved into C++ or never initialized. Borrowed.
inline PyObject *find_unusable(PyObject *value, int depth = 0) noexcept {
    PyTypeObject *base = py_type<Object>();
    if (base && PyObject_TypeCheck(value, base))
        return py::object_of(value) ? nullptr : value;
    if (depth >= 4)
        return nullptr;
    if (PyList_Check(value) || PyTuple_Check(value)) {
        Py_ssize_t n = PySequence_Fast_GET_SIZE(value);
        for (Py_ssize_t i = 0; i < n; ++i)
            if (PyObject *u = find_unusable(PySequence_Fast_GET_ITEM(value, i), depth + 1))
                return u;
    } else if (PyDict_Check(value)) {
        Py_ssize_t pos = 0;
        PyObject *k, *v;
        while (PyDict_Next(value, &pos, &k, &v))
            if (PyObject *u = find_unusable(v, depth + 1))
                return u;
    }
    return nullptr;
}

/// TypeError for a value field `M` could not take, saying why as precisely as it can.
template <typename M> void raise_bad_value(const char *owner, const char *name, PyObject *value) {
    std::string want;
    try {
        want = describe(annotation<M>());
    } catch (nb::python_error &e) {
        want = "another type";
    }
    if constexpr (std::is_arithmetic_v<M> && !std::is_same_v<M, bool>) {
        if (PyLong_Check(value) && !PyBool_Check(value)) {
            PyErr_Format(PyExc_OverflowError,
                         "%s.%s: %R is out of range for the C++ type %s of this field", owner,
                         name, value, cpp_number_name<M>());
            return;
        }
    }
    if (!is_ref<M>::value && !is_weak_ref<M>::value) {
        if (PyObject *u = find_unusable(value); u && u != value) {
            const char *why = reinterpret_cast<py::Wrapper *>(u)->state.state ==
                                      py::state_relinquished
                                  ? "was moved into C++ with tether.move()"
                                  : "is not initialized: its __init__ did not run";
            PyErr_Format(PyExc_TypeError, "%s.%s: expected %s, got %s: an item (%s) %s", owner,
                         name, want.c_str(), Py_TYPE(value)->tp_name, Py_TYPE(u)->tp_name, why);
            return;
        }
    }
    PyErr_Format(PyExc_TypeError, "%s.%s: expected %s, got %s", owner, name, want.c_str(),
                 Py_TYPE(value)->tp_name);
}

template <typename T, typename M> int set(PyObject *self, PyObject *value, void *closure) noexcept {
    M T::*const member = Field<T, M>::member(closure);
    const char *owner, *name;
    if (!value) {
        field_names(self, &get<T, M>, closure, &owner, &name);
        PyErr_Format(PyExc_AttributeError, "cannot delete field %s.%s", owner, name);
        return -1;
    }
    if (!py::object_of(self)) { // say so before converting anything
        py::raise_unusable(self);
        return -1;
    }
    nb::detail::make_caster<M> c;
    nb::detail::cleanup_list cleanup(self);
    bool ok = c.from_python(value, (uint32_t) nb::detail::cast_flags::convert, &cleanup);
    int rv = -1;
    if (!ok) {
        field_names(self, &get<T, M>, closure, &owner, &name);
        try {
            raise_bad_value<M>(owner, name, value);
        } catch (...) {
            PyErr_Format(PyExc_TypeError, "%s.%s: cannot take a %s", owner, name,
                         Py_TYPE(value)->tp_name);
        }
    } else {
        try {
            M incoming = c.operator nb::detail::cast_t<M>();
            {
                py::WrapperLock lock(self);
                // Looked up only now: converting the value may have run Python code
                // (__index__, __float__, a sequence's __getitem__) that moved self's object
                // into C++, where it may already be gone.
                if (T *t = self_object<T>(self)) {
                    std::swap(t->*member, incoming);
                    rv = 0;
                }
            }
            if (rv != 0)
                py::raise_unusable(self);
            // `incoming` now holds the old value: released here, outside the lock
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
