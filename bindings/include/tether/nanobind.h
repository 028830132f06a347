// SPDX-License-Identifier: Apache-2.0
// bindings/include/tether/nanobind.h: binding tether types with nanobind
//
//     #include <tether/nanobind.h>
//     NB_MODULE(mymod, m) {
//         tether::init_module();                       // imports tether, checks the ABI
//         tether::class_<Point>(m, "Point")             // Point derives from tether::Object
//             .def(tether::init<int64_t>(), "x"_a = 0)  // Point(x) -> make_object<Point>(x)
//             .def_field("x", &Point::x, "The x coordinate");
//     }
//
// Every path from C++ to Python (getters, returns, containers, callbacks, nb::cast) goes
// through the casters below, and so through tether::wrap(): one wrapper per object.
#pragma once

#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>
#include <tether/python.h>

#include <atomic>
#include <string>
#include <type_traits>
#include <vector>

namespace tether {

template <typename T> struct is_ref : std::false_type {};
template <typename T> struct is_ref<Ref<T>> : std::true_type { using element = T; };

/// The Python type bound for C++ type T (nullptr if none).
template <typename T> PyTypeObject *py_type() noexcept {
    if (PyTypeObject *t = py::type_for(detail::type_index_of<T>()))
        return t;
    nanobind::handle h = nanobind::type<T>();
    return reinterpret_cast<PyTypeObject *>(h.ptr());
}

/// The one wrapper of `obj` (see python.h): the type lookup happens only off the hot path.
template <typename T> PyObject *wrap(T *obj) noexcept {
    if (!obj)
        Py_RETURN_NONE;
    Object *o = obj; // derived-to-base: adjusts the pointer when Object is not the first base
    if (PyObject *p = py::wrap_bound(o))
        return p;
    return py::wrap_slow(o, py_type<T>());
}

} // namespace tether

NAMESPACE_BEGIN(NB_NAMESPACE)
NAMESPACE_BEGIN(detail)

/// T*, T& and const T& for every T derived from tether::Object. Arguments are checked
/// against T's Python type; results are the object's one wrapper (never a copy: returning a
/// tether object by value is a compile error).
template <typename T>
struct type_caster<T, enable_if_t<std::is_base_of_v<tether::Object, T>>> : type_caster_base_tag {
    using Type = T;
    static constexpr auto Name = const_name<T>();
    template <typename T_> using Cast = precise_cast_t<T_>;

    T *value = nullptr;
    PyObject *unusable = nullptr; ///< a moved-from or uninitialized wrapper that was passed

    bool from_python(handle src, uint32_t flags, cleanup_list *) noexcept {
        PyObject *o = src.ptr();
        if (o == Py_None) {
            if (flags & (uint32_t) cast_flags::none_disallowed)
                return false;
            value = nullptr;
            return true;
        }
        PyTypeObject *tp = tether::py_type<T>();
        if (!tp || !PyObject_TypeCheck(o, tp))
            return false;
        tether::Object *obj = tether::py::object_of(o);
        if (!obj)
            unusable = o; // raise the precise error when the call uses it (below)
        value = static_cast<T *>(obj); // the Python type check proved the dynamic type
        return true;
    }

    template <typename T_>
    static handle from_cpp(T_ &&v, rv_policy, cleanup_list *) noexcept {
        static_assert(std::is_pointer_v<std::remove_reference_t<T_>> ||
                          std::is_lvalue_reference_v<T_>,
                      "tether objects cannot be returned to Python by value: return a "
                      "tether::Ref<T>, a T* or a T& to an object made with make_object");
        const T *p;
        if constexpr (std::is_pointer_v<std::remove_reference_t<T_>>)
            p = v;
        else
            p = &v;
        return tether::wrap(const_cast<T *>(p));
    }

    // Containers, optionals and nb::cast ask can_cast() before casting, inside noexcept code:
    // refuse unusable wrappers there (a plain conversion failure). Top-level arguments skip
    // can_cast, and their cast operator raises the precise error inside nanobind's try block.
    template <typename T_> bool can_cast() const noexcept {
        return !unusable && (std::is_pointer_v<T_> || value != nullptr);
    }

    void ensure_usable() {
        if (unusable) {
            tether::py::raise_unusable(unusable);
            throw python_error();
        }
    }
    operator T *() {
        ensure_usable();
        return value;
    }
    operator T &() {
        ensure_usable();
        return *value;
    }
    operator T &&() {
        ensure_usable();
        return (T &&) *value;
    }
};

/// tether::Ref<T>. Accepts a wrapper (a new strong count) or tether.move(wrapper) (takes the
/// wrapper's own count and detaches the wrapper: transition T9 in header.h, done only when
/// the call is really made, so a failed overload never consumes anything).
template <typename T> struct type_caster<tether::Ref<T>> {
    using Value = tether::Ref<T>;
    static constexpr auto Name = make_caster<T>::Name;
    template <typename T_> using Cast = movable_cast_t<T_>;

    Value value;
    PyObject *move_src = nullptr;
    PyObject *quiet_src = nullptr; ///< the wrapper whose object `value` counted quietly
    mutable bool quiet_owned = false; ///< this caster holds a reference to quiet_src

    type_caster() = default;
    type_caster(const type_caster &) = delete;
    type_caster &operator=(const type_caster &) = delete;
    /// The call is over (or never happened): settle what it may have stored or dropped.
    /// quiet_src is still alive: the caller holds it (an argument), or we do (can_cast).
    ~type_caster() {
        if (quiet_src)
            settle_quiet();
    }
    void settle_quiet() noexcept {
        PyObject *src = quiet_src;
        quiet_src = nullptr;
        tether::py::settle_after_call(src);
        if (quiet_owned) {
            quiet_owned = false;
            Py_DECREF(src);
        }
    }

    /// HOT: every Ref<T> argument. A usable wrapper of the right type is handled inline;
    /// None, move tokens, unusable wrappers and reused casters take the out-of-line path.
    __attribute__((always_inline)) bool from_python(handle src, uint32_t flags,
                                                    cleanup_list *cleanup) noexcept {
        PyObject *o = src.ptr();
        PyTypeObject *tp = tether::py_type<T>();
        PyTypeObject *type = Py_TYPE(o);
        tether::Object *obj;
        if (!quiet_src && !value && tp &&
            (type == tp || type->tp_base == tp || PyType_IsSubtype(type, tp)) &&
            (obj = tether::py::object_of(o)) != nullptr) {
            // Fields first, the locked add last (measured: echo(x) 0.5 ns faster than the
            // other order on 3.11).
#if defined(Py_GIL_DISABLED)
            // Another thread may move o's object away meanwhile: count first, then keep it.
            if (!tether::py::take_quiet(o, obj)) {
                move_src = o; // moved from: take_move() raises precisely
                return true;
            }
            value = Value::adopt(static_cast<T *>(obj));
            quiet_src = o;
#else
            value = Value::adopt(static_cast<T *>(obj)); // the type check proved it
            quiet_src = o;
            // A count without the E1 edge (header.h): the destructor settles once the call
            // has shown whether C++ kept one. (An object without a header never gets the
            // bits: for it this is a plain count.)
            tether::py::inc_ref_quiet(obj);
#endif
            return true;
        }
        return from_python_other(o, tp, flags, cleanup);
    }

    __attribute__((noinline)) bool from_python_other(PyObject *o, PyTypeObject *tp, uint32_t,
                                                     cleanup_list *) noexcept {
        if (quiet_src || value) { // containers reuse one caster for every element
            value.reset(); // normally moved out already
            if (quiet_src)
                settle_quiet();
            if (tp && PyObject_TypeCheck(o, tp))
                if (tether::Object *obj = tether::py::object_of(o))
                    if (tether::py::take_quiet(o, obj)) {
                        value = Value::adopt(static_cast<T *>(obj));
                        quiet_src = o;
                        return true;
                    }
        }
        if (o == Py_None) {
            value.reset();
            return true;
        }
        if (!tp)
            return false;
        if (PyObject_TypeCheck(o, tp)) {
            move_src = o; // moved-from or uninitialized: take_move() raises precisely
            return true;
        }
        if (PyObject *target = tether::py::move_token_target(o)) {
            if (!PyObject_TypeCheck(target, tp))
                return false;
            move_src = target;
            return true;
        }
        return false;
    }

    static handle from_cpp(const Value &v, rv_policy, cleanup_list *) noexcept {
        return tether::wrap(v.get());
    }

    /// See the T* caster: nested conversions must not throw, so refuse what take_move would.
    /// Only containers, optionals and nb::cast ask, and they may let go of the item before
    /// this caster settles (a temporary sequence's items die with it): hold it until then,
    /// or its wrapper could die while the quiet count is not yet settled.
    template <typename T_> bool can_cast() const noexcept {
        if (quiet_src && !quiet_owned) {
            Py_INCREF(quiet_src);
            quiet_owned = true;
        }
        return !move_src || tether::py::object_of(move_src) != nullptr;
    }

    void take_move() {
        if (!move_src)
            return;
        PyObject *src = move_src;
        move_src = nullptr;
        tether::Object *obj = tether::py::move_out(src);
        if (!obj)
            throw python_error();
        value = Value::adopt(static_cast<T *>(obj));
    }
    explicit operator Value *() {
        take_move();
        return &value;
    }
    explicit operator Value &() {
        take_move();
        return value;
    }
    explicit operator Value &&() {
        take_move();
        return (Value &&) value;
    }
};

NAMESPACE_END(detail)
NAMESPACE_END(NB_NAMESPACE)

namespace tether {

namespace nb = nanobind;

/// Imports tether (the base type and the runtime) into the calling module. Call it first
/// in every NB_MODULE that binds tether types.
inline void init_module() {
    nb::module_::import_("tether._core");
    if (!check_abi()) // this module's headers against the libtether the process loaded
        throw nb::import_error(
            ("tether: this module was compiled against tether ABI " + std::to_string(abi_version) +
             " but the loaded libtether has ABI " + std::to_string(detail::runtime_abi_version()) +
             "; rebuild it against the installed tether")
                .c_str());
    if (py::initialize() != 0)
        throw nb::python_error();
}

/// `.def(tether::init<Args...>())`: the bound __init__, which makes the object with
/// make_object<T>(args...) and ties it to the wrapper Python just allocated.
template <typename... Args> struct init {};

} // namespace tether

#include <tether/weak_ref_caster.h>
#include <tether/fields.h>

namespace tether {

template <typename T> struct is_init : std::false_type {};
template <typename... Args> struct is_init<init<Args...>> : std::true_type {};

/// nb::class_ for types derived from tether::Object. Adds the tether type slots (see
/// bindings/src/type_slots.cpp), tether::init<> constructors and fast fields. Extra may
/// name a base class and a trampoline (see tether/trampoline.h), as for nb::class_. Every
/// method returns tether::class_&, so calls chain in any order.
template <typename T, typename... Extra> class class_ : public nb::class_<T, Extra...> {
    static_assert(std::is_base_of_v<Object, T>, "tether::class_<T>: T must derive from tether::Object");

public:
    using Base = nb::class_<T, Extra...>;
    using Alias = typename Base::Alias; ///< the trampoline, or T

    template <typename... Args>
    class_(nb::handle scope, const char *name, const Args &...args)
        : Base(scope, name, args...) {
        PyTypeObject *tp = reinterpret_cast<PyTypeObject *>(this->ptr());
        if (py::install_type(tp, detail::type_index_of<T>()) != 0)
            throw nb::python_error();
        if constexpr (!std::is_same_v<Alias, T>) {
            // A trampoline object reaching Python without its wrapper (after tether.move)
            // gets T's type, as nanobind does: the table owns one reference, as for T.
            Py_INCREF(tp);
            detail::type_slot(detail::type_index_of<Alias>())->store(tp, std::memory_order_release);
        }
        nb::setattr(*this, "__tether_fields__", nb::tuple());
        nb::setattr(*this, "__tether_readonly__", nb::tuple());
        nb::setattr(*this, "__tether_init__", nb::tuple());
        nb::setattr(*this, "__annotations__", nb::dict());
    }

    /// Everything nb::class_ binds, returning tether::class_& (tether::init<> is below).
    template <typename First, typename... Rest,
              typename = std::enable_if_t<!is_init<std::decay_t<First>>::value>>
    class_ &def(First &&first, Rest &&...rest) {
        Base::def(std::forward<First>(first), std::forward<Rest>(rest)...);
        return *this;
    }
#define TETHER_FORWARD(method)                                                                 \
    template <typename... A> class_ &method(A &&...a) {                                        \
        Base::method(std::forward<A>(a)...);                                                   \
        return *this;                                                                          \
    }
    TETHER_FORWARD(def_static)
    TETHER_FORWARD(def_rw)
    TETHER_FORWARD(def_ro)
    TETHER_FORWARD(def_rw_static)
    TETHER_FORWARD(def_ro_static)
    TETHER_FORWARD(def_prop_rw)
    TETHER_FORWARD(def_prop_ro)
    TETHER_FORWARD(def_prop_rw_static)
    TETHER_FORWARD(def_prop_ro_static)
#undef TETHER_FORWARD

    /// `T(args...)` makes the object with make_object<T>(args...).
    template <typename... Args, typename... Extras>
    class_ &def(init<Args...>, const Extras &...extras) {
        // The type this __init__ belongs to: install_type keeps it alive for the whole
        // process, so holding its address is safe (unlike caching a subclass that passed).
        PyTypeObject *bound = reinterpret_cast<PyTypeObject *>(this->ptr());
        Base::def(
            "__init__",
            [bound](nb::handle self, Args... args) {
                // HOT: every construction. An exact match is one compare; subclasses walk the MRO.
                if (Py_TYPE(self.ptr()) != bound && !PyType_IsSubtype(Py_TYPE(self.ptr()), bound))
                    throw nb::type_error("__init__: self is not an instance of the bound type");
                Ref<T> obj = make_for(self.ptr(), bound, std::forward<Args>(args)...);
                if (!py::bind_new(self.ptr(), obj.release()))
                    throw nb::python_error();
            },
            extras...);
        record_init(sizeof...(Args), extras...);
        return *this;
    }

    /// A read/write field stored in T, declared once: the getter/setter pair, its docstring,
    /// its annotation, and its entry in __tether_fields__ (what pickle, copy and dataclasses
    /// read).
    template <typename M>
    class_ &def_field(const char *name, M T::*member, const char *doc = nullptr) {
        return add_field(name, member, doc, true);
    }
    template <typename M>
    class_ &def_field_ro(const char *name, M T::*member, const char *doc = nullptr) {
        return add_field(name, member, doc, false);
    }

private:
    /// A T for the bound class itself, the trampoline (Alias) for a Python subclass, as
    /// nanobind does: only Python subclasses pay for override lookups.
    /// The first reference is the wrapper's from the start (WRAPPED): bind_new then needs no
    /// atomic read-modify-write.
    template <typename... Args>
    static Ref<T> make_for(PyObject *self, PyTypeObject *bound, Args &&...args) {
        if constexpr (std::is_same_v<T, Alias>) {
            static_assert(!std::is_abstract_v<T>,
                          "tether::init<> on an abstract class needs a trampoline: "
                          "tether::class_<T, Base, Trampoline> (see tether/trampoline.h)");
            (void) self;
            (void) bound;
            return detail::make_object_impl<T>(true, std::forward<Args>(args)...);
        } else {
            if constexpr (!std::is_abstract_v<T>)
                if (Py_TYPE(self) == bound)
                    return detail::make_object_impl<T>(true, std::forward<Args>(args)...);
            return detail::make_object_impl<Alias>(true, std::forward<Args>(args)...);
        }
    }

    /// Appends one overload to T.__tether_init__: a tuple with, per parameter, `(name,)` or
    /// `(name, default)` (name None when nb::arg was not given). Pickle and dataclasses
    /// read it (pkg/tether/_fields.py): no signature text is parsed.
    template <typename... Extras> void record_init(size_t arity, const Extras &...extras) {
        nb::list params;
        (add_param(params, extras), ...);
        if (params.size() != arity) { // unnamed parameters
            params = nb::list();
            for (size_t i = 0; i < arity; ++i)
                params.append(nb::make_tuple(nb::none()));
        }
        nb::list overloads;
        for (nb::handle h : nb::borrow<nb::tuple>(nb::getattr(*this, "__tether_init__")))
            overloads.append(h);
        overloads.append(nb::tuple(params));
        nb::setattr(*this, "__tether_init__", nb::tuple(overloads));
    }
    template <uint32_t F, bool L> static void add_param(nb::list &out, const nb::arg_t<F, L> &a) {
        out.append(nb::make_tuple(a.name_ ? nb::object(nb::str(a.name_)) : nb::none()));
    }
    template <uint32_t F, bool L> static void add_param(nb::list &out, const nb::arg_v_t<F, L> &a) {
        out.append(nb::make_tuple(a.name_ ? nb::object(nb::str(a.name_)) : nb::none(), a.value));
    }
    template <typename X> static void add_param(nb::list &, const X &) {} // docstrings, policies

    template <typename M>
    class_ &add_field(const char *name, M T::*member, const char *doc, bool writable) {
        PyTypeObject *tp = reinterpret_cast<PyTypeObject *>(this->ptr());
        nb::object annotation = fields::annotation<M>();
        if (!doc) // help() always says something: "value: int"
            doc = (new std::string(std::string(name) + ": " + fields::describe(annotation)))
                      ->c_str(); // lives with the type
        auto *def = new PyGetSetDef{name, &fields::get<T, M>,                // lives with the type
                                    writable ? &fields::set<T, M> : nullptr, doc,
                                    fields::Field<T, M>::closure(member)};
        nb::object descr = nb::steal(PyDescr_NewGetSet(tp, def));
        if (!descr.is_valid())
            throw nb::python_error();
        nb::setattr(*this, name, descr);
        nb::tuple old = nb::borrow<nb::tuple>(nb::getattr(*this, "__tether_fields__"));
        nb::list names;
        for (nb::handle h : old)
            names.append(h);
        names.append(nb::str(name));
        nb::setattr(*this, "__tether_fields__", nb::tuple(names));
        nb::getattr(*this, "__annotations__")[name] = annotation;
        if (!writable) {
            nb::list ro;
            for (nb::handle h : nb::borrow<nb::tuple>(nb::getattr(*this, "__tether_readonly__")))
                ro.append(h);
            ro.append(nb::str(name));
            nb::setattr(*this, "__tether_readonly__", nb::tuple(ro));
        }
        return *this;
    }
};

} // namespace tether

#include <tether/trampoline.h>
