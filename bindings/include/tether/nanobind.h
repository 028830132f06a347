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
#include <nanobind/stl/detail/nb_dict.h>
#include <nanobind/stl/detail/nb_list.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>
#include <tether/python.h>

#include <atomic>
#include <list>
#include <map>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <vector>

namespace tether {

template <typename T> struct is_ref : std::false_type {};
template <typename T> struct is_ref<Ref<T>> : std::true_type { using element = T; };

/// The Python type bound for C++ type T with tether::class_ (nullptr if none). A type bound
/// with plain nb::class_ is not one: its instances hold T inside the wrapper, without a header.
template <typename T> PyTypeObject *py_type() noexcept {
    return py::type_for(detail::type_index_of<T>());
}

namespace detail {

/// T's Python type if T was bound with plain nb::class_ instead of tether::class_, else null.
template <typename T> PyObject *bound_by_plain_nanobind() noexcept {
    if (py_type<T>())
        return nullptr;
    return nanobind::type<T>().ptr();
}
using binding_check = PyObject *(*)() noexcept;

/// Every tether type this module's casters convert, recorded when the module is loaded, so
/// that the module can check at import that none was bound with nb::class_ (per module:
/// modules are built with hidden visibility).
inline std::vector<binding_check> &caster_types() noexcept {
    static std::vector<binding_check> types;
    return types;
}
inline bool note_caster_type(binding_check bound_by_nanobind) noexcept {
    try {
        caster_types().push_back(bound_by_nanobind);
    } catch (...) { // out of memory while loading: the check is only a diagnosis
    }
    return true;
}
template <typename T> inline const bool caster_type_noted = note_caster_type(&bound_by_plain_nanobind<T>);

/// Set by tether::init_module() (per module, like caster_types).
inline bool &module_initialized() noexcept {
    static bool done = false;
    return done;
}

} // namespace detail

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
        (void) tether::detail::caster_type_noted<T>; // checked at import (check_bindings)
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
        (void) tether::detail::caster_type_noted<T>;
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
        (void) tether::detail::caster_type_noted<T>;
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

/// Containers of tether::Ref<T> hold objects: a None item is refused, as nanobind refuses it
/// in a container of T (a field setter then names the field and the fix). Items declared
/// std::optional<tether::Ref<T>> accept None.
template <typename List>
struct ref_list_caster : list_caster<List, typename List::value_type> {
    bool from_python(handle src, uint32_t flags, cleanup_list *cleanup) noexcept {
        if (!list_caster<List, typename List::value_type>::from_python(src, flags, cleanup))
            return false;
        for (const auto &item : this->value)
            if (!item) {
                this->value.clear();
                return false;
            }
        return true;
    }
};
template <typename Map>
struct ref_dict_caster : dict_caster<Map, typename Map::key_type, typename Map::mapped_type> {
    bool from_python(handle src, uint32_t flags, cleanup_list *cleanup) noexcept {
        if (!dict_caster<Map, typename Map::key_type, typename Map::mapped_type>::from_python(
                src, flags, cleanup))
            return false;
        for (const auto &item : this->value)
            if (!item.second) {
                this->value.clear();
                return false;
            }
        return true;
    }
};
template <typename T, typename A>
struct type_caster<std::vector<tether::Ref<T>, A>>
    : ref_list_caster<std::vector<tether::Ref<T>, A>> {};
template <typename T, typename A>
struct type_caster<std::list<tether::Ref<T>, A>> : ref_list_caster<std::list<tether::Ref<T>, A>> {};
template <typename K, typename T, typename C, typename A>
struct type_caster<std::map<K, tether::Ref<T>, C, A>>
    : ref_dict_caster<std::map<K, tether::Ref<T>, C, A>> {};
template <typename K, typename T, typename H, typename E, typename A>
struct type_caster<std::unordered_map<K, tether::Ref<T>, H, E, A>>
    : ref_dict_caster<std::unordered_map<K, tether::Ref<T>, H, E, A>> {};

NAMESPACE_END(detail)
NAMESPACE_END(NB_NAMESPACE)

namespace tether {

namespace nb = nanobind;

/// Imports tether (the base type and the runtime) into the calling module. Call it first
/// in every NB_MODULE that binds tether types.
inline void init_module() {
    detail::module_initialized() = true;
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

/// Raises ImportError if a tether type this module converts was bound with plain nb::class_
/// (its instances would hold the object inside the wrapper, without tether's header, and
/// nanobind would abort when freeing one). Run after the module's body: by the module init
/// tether_add_module generates, and by modules built otherwise at the end of NB_MODULE.
inline void check_bindings(const char *module) {
    for (detail::binding_check bound_by_nanobind : detail::caster_types()) {
        PyObject *type = bound_by_nanobind(); // not `check`: a macro in nanobind's internals
        if (!type)
            continue;
        std::string name = nb::cast<std::string>(nb::handle(type).attr("__qualname__"));
        throw nb::import_error(
            (std::string(module) + ": " + name +
             " derives from tether::Object but is bound with nb::class_; bind it with "
             "tether::class_<" + name + ">(m, \"" + name + "\") and give it constructors with "
             "tether::init<...>() (nb::class_ builds the C++ object inside the Python object, "
             "without the header tether needs)")
                .c_str());
    }
}

} // namespace tether

#include <tether/weak_ref_caster.h>
#include <tether/fields.h>

namespace tether {

template <typename T> struct is_init : std::false_type {};
template <typename... Args> struct is_init<init<Args...>> : std::true_type {};
template <typename T> struct is_nb_init : std::false_type {};
template <typename... Args> struct is_nb_init<nb::init<Args...>> : std::true_type {};
template <typename Arg> struct is_nb_init<nb::init_implicit<Arg>> : std::true_type {};

namespace detail {

/// Every type, of any module, with a field whose annotation names a type not bound yet:
/// tether._core._deferred_annotations (a list), so that a type bound by another module
/// resolves them too.
inline nb::list types_with_deferred_annotations() {
    nb::object types = nb::module_::import_("tether._core").attr("_deferred_annotations");
    if (!PyList_CheckExact(types.ptr()))
        throw nb::type_error("tether._core._deferred_annotations was replaced: it must stay the "
                             "list tether made");
    return nb::borrow<nb::list>(types);
}

/// Field `def` of `type` names a type not bound yet: its annotation is a forward reference
/// (a string of the C++ names) until `compute` succeeds. `type.__tether_pending__[name]` is a
/// function that tries, writes the annotation (and the docstring tether made) and removes
/// itself; every later tether::class_, of any module, calls the pending functions
/// (resolve_deferred_annotations), and so does tether's Python layer before it reads
/// annotations.
inline void defer_annotation(PyTypeObject *type, PyGetSetDef *def, bool own_doc,
                             nb::object (*compute)(fields::AnnotationMode)) {
    nb::handle cls(reinterpret_cast<PyObject *>(type)); // bound types live for the process
    nb::object pending = nb::getattr(cls, "__dict__").attr("get")("__tether_pending__");
    if (pending.is_none()) {
        pending = nb::dict();
        nb::setattr(cls, "__tether_pending__", pending);
        types_with_deferred_annotations().append(cls);
    }
    const char *name = def->name;
    pending[name] = nb::cpp_function([cls, def, own_doc, compute]() -> bool {
        nb::object annotation;
        try {
            annotation = compute({false});
        } catch (fields::unbound_type &) {
            return false; // not bound yet
        }
        nb::getattr(cls, "__annotations__")[def->name] = annotation;
        if (own_doc)
            def->doc = (new std::string(std::string(def->name) + ": " +
                                        fields::describe(annotation)))
                           ->c_str(); // lives with the type, as the first one
        nb::object own = nb::getattr(cls, "__dict__").attr("get")("__tether_pending__");
        if (PyDict_CheckExact(own.ptr()) && PyDict_GetItemString(own.ptr(), def->name) &&
            PyDict_DelItemString(own.ptr(), def->name) != 0)
            throw nb::python_error();
        return true;
    });
}

/// Retries every deferred annotation (a type was just bound).
inline void resolve_deferred_annotations() {
    nb::list types = types_with_deferred_annotations();
    // A snapshot: resolving runs Python code, which may bind more types. (Tuples, not lists:
    // GCC's -Wstringop-overflow misreads the free-threaded PyList_GET_SIZE's atomic load.)
    nb::tuple snapshot = nb::steal<nb::tuple>(PyList_AsTuple(types.ptr()));
    if (!snapshot.is_valid())
        throw nb::python_error();
    if (snapshot.size() == 0)
        return;
    nb::list still;
    for (nb::handle cls : snapshot) {
        nb::object pending = nb::getattr(cls, "__dict__")["__tether_pending__"];
        if (!PyDict_CheckExact(pending.ptr()))
            throw nb::type_error("__tether_pending__ of a bound type was replaced: it must stay "
                                 "the dict tether made");
        nb::tuple resolvers = nb::steal<nb::tuple>(PySequence_Tuple(pending.attr("values")().ptr()));
        if (!resolvers.is_valid())
            throw nb::python_error();
        for (nb::handle resolve : resolvers)
            resolve();
        if (PyDict_Size(pending.ptr()) != 0)
            still.append(cls);
    }
    if (PyList_SetSlice(types.ptr(), 0, PY_SSIZE_T_MAX, still.ptr()) != 0)
        throw nb::python_error();
}

/// Fields the collector follows (bindings/src/cycles.cpp): owning references to tether
/// objects. WeakRef<U> fields never are: a weak link makes no cycle.
template <typename M> struct traced_field : std::false_type {};
template <typename U> struct traced_field<Ref<U>> : std::true_type {};
template <typename U> struct traced_field<std::optional<Ref<U>>> : std::true_type {};
template <typename U, typename A> struct traced_field<std::vector<Ref<U>, A>> : std::true_type {};

template <typename U> void trace_ref(Ref<U> &r, py::FieldOp op, py::FieldSink *sink) noexcept {
    if (op == py::FieldOp::visit) {
        if (Object *o = r.get())
            sink->object(sink, o);
    } else if (U *p = r.release()) {
        sink->object(sink, static_cast<Object *>(p)); // the sink owns the count now
    }
}
} // namespace detail

/// What a per-type trace hook (tether::class_::trace_refs) reports its object's hidden owning
/// references to: call it once per member that owns references to tether objects. Reading
/// only during a traversal; during a clear (the collector breaking a cycle) it moves the
/// references out, leaving the Refs empty and the optionals and vectors cleared.
class RefTracer {
public:
    template <typename U> void operator()(Ref<U> &r) noexcept { detail::trace_ref(r, op_, sink_); }
    template <typename U> void operator()(std::optional<Ref<U>> &r) noexcept {
        if (r)
            detail::trace_ref(*r, op_, sink_);
        if (op_ == py::FieldOp::clear)
            r.reset();
    }
    template <typename U, typename A> void operator()(std::vector<Ref<U>, A> &v) noexcept {
        for (auto &r : v)
            detail::trace_ref(r, op_, sink_);
        if (op_ == py::FieldOp::clear)
            v.clear();
    }
    /// True when the collector is breaking a cycle: references are being moved out (a hook
    /// that keeps references in a container of its own may also empty it then).
    bool clearing() const noexcept { return op_ == py::FieldOp::clear; }

    RefTracer(py::FieldOp op, py::FieldSink *sink) noexcept : op_(op), sink_(sink) {}
    RefTracer(const RefTracer &) = delete;
    RefTracer &operator=(const RefTracer &) = delete;

private:
    py::FieldOp op_;
    py::FieldSink *sink_;
};

namespace detail {

/// Reports (visit) or empties (clear) the field `closure` names of `holder`, a T (a
/// FieldTracer, python.h): the field is one member a RefTracer takes. Reads only: no
/// allocation, no Python.
template <typename T, typename M>
void trace_field(Object *holder, void *closure, py::FieldOp op, py::FieldSink *sink) noexcept {
    RefTracer tracer(op, sink);
    tracer(static_cast<T *>(holder)->*fields::Field<T, M>::member(closure));
}

/// A trace_refs hook, kept for the life of the process (one per call, at binding time).
template <typename T> struct TraceHook {
    void (*fn)(T &, RefTracer &) noexcept;
};
/// The FieldTracer (python.h) of a trace_refs hook: `closure` is its TraceHook<T>.
template <typename T>
void trace_hook(Object *holder, void *closure, py::FieldOp op, py::FieldSink *sink) noexcept {
    RefTracer tracer(op, sink);
    static_cast<TraceHook<T> *>(closure)->fn(*static_cast<T *>(holder), tracer);
}

/// The nb::class_ a tether::class_<T, Extra...> is: Extra as given when it names T's bound
/// base (a tether type), else with tether::Object as the base, so `tether::class_<T>(m, "T")`
/// makes a subclass of tether.Object as it must.
template <typename T, typename... Extra> struct nb_class_for {
    static constexpr bool names_base =
        ((std::is_base_of_v<Extra, T> && !std::is_same_v<Extra, T>) || ...);
    using type = std::conditional_t<names_base || std::is_same_v<T, Object>,
                                    nb::class_<T, Extra...>, nb::class_<T, Object, Extra...>>;
};
} // namespace detail

/// nb::class_ for types derived from tether::Object. Adds the tether type slots (see
/// bindings/src/type_slots.cpp), tether::init<> constructors and fast fields. Extra may
/// name a base class (tether::Object when none is named) and a trampoline (see
/// tether/trampoline.h), as for nb::class_. Every method returns tether::class_&, so calls
/// chain in any order.
template <typename T, typename... Extra>
class class_ : public detail::nb_class_for<T, Extra...>::type {
    static_assert(std::is_base_of_v<Object, T>,
                  "tether::class_<T>: T must derive from tether::Object (struct T : "
                  "tether::Object { ... }); bind a plain C++ value type with nb::class_");
    static_assert(((!std::is_base_of_v<Extra, T> || std::is_same_v<Extra, T> ||
                    std::is_base_of_v<Object, Extra>) && ...),
                  "tether::class_<T, Base>: Base must be a tether type (derive from "
                  "tether::Object) bound with tether::class_; a tether type's bases other "
                  "than its tether base are not visible to Python");

public:
    using Base = typename detail::nb_class_for<T, Extra...>::type;
    using Alias = typename Base::Alias; ///< the trampoline, or T

    template <typename... Args>
    class_(nb::handle scope, const char *name, const Args &...args)
        : Base(scope, name, args...) {
        if (!detail::module_initialized() && !std::is_same_v<T, Object>)
            throw nb::import_error(
                ("tether::class_<" + std::string(name) +
                 ">: this module did not call tether::init_module(); call it first in "
                 "NB_MODULE, before binding tether types")
                    .c_str());
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
        detail::resolve_deferred_annotations(); // fields of earlier types that name this one
    }

    /// Everything nb::class_ binds, returning tether::class_& (tether::init<> is below).
    template <typename First, typename... Rest,
              typename = std::enable_if_t<!is_init<std::decay_t<First>>::value>>
    class_ &def(First &&first, Rest &&...rest) {
        static_assert(!is_nb_init<std::decay_t<First>>::value,
                      "tether::class_: nb::init<...> builds the C++ object inside the Python "
                      "object, without tether's header; write .def(tether::init<...>()) instead");
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

    /// The per-type hook of the cycle collector, for owning references T keeps in members it
    /// does not expose with def_field (those are traced already):
    ///
    ///     .trace_refs([](Graph &g, tether::RefTracer &refs) noexcept {
    ///         for (auto &[name, node] : g.by_name) refs(node);
    ///     })
    ///
    /// `refs(member)` takes a Ref<U>, std::optional<Ref<U>> or std::vector<Ref<U>>. Report
    /// each owning reference exactly once, every time (an extra report can make the collector
    /// free a live object; a missing one only leaks), read only, and do not call Python. A
    /// captureless lambda or function; declared noexcept: the collector cannot unwind.
    template <typename Fn> class_ &trace_refs(Fn fn) {
        using Hook = void (*)(T &, RefTracer &) noexcept;
        static_assert(std::is_convertible_v<Fn, void (*)(T &, RefTracer &)> ||
                          std::is_convertible_v<Fn, Hook>,
                      "tether::class_<T>::trace_refs: pass a captureless lambda or a function "
                      "taking (T &, tether::RefTracer &)");
        static_assert(std::is_convertible_v<Fn, Hook>,
                      "tether::class_<T>::trace_refs: declare the hook noexcept "
                      "([](T &, tether::RefTracer &) noexcept { ... }): it runs inside the "
                      "garbage collector, which cannot handle an exception");
        auto *hook = new detail::TraceHook<T>{static_cast<Hook>(fn)}; // lives with the type
        if (py::register_traced_field(reinterpret_cast<PyTypeObject *>(this->ptr()),
                                      detail::type_index_of<T>(), detail::type_index_of<Alias>(),
                                      &detail::trace_hook<T>, hook) != 0)
            throw nb::python_error();
        return *this;
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
        fields::check_caster<M>(); // a std:: type whose caster header is missing: compile error
        PyTypeObject *tp = reinterpret_cast<PyTypeObject *>(this->ptr());
        nb::object annotation;
        bool pending = false;
        try {
            annotation = fields::annotation<M>();
        } catch (fields::unbound_type &) { // names a type bound later: resolved then
            annotation = nb::str(fields::describe(fields::annotation<M>({true})).c_str());
            pending = true;
        }
        bool own_doc = !doc;
        if (own_doc) // help() always says something: "value: int"
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
        if (pending)
            detail::defer_annotation(tp, def, own_doc, &fields::annotation<M>);
        if constexpr (detail::traced_field<M>::value) // an owning field: cycles through it collect
            if (py::register_traced_field(tp, detail::type_index_of<T>(),
                                          detail::type_index_of<Alias>(),
                                          &detail::trace_field<T, M>,
                                          fields::Field<T, M>::closure(member)) != 0)
                throw nb::python_error();
        if constexpr (fields::numeric_vector<M>::value) // pickle takes its memory as a buffer
            if (py::register_vector_field(def, fields::VectorOps<T, M>::make(
                                                   fields::Field<T, M>::closure(member))) != 0)
                throw nb::python_error();
        return *this;
    }
};

} // namespace tether

#include <tether/trampoline.h>
