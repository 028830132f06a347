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
// outside the field lock. A std::vector of numbers (numeric_vector) is converted like any
// other, and is also registered for pickle (VectorOps, python.h "numeric vector fields"):
// while pickle has a buffer of it out, its writes raise BufferError.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <array>
#include <cxxabi.h>
#include <functional>
#include <memory>
#include <string_view>
#include <variant>
#include <typeinfo>
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

namespace nanobind {
template <typename... Args> class ndarray; // <nanobind/ndarray.h>, included by users of it
} // namespace nanobind

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

// ---- a caster for every field type -----------------------------------------------------------
//
// nanobind converts std:: types only when their caster header is included; without it, the
// type silently falls back to "a bound class", which compiles, imports, and fails when the
// field is read. def_field checks the field type and every type a converted container holds.

template <template <typename...> class Tmpl, typename M> struct is_instance : std::false_type {};
template <template <typename...> class Tmpl, typename... A>
struct is_instance<Tmpl, Tmpl<A...>> : std::true_type {};
/// nb::ndarray<...>: a handle sharing an array's memory (its owner's, e.g. a NumPy array).
template <typename M> using is_ndarray = is_instance<nb::ndarray, M>;
template <typename M> struct is_std_array : std::false_type {};
template <typename U, size_t N> struct is_std_array<std::array<U, N>> : std::true_type {};

template <typename M> constexpr void check_caster();
template <typename M> struct check_args {
    static constexpr void run() {}
};
template <template <typename...> class Tmpl, typename... A> struct check_args<Tmpl<A...>> {
    static constexpr void run() { (check_caster<A>(), ...); }
};

/// Fails to compile, naming the header to include, when M (or a type a container M holds)
/// is a standard type whose nanobind caster header this translation unit did not include.
template <typename M> constexpr void check_caster() {
    using C = nb::detail::make_caster<M>;
    constexpr bool as_class = nb::detail::is_base_caster_v<C> && !std::is_base_of_v<Object, M>;
    static_assert(!(as_class && is_instance<std::function, M>::value),
                  "def_field: nanobind has no caster for std::function here: "
                  "#include <nanobind/stl/function.h>");
    static_assert(!(as_class && is_instance<std::optional, M>::value),
                  "def_field: nanobind has no caster for std::optional here: "
                  "#include <nanobind/stl/optional.h>");
    static_assert(!(as_class && is_instance<std::map, M>::value),
                  "def_field: nanobind has no caster for std::map here: "
                  "#include <nanobind/stl/map.h>");
    static_assert(!(as_class && is_instance<std::unordered_map, M>::value),
                  "def_field: nanobind has no caster for std::unordered_map here: "
                  "#include <nanobind/stl/unordered_map.h>");
    static_assert(!(as_class && is_instance<std::set, M>::value),
                  "def_field: nanobind has no caster for std::set here: "
                  "#include <nanobind/stl/set.h>");
    static_assert(!(as_class && is_instance<std::unordered_set, M>::value),
                  "def_field: nanobind has no caster for std::unordered_set here: "
                  "#include <nanobind/stl/unordered_set.h>");
    static_assert(!(as_class && is_instance<std::list, M>::value),
                  "def_field: nanobind has no caster for std::list here: "
                  "#include <nanobind/stl/list.h>");
    static_assert(!(as_class && is_instance<std::pair, M>::value),
                  "def_field: nanobind has no caster for std::pair here: "
                  "#include <nanobind/stl/pair.h>");
    static_assert(!(as_class && is_instance<std::tuple, M>::value),
                  "def_field: nanobind has no caster for std::tuple here: "
                  "#include <nanobind/stl/tuple.h>");
    static_assert(!(as_class && is_instance<std::variant, M>::value),
                  "def_field: nanobind has no caster for std::variant here: "
                  "#include <nanobind/stl/variant.h>");
    static_assert(!(as_class && is_instance<std::shared_ptr, M>::value),
                  "def_field: nanobind has no caster for std::shared_ptr here: "
                  "#include <nanobind/stl/shared_ptr.h>");
    static_assert(!(as_class && is_instance<std::unique_ptr, M>::value),
                  "def_field: nanobind has no caster for std::unique_ptr here: "
                  "#include <nanobind/stl/unique_ptr.h>");
    static_assert(!(as_class && is_std_array<M>::value),
                  "def_field: nanobind has no caster for std::array here: "
                  "#include <nanobind/stl/array.h>");
    static_assert(!(as_class && std::is_same_v<M, std::string_view>),
                  "def_field: nanobind has no caster for std::string_view here: "
                  "#include <nanobind/stl/string_view.h>");
    static_assert(!(as_class && std::is_same_v<M, std::wstring>),
                  "def_field: nanobind has no caster for std::wstring here: "
                  "#include <nanobind/stl/wstring.h>");
    if constexpr (!nb::detail::is_base_caster_v<C> && !is_ref<M>::value)
        check_args<M>::run(); // a converted container: its items are converted too
}

// ---- annotations ---------------------------------------------------------------------------
//
// A field's annotation names Python types, which exist only once their class_ ran. Types
// that refer to each other (a Section holding Paragraphs, each with a weak link back) are
// declared in some order, so a field may name a type bound later in the module, or in another
// module. Such an annotation is *pending*: the type stores a forward reference (a string,
// "list[Paragraph]", the C++ names) in __annotations__ and a resolver in __tether_pending__;
// every later tether::class_ of the same module retries its pending fields, and tether's
// Python layer resolves the rest when it first reads the type's fields (_annotations.py).

/// Thrown (and caught in add_field) while an annotation names a type not bound yet.
struct unbound_type {};

/// The demangled C++ name of T ("tt::Paragraph"), for messages and forward references.
template <typename T> std::string cpp_name() {
    int status = 0;
    char *demangled = abi::__cxa_demangle(typeid(T).name(), nullptr, nullptr, &status);
    std::string name = status == 0 && demangled ? demangled : typeid(T).name();
    std::free(demangled);
    return name;
}

/// The unqualified C++ name of T ("Paragraph" for tt::Paragraph): what a forward reference
/// names until the type is bound (most bindings give the Python class the C++ name).
template <typename T> std::string cpp_short_name() {
    std::string name = cpp_name<T>();
    if (size_t lt = name.find('<'); lt != std::string::npos)
        name.resize(lt);
    if (size_t colon = name.rfind("::"); colon != std::string::npos)
        name = name.substr(colon + 2);
    return name;
}

/// Annotations are built in one of two modes: `strict` (every bound type must exist, else
/// unbound_type is thrown) or forward (a type not bound yet becomes its C++ name as a string,
/// for the placeholder).
struct AnnotationMode {
    bool forward;
};

inline nb::object builtin(PyTypeObject *t) { return nb::borrow(reinterpret_cast<PyObject *>(t)); }
inline nb::object generic(PyTypeObject *origin, nb::object args) {
    return nb::module_::import_("types").attr("GenericAlias")(
        nb::handle(reinterpret_cast<PyObject *>(origin)), args);
}
inline nb::object optional_of(nb::handle t) {
    return nb::module_::import_("typing").attr("Optional")[t];
}
inline nb::object forward_ref(const std::string &name) {
    return nb::module_::import_("typing").attr("ForwardRef")(nb::str(name.c_str()));
}

template <typename M> struct annotate;

/// What a field's annotation is, for dataclasses.fields() and typing.get_type_hints():
/// the type nanobind's caster returns (`list[float]`, `dict[str, int]`, `Inner | None`).
template <typename M> nb::object annotation(AnnotationMode mode = {false}) {
    return annotate<M>::get(mode);
}

/// A bound class (tether or nanobind, enums too): its Python type. A tether type, or a class
/// type nanobind has no caster for, that is not bound (yet): unbound_type, or in forward mode
/// a forward reference to its C++ name. Anything else: typing.Any.
template <typename M> nb::object bound_type_or_any(AnnotationMode mode) {
    if constexpr (std::is_base_of_v<Object, M>) {
        if (PyTypeObject *t = py_type<M>())
            return nb::borrow(reinterpret_cast<PyObject *>(t));
    } else {
        nb::handle h = nb::type<M>();
        if (h.is_valid())
            return nb::borrow(h);
        if constexpr (!std::is_class_v<M> ||
                      !nb::detail::is_base_caster_v<nb::detail::make_caster<M>>)
            return nb::module_::import_("typing").attr("Any");
    }
    if (mode.forward)
        return forward_ref(cpp_short_name<M>());
    throw unbound_type{};
}

template <typename M> struct annotate {
    static nb::object get(AnnotationMode mode) {
        if constexpr (std::is_same_v<M, bool>)
            return builtin(&PyBool_Type);
        else if constexpr (std::is_integral_v<M>)
            return builtin(&PyLong_Type);
        else if constexpr (std::is_floating_point_v<M>)
            return builtin(&PyFloat_Type);
        else if constexpr (std::is_pointer_v<M>)
            return optional_of(bound_type_or_any<std::remove_cv_t<std::remove_pointer_t<M>>>(mode));
        else
            return bound_type_or_any<M>(mode);
    }
};
template <typename... A> struct annotate<nb::ndarray<A...>> {
    static nb::object get(AnnotationMode) {
        return optional_of(nb::module_::import_("typing").attr("Any")); // None when empty
    }
};
template <> struct annotate<std::string> {
    static nb::object get(AnnotationMode) { return builtin(&PyUnicode_Type); }
};
template <typename U> struct annotate<Ref<U>> {
    static nb::object get(AnnotationMode mode) { return optional_of(bound_type_or_any<U>(mode)); }
};
template <typename U> struct annotate<WeakRef<U>> {
    static nb::object get(AnnotationMode mode) { return optional_of(bound_type_or_any<U>(mode)); }
};
template <typename U> struct annotate<std::optional<U>> {
    static nb::object get(AnnotationMode mode) { return optional_of(annotation<U>(mode)); }
};
/// An element of a container: `Inner` for a Ref<Inner> (a container of Ref<T> refuses None
/// items; std::optional<Ref<T>> elements allow them and say `Inner | None`).
template <typename U> nb::object element_annotation(AnnotationMode mode) {
    if constexpr (is_ref<U>::value)
        return bound_type_or_any<typename is_ref<U>::element>(mode);
    else
        return annotation<U>(mode);
}
template <typename U, typename A> struct annotate<std::vector<U, A>> {
    static nb::object get(AnnotationMode mode) {
        return generic(&PyList_Type, nb::make_tuple(element_annotation<U>(mode)));
    }
};
template <typename U, typename A> struct annotate<std::list<U, A>> {
    static nb::object get(AnnotationMode mode) {
        return generic(&PyList_Type, nb::make_tuple(element_annotation<U>(mode)));
    }
};
template <typename K, typename V, typename... R> struct annotate<std::map<K, V, R...>> {
    static nb::object get(AnnotationMode mode) {
        return generic(&PyDict_Type,
                       nb::make_tuple(annotation<K>(mode), element_annotation<V>(mode)));
    }
};
template <typename K, typename V, typename... R> struct annotate<std::unordered_map<K, V, R...>> {
    static nb::object get(AnnotationMode mode) {
        return generic(&PyDict_Type,
                       nb::make_tuple(annotation<K>(mode), element_annotation<V>(mode)));
    }
};
template <typename K, typename... R> struct annotate<std::set<K, R...>> {
    static nb::object get(AnnotationMode mode) {
        return generic(&PySet_Type, nb::make_tuple(annotation<K>(mode)));
    }
};
template <typename K, typename... R> struct annotate<std::unordered_set<K, R...>> {
    static nb::object get(AnnotationMode mode) {
        return generic(&PySet_Type, nb::make_tuple(annotation<K>(mode)));
    }
};
template <typename A, typename B> struct annotate<std::pair<A, B>> {
    static nb::object get(AnnotationMode mode) {
        return generic(&PyTuple_Type, nb::make_tuple(annotation<A>(mode), annotation<B>(mode)));
    }
};
template <typename... U> struct annotate<std::tuple<U...>> {
    static nb::object get(AnnotationMode mode) {
        return generic(&PyTuple_Type, nb::make_tuple(annotation<U>(mode)...));
    }
};

/// An annotation as people write it: `int`, `Inner | None`, `list[Inner]`, `dict[str, int]`.
inline std::string describe(nb::handle a) {
    if (PyType_Check(a.ptr()))
        return nb::cast<std::string>(a.attr("__name__"));
    if (PyUnicode_Check(a.ptr()))
        return nb::cast<std::string>(a);
    if (nb::hasattr(a, "__forward_arg__")) // typing.ForwardRef: a type not bound yet
        return nb::cast<std::string>(a.attr("__forward_arg__"));
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
    } else if constexpr (is_ndarray<M>::value) {
        // The array the field holds (the same NumPy object that was assigned), not a copy:
        // an ndarray is a view. Only memory without a Python owner is copied.
        return nb::detail::make_caster<M>::from_cpp(v, nb::rv_policy::automatic, nullptr).ptr();
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

/// A field's value could not be converted and nanobind said nothing (a type no caster and no
/// binding knows): TypeError naming the field, its C++ type and the fix, as nanobind's def_rw
/// does, instead of SystemError.
template <typename T, typename M>
__attribute__((noinline, cold)) PyObject *raise_unconvertible(PyObject *self, void *closure,
                                                              getter get) noexcept {
    if (PyErr_Occurred())
        return nullptr;
    const char *owner, *name;
    field_names(self, get, closure, &owner, &name);
    std::string type;
    try {
        type = cpp_name<M>();
    } catch (...) {
        type = "?";
    }
    PyErr_Format(PyExc_TypeError,
                 "%s.%s: unable to convert the field's C++ value (%s) to Python: bind the "
                 "type it holds with nb::class_, or include the nanobind caster header "
                 "(<nanobind/stl/...>) for it",
                 owner, name, type.c_str());
    return nullptr;
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
        PyObject *r = view_of<T, M>(self, member); // the member's address never changes
        return r ? r : raise_unconvertible<T, M>(self, closure, &get<T, M>);
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
        PyObject *r = to_python(copy);
        if constexpr (kind_of<M>() == Kind::converted)
            if (!r)
                return raise_unconvertible<T, M>(self, closure, &get<T, M>);
        return r;
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
        if constexpr (std::is_arithmetic_v<M> || is_weak_ref<M>::value) {
            return to_python(v); // a WeakRef is locked into a Ref of its own first
        } else if constexpr (is_ref<M>::value) {
            return get_copy(v); // out of line: the hot path above saves no registers
        } else {
            PyObject *r = get_copy(v);
            return r ? r : raise_unconvertible<T, M>(self, closure, &get<T, M>);
        }
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

/// Containers whose items are Ref<T>: they refuse None items (see the casters in nanobind.h).
template <typename M> struct refuses_none_items : std::false_type {};
template <typename U, typename A>
struct refuses_none_items<std::vector<Ref<U>, A>> : std::true_type {};
template <typename U, typename A>
struct refuses_none_items<std::list<Ref<U>, A>> : std::true_type {};
template <typename K, typename U, typename... R>
struct refuses_none_items<std::map<K, Ref<U>, R...>> : std::true_type {};
template <typename K, typename U, typename... R>
struct refuses_none_items<std::unordered_map<K, Ref<U>, R...>> : std::true_type {};

/// TypeError for a None item in a container of Ref<T>; false if `value` has none.
inline bool raise_none_item(const char *owner, const char *name, const std::string &want,
                            PyObject *value) {
    const char *fix = "a container of tether::Ref<T> holds objects only; declare its items "
                      "std::optional<tether::Ref<T>> in C++ to allow None";
    if (PyList_Check(value) || PyTuple_Check(value)) {
        Py_ssize_t n = PySequence_Fast_GET_SIZE(value);
        for (Py_ssize_t i = 0; i < n; ++i)
            if (PySequence_Fast_GET_ITEM(value, i) == Py_None) {
                PyErr_Format(PyExc_TypeError, "%s.%s: expected %s, got None at index %zd (%s)",
                             owner, name, want.c_str(), i, fix);
                return true;
            }
    } else if (PyDict_Check(value)) {
        Py_ssize_t pos = 0;
        PyObject *k, *v;
        while (PyDict_Next(value, &pos, &k, &v))
            if (v == Py_None) {
                PyErr_Format(PyExc_TypeError, "%s.%s: expected %s, got None for key %R (%s)",
                             owner, name, want.c_str(), k, fix);
                return true;
            }
    }
    return false;
}

/// TypeError for a value field `M` could not take, saying why as precisely as it can.
template <typename M> void raise_bad_value(const char *owner, const char *name, PyObject *value) {
    std::string want;
    try {
        if constexpr (is_ndarray<M>::value) // what nanobind's caster says it takes (dtype, shape)
            want = std::string(nb::detail::make_caster<M>::Name.text) + " or None";
        else
            want = describe(annotation<M>({true}));
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
    if constexpr (refuses_none_items<M>::value)
        if (raise_none_item(owner, name, want, value))
            return;
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

// ---- writes that may run out of memory ------------------------------------------------------
//
// nanobind's casters convert in a `noexcept` from_python: a std::bad_alloc in one (a
// vector's reserve, a list or map node, a std::string) would call std::terminate. So a field
// of a container, std::optional or std::string type is converted here instead, by the same
// steps as nanobind's list, dict, set, optional and string casters (and tether's, which
// refuse None items of Ref<T>), in code that may throw: set() turns std::bad_alloc into
// MemoryError, and a MemoryError CPython raises while converting stays a MemoryError rather
// than becoming "expected ..., got ...". Items of any other type (numbers, enums, bound
// classes, tether objects) still go through nanobind's caster, reused across the items as
// nanobind's containers do; they allocate no C++ memory while converting.

/// Writer<M>::own: tether converts M itself (Writer<M>::read); else nanobind's caster does.
template <typename M, typename = void> struct Writer {
    static constexpr bool own = false;
};

/// True for a type nanobind converts (it has a caster of its own, not a bound class).
template <typename M>
constexpr bool converted_v = !nb::detail::is_base_caster_v<nb::detail::make_caster<M>>;

/// Keep a pending MemoryError (returns false), clear any other error as nanobind's casters do.
inline bool keep_memory_error() noexcept {
    if (PyErr_Occurred() && !PyErr_ExceptionMatches(PyExc_MemoryError))
        PyErr_Clear();
    return false;
}

/// Converts the items of one container one by one and hands each to `put`.
template <typename E, bool = Writer<E>::own> struct ItemReader {
    // nanobind's caster, one for all the items (the Ref<T> caster settles the previous item's
    // count when it is reused, as in nanobind's list caster)
    nb::detail::make_caster<E> caster;
    template <typename Put>
    bool operator()(PyObject *src, uint32_t flags, nb::detail::cleanup_list *cleanup, Put &&put) {
        if (!caster.from_python(src, flags, cleanup) || !caster.template can_cast<E>())
            return false;
        put(caster.operator nb::detail::cast_t<E>());
        return true;
    }
};
template <typename E> struct ItemReader<E, true> {
    template <typename Put>
    bool operator()(PyObject *src, uint32_t flags, nb::detail::cleanup_list *cleanup, Put &&put) {
        E item{};
        if (!Writer<E>::read(src, flags, cleanup, item))
            return false;
        put(std::move(item));
        return true;
    }
};

/// Holds the temporary a sequence's or mapping's items were read from.
struct TempRef {
    PyObject *ptr = nullptr;
    ~TempRef() { Py_XDECREF(ptr); }
};

/// std::vector, std::list (nanobind's list_caster): any sequence but str and bytes.
template <typename List, typename E> struct SequenceWriter {
    static constexpr bool own = true;
    template <typename L> using has_reserve = decltype(std::declval<L &>().reserve(0));
    static bool read(PyObject *src, uint32_t flags, nb::detail::cleanup_list *cleanup, List &out) {
        out.clear();
        PyObject **items = nullptr;
        size_t size = 0;
        TempRef temp;
        if (PyUnicode_CheckExact(src) || PyBytes_CheckExact(src))
            return false;
#if !defined(Py_GIL_DISABLED) // the items of a list in place, as nanobind's seq_get
        if (PyList_CheckExact(src)) {
            size = (size_t) PyList_GET_SIZE(src);
            items = reinterpret_cast<PyListObject *>(src)->ob_item;
        } else
#endif
        if (PyTuple_CheckExact(src)) {
            size = (size_t) PyTuple_GET_SIZE(src);
            items = reinterpret_cast<PyTupleObject *>(src)->ob_item;
        } else {
            if (!PySequence_Check(src))
                return false;
            temp.ptr = PySequence_Tuple(src);
            if (!temp.ptr)
                return keep_memory_error();
            size = (size_t) PyTuple_GET_SIZE(temp.ptr);
            items = reinterpret_cast<PyTupleObject *>(temp.ptr)->ob_item;
        }
        if constexpr (nb::is_detected_v<has_reserve, List>)
            out.reserve(size); // may throw std::bad_alloc: set() says MemoryError
        ItemReader<E> item;
        uint32_t item_flags = nb::detail::flags_for_local_caster<E>(flags);
        for (size_t i = 0; i < size; ++i)
            if (!item(items[i], item_flags, cleanup,
                      [&](auto &&v) { out.push_back(std::forward<decltype(v)>(v)); }))
                return false;
        if constexpr (is_ref<E>::value) // tether's ref_list_caster: None items are refused
            for (const auto &x : out)
                if (!x)
                    return false;
        return true;
    }
};

/// std::map, std::unordered_map (nanobind's dict_caster): any mapping.
template <typename Map, typename K, typename V> struct MappingWriter {
    static constexpr bool own = true;
    static bool read(PyObject *src, uint32_t flags, nb::detail::cleanup_list *cleanup, Map &out) {
        out.clear();
        size_t size = 0;
        TempRef temp;
        PyObject **items = NB_CALL(mapping_get)(src, &size, &temp.ptr);
        if (!items) {
            // For a dict, mapping_get fails only when its snapshot cannot be allocated (it
            // clears that MemoryError: restore it).
            if (PyDict_CheckExact(src))
                PyErr_NoMemory();
            return keep_memory_error();
        }
        ItemReader<K> key;
        ItemReader<V> val;
        uint32_t key_flags = nb::detail::flags_for_local_caster<K>(flags),
                 val_flags = nb::detail::flags_for_local_caster<V>(flags);
        for (size_t i = 0; i < size; ++i) {
            std::optional<K> k;
            if (!key(items[2 * i], key_flags, cleanup,
                     [&](auto &&v) { k.emplace(std::forward<decltype(v)>(v)); }))
                return false;
            if (!val(items[2 * i + 1], val_flags, cleanup, [&](auto &&v) {
                    out.emplace(std::move(*k), std::forward<decltype(v)>(v));
                }))
                return false;
        }
        if constexpr (is_ref<V>::value) // tether's ref_dict_caster: None values are refused
            for (const auto &x : out)
                if (!x.second)
                    return false;
        return true;
    }
};

/// std::set, std::unordered_set (nanobind's set_caster): any iterable.
template <typename Set, typename K> struct SetWriter {
    static constexpr bool own = true;
    static bool read(PyObject *src, uint32_t flags, nb::detail::cleanup_list *cleanup, Set &out) {
        out.clear();
        if (!nb::detail::iterable_check(src))
            return false;
        TempRef iter{PyObject_GetIter(src)};
        if (!iter.ptr)
            return keep_memory_error();
        ItemReader<K> key;
        uint32_t key_flags = nb::detail::flags_for_local_caster<K>(flags);
        while (PyObject *k = PyIter_Next(iter.ptr)) {
            TempRef hold{k};
            if (!key(k, key_flags, cleanup,
                     [&](auto &&v) { out.emplace(std::forward<decltype(v)>(v)); }))
                return false;
        }
        return !PyErr_Occurred() || keep_memory_error();
    }
};

template <typename E, typename A>
struct Writer<std::vector<E, A>, std::enable_if_t<converted_v<std::vector<E, A>>>>
    : SequenceWriter<std::vector<E, A>, E> {};
template <typename E, typename A>
struct Writer<std::list<E, A>, std::enable_if_t<converted_v<std::list<E, A>>>>
    : SequenceWriter<std::list<E, A>, E> {};
template <typename K, typename V, typename C, typename A>
struct Writer<std::map<K, V, C, A>, std::enable_if_t<converted_v<std::map<K, V, C, A>>>>
    : MappingWriter<std::map<K, V, C, A>, K, V> {};
template <typename K, typename V, typename H, typename E, typename A>
struct Writer<std::unordered_map<K, V, H, E, A>,
              std::enable_if_t<converted_v<std::unordered_map<K, V, H, E, A>>>>
    : MappingWriter<std::unordered_map<K, V, H, E, A>, K, V> {};
template <typename K, typename C, typename A>
struct Writer<std::set<K, C, A>, std::enable_if_t<converted_v<std::set<K, C, A>>>>
    : SetWriter<std::set<K, C, A>, K> {};
template <typename K, typename H, typename E, typename A>
struct Writer<std::unordered_set<K, H, E, A>,
              std::enable_if_t<converted_v<std::unordered_set<K, H, E, A>>>>
    : SetWriter<std::unordered_set<K, H, E, A>, K> {};

/// std::optional (nanobind's optional_caster): None, or what the item accepts.
template <typename E> struct Writer<std::optional<E>, std::enable_if_t<converted_v<std::optional<E>>>> {
    static constexpr bool own = true;
    static bool read(PyObject *src, uint32_t flags, nb::detail::cleanup_list *cleanup,
                     std::optional<E> &out) {
        out.reset();
        if (src == Py_None)
            return true;
        ItemReader<E> item;
        return item(src, nb::detail::flags_for_local_caster<E>(flags), cleanup,
                    [&](auto &&v) { out.emplace(std::forward<decltype(v)>(v)); });
    }
};

/// nb::ndarray: None empties it (what an empty one reads as), else nanobind's caster.
template <typename... A> struct Writer<nb::ndarray<A...>> {
    static constexpr bool own = true;
    static bool read(PyObject *src, uint32_t flags, nb::detail::cleanup_list *cleanup,
                     nb::ndarray<A...> &out) {
        if (src == Py_None) {
            out = nb::ndarray<A...>();
            return true;
        }
        nb::detail::make_caster<nb::ndarray<A...>> c;
        if (!c.from_python(src, flags, cleanup))
            return keep_memory_error();
        out = c.value;
        return true;
    }
};

/// std::string (nanobind's string caster): a str, as UTF-8.
template <typename S>
struct Writer<S, std::enable_if_t<std::is_same_v<S, std::string> && converted_v<S>>> {
    static constexpr bool own = true;
    static bool read(PyObject *src, uint32_t, nb::detail::cleanup_list *, std::string &out) {
        if (!PyUnicode_Check(src))
            return false;
        Py_ssize_t size = 0;
        const char *utf8 = PyUnicode_AsUTF8AndSize(src, &size);
        if (!utf8)
            return keep_memory_error();
        out.assign(utf8, (size_t) size); // may throw std::bad_alloc
        return true;
    }
};

// ---- numeric vectors (pickle's buffers; python.h, "numeric vector fields") --------------------

/// std::vector<U> of a number type the buffer protocol names (not bool, not a character
/// type), with the standard allocator: its memory can be handed to pickle and replaced.
template <typename M> struct numeric_vector : std::false_type {};
template <typename U> struct numeric_vector<std::vector<U, std::allocator<U>>> {
    static constexpr bool value =
        std::is_same_v<U, float> || std::is_same_v<U, double> || std::is_same_v<U, signed char> ||
        std::is_same_v<U, unsigned char> || std::is_same_v<U, short> ||
        std::is_same_v<U, unsigned short> || std::is_same_v<U, int> ||
        std::is_same_v<U, unsigned int> || std::is_same_v<U, long> ||
        std::is_same_v<U, unsigned long> || std::is_same_v<U, long long> ||
        std::is_same_v<U, unsigned long long>;
};

/// The struct-module code of U (native size and alignment).
template <typename U> constexpr char format_of() {
    if constexpr (std::is_same_v<U, float>)
        return 'f';
    else if constexpr (std::is_same_v<U, double>)
        return 'd';
    else {
        constexpr bool s = std::is_signed_v<U>;
        static_assert(sizeof(U) == 1 || sizeof(U) == 2 || sizeof(U) == 4 || sizeof(U) == 8,
                      "an integer of 1, 2, 4 or 8 bytes");
        if constexpr (sizeof(U) == 1)
            return s ? 'b' : 'B';
        else if constexpr (sizeof(U) == 2)
            return s ? 'h' : 'H';
        else if constexpr (sizeof(U) == 4)
            return s ? 'i' : 'I';
        else
            return s ? 'q' : 'Q';
    }
}

/// A write to a field whose vector is exported (the setter, or VectorOps::assign).
template <typename T, typename M>
__attribute__((noinline, cold)) void raise_exported(PyObject *self, void *closure) noexcept {
    const char *owner, *name;
    field_names(self, &get<T, M>, closure, &owner, &name);
    PyErr_Format(PyExc_BufferError,
                 "%s.%s: cannot assign the field while a buffer of its memory is exported "
                 "(a pickle.PickleBuffer or memoryview from pickling the object is alive); "
                 "release it first",
                 owner, name);
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
    nb::detail::cleanup_list cleanup(self);
    const uint32_t flags = (uint32_t) nb::detail::cast_flags::convert;
    int rv = -1;
    bool exported = false;
    // Swaps `incoming` into the field; `incoming` then holds the old value, released by the
    // caller outside the lock.
    auto store = [&](M &incoming) {
        {
            py::WrapperLock lock(self);
            // Looked up only now: converting the value may have run Python code
            // (__index__, __float__, a sequence's __getitem__) that moved self's object
            // into C++, where it may already be gone.
            if (T *t = self_object<T>(self)) {
                if constexpr (numeric_vector<M>::value)
                    exported = py::vector_exported(&(t->*member)); // pickle handed it out
                if (!exported) {
                    std::swap(t->*member, incoming);
                    rv = 0;
                }
            }
        }
        if (exported)
            raise_exported<T, M>(self, closure);
        else if (rv != 0)
            py::raise_unusable(self);
    };
    try {
        bool ok;
        if constexpr (Writer<M>::own) {
            M incoming{};
            ok = Writer<M>::read(value, flags, &cleanup, incoming);
            if (ok)
                store(incoming);
        } else {
            nb::detail::make_caster<M> c;
            ok = c.from_python(value, flags, &cleanup);
            if (ok) {
                M incoming = c.operator nb::detail::cast_t<M>();
                store(incoming);
            }
        }
        if (!ok && !(PyErr_Occurred() && PyErr_ExceptionMatches(PyExc_MemoryError))) {
            field_names(self, &get<T, M>, closure, &owner, &name);
            try {
                raise_bad_value<M>(owner, name, value);
            } catch (const std::bad_alloc &) {
                PyErr_NoMemory();
            } catch (...) {
                PyErr_Format(PyExc_TypeError, "%s.%s: cannot take a %s", owner, name,
                             Py_TYPE(value)->tp_name);
            }
        }
    } catch (nb::python_error &e) {
        e.restore();
    } catch (const std::bad_alloc &) { // a container, string or copy too large: never abort
        PyErr_NoMemory();
    } catch (const std::exception &e) {
        PyErr_SetString(PyExc_TypeError, e.what());
    }
    cleanup.release();
    return rv;
}

/// The typed functions of a numeric vector field M = std::vector<U> of T (python.h,
/// VectorField), registered by def_field for the C++ reducer.
template <typename T, typename M> struct VectorOps {
    using U = typename M::value_type;

    static void data(Object *holder, void *closure, void **member, const void **items,
                     size_t *count) noexcept {
        M &v = static_cast<T *>(holder)->*Field<T, M>::member(closure);
        *member = &v;
        *items = v.data();
        *count = v.size();
    }

    static int assign(PyObject *self, void *closure, const void *src, size_t count) noexcept {
        M incoming;
        try { // one copy, outside the lock: a std::vector owns its memory
            if (reinterpret_cast<uintptr_t>(src) % alignof(U) == 0) {
                const U *first = static_cast<const U *>(src);
                incoming.assign(first, first + count);
            } else {
                incoming.resize(count);
                std::memcpy(incoming.data(), src, count * sizeof(U));
            }
        } catch (const std::exception &) { // bad_alloc, length_error
            PyErr_NoMemory();
            return -1;
        }
        int rv = -1;
        bool exported = false;
        {
            py::WrapperLock lock(self); // as set() does
            if (T *t = self_object<T>(self)) {
                M &v = t->*Field<T, M>::member(closure);
                exported = py::vector_exported(&v);
                if (!exported) {
                    v.swap(incoming);
                    rv = 0;
                }
            }
        }
        if (exported)
            raise_exported<T, M>(self, closure);
        else if (rv != 0)
            py::raise_unusable(self);
        return rv; // the old items are freed here, outside the lock
    }

    /// A table for the member `closure` names; lives with the type, as its PyGetSetDef.
    static const py::VectorField *make(void *closure) {
        return new py::VectorField{uint32_t(sizeof(py::VectorField)), format_of<U>(),
                                   std::is_floating_point_v<U> ? 'f'
                                   : std::is_signed_v<U>       ? 'i'
                                                               : 'u',
                                   uint16_t(sizeof(U)), closure, &data, &assign};
    }
};

} // namespace fields
} // namespace tether
