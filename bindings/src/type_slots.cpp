// SPDX-License-Identifier: Apache-2.0
// bindings/src/type_slots.cpp: the CPython type slots of tether types (tp_new and the wrapper's
// allocation, the type call, tp_dealloc installation), the move token, and process-wide setup
#include "cycles.h"
#include "deferred_edges.h"
#include "lifecycle.h"

#include <tether/compat.h>
#include "runtime_guard.h" // one runtime per process (issue 11)

#include <cstring>

#include <atomic>
#include <vector>

namespace tether::py {

namespace {
PyObject *g_str_init = nullptr;
PyObject *g_str_class = nullptr;
PyTypeObject *g_move_token_type = nullptr;
std::atomic<bool> g_initialized{false};

struct MoveToken {
    PyObject_HEAD
    PyObject *target;
};

void move_token_dealloc(PyObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    Py_XDECREF(reinterpret_cast<MoveToken *>(self)->target);
    tp->tp_free(self);
    Py_DECREF(tp);
}

PyObject *move_token_repr(PyObject *self) {
    PyObject *t = reinterpret_cast<MoveToken *>(self)->target;
    return PyUnicode_FromFormat("tether.move(<%s object at %p>)", Py_TYPE(t)->tp_name, t);
}

PyType_Slot move_token_slots[] = {
    {Py_tp_dealloc, (void *) move_token_dealloc},
    {Py_tp_repr, (void *) move_token_repr},
    {Py_tp_doc, (void *) "What tether.move(x) returns: passes x's object to a C++ Ref<T>&& "
                         "parameter, which takes it over; x is unusable afterwards."},
    {0, nullptr},
};
PyType_Spec move_token_spec = {"tether.Moved", sizeof(MoveToken), 0, Py_TPFLAGS_DEFAULT,
                               move_token_slots};

PyObject *tp_new_impl(PyTypeObject *type, PyObject *, PyObject *) {
    return alloc_wrapper(type);
}

/// The bound __init__ of `type` (borrowed). HOT: every construction. The last answer per
/// type is kept while the type's version tag is unchanged (any change to the type or its
/// bases gives it a new tag; tag 0 means "no tag": not cached).
#if !defined(Py_GIL_DISABLED)
PyObject *lookup_init(PyTypeObject *type) noexcept {
    struct Entry {
        PyTypeObject *type;
        unsigned int version;
        PyObject *init;
    };
    static Entry cache[64];
    Entry &e = cache[(reinterpret_cast<uintptr_t>(type) >> 6) & 63];
    if (e.type == type && e.version == type->tp_version_tag && type->tp_version_tag != 0)
        return e.init;
    PyObject *init = compat::type_lookup(type, g_str_init); // assigns a version tag if it can
    e = Entry{type, type->tp_version_tag, init};
    return init;
}
#else
/// Free-threaded: the same cache, read without a lock or any write to shared memory (so
/// construction scales across threads): each entry has a sequence count, odd while a writer
/// (serialised by a mutex) changes it. The cache keeps a reference to every __init__ it has
/// held, so an answer read just as another thread replaces __init__ stays a live object:
/// one per (type, version tag), and CPython gives a type at most ~1000 tags.
struct InitEntry {
    std::atomic<uint32_t> seq{0};
    std::atomic<PyTypeObject *> type{nullptr};
    std::atomic<unsigned int> version{0};
    std::atomic<PyObject *> init{nullptr};
};
InitEntry g_init_cache[64];
PyMutex g_init_cache_mutex = {0};
std::vector<PyObject *> *g_init_kept = nullptr; // under g_init_cache_mutex; never freed

unsigned int version_tag(PyTypeObject *type) noexcept {
    return __atomic_load_n(&type->tp_version_tag, __ATOMIC_ACQUIRE);
}

PyObject *lookup_init(PyTypeObject *type) noexcept {
    InitEntry &e = g_init_cache[(reinterpret_cast<uintptr_t>(type) >> 6) & 63];
    unsigned int v = version_tag(type);
    uint32_t s1 = e.seq.load(std::memory_order_acquire);
    if (v != 0 && !(s1 & 1)) {
        PyTypeObject *t = e.type.load(std::memory_order_relaxed);
        unsigned int ev = e.version.load(std::memory_order_relaxed);
        PyObject *init = e.init.load(std::memory_order_relaxed);
        std::atomic_thread_fence(std::memory_order_acquire);
        if (e.seq.load(std::memory_order_relaxed) == s1 && t == type && ev == v)
            return init;
    }
    PyObject *init = compat::type_lookup(type, g_str_init); // assigns a version tag if it can
    if (!init || v == 0 || version_tag(type) != v)
        return init; // untagged, or changed meanwhile: do not cache
    PyMutex_Lock(&g_init_cache_mutex);
    if (!g_init_kept)
        g_init_kept = new std::vector<PyObject *>();
    bool kept = false;
    for (PyObject *k : *g_init_kept)
        kept = kept || k == init;
    if (!kept) {
        Py_INCREF(init);
        g_init_kept->push_back(init);
    }
    uint32_t s = e.seq.load(std::memory_order_relaxed);
    e.seq.store(s + 1, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_release);
    e.type.store(type, std::memory_order_relaxed);
    e.version.store(v, std::memory_order_relaxed);
    e.init.store(init, std::memory_order_relaxed);
    e.seq.store(s + 2, std::memory_order_release);
    PyMutex_Unlock(&g_init_cache_mutex);
    return init;
}
#endif

/// For an __init__ without a vectorcall pointer (a callable a user assigned).
PyObject *vectorcall_generic(PyObject *callable, PyObject *const *args, size_t nargsf,
                             PyObject *kwnames) {
    return PyObject_Vectorcall(callable, args, nargsf, kwnames);
}

/// Calling a bound tether type: make the wrapper, then run the bound __init__ on it, which
/// creates the object with make_object and ties the two (bind_new). Python subclasses do
/// not use this: CPython's type call runs tp_new_impl and then their own __init__.
PyObject *type_vectorcall(PyObject *type_obj, PyObject *const *args, size_t nargsf,
                          PyObject *kwnames) {
    PyTypeObject *type = reinterpret_cast<PyTypeObject *>(type_obj);
    PyObject *init = lookup_init(type);
    if (!init || Py_IS_TYPE(init, &PyWrapperDescr_Type)) {
        PyErr_Format(PyExc_TypeError, "%s: no constructor defined!", type->tp_name);
        return nullptr;
    }
    PyObject *self = alloc_wrapper(type);
    if (!self)
        return nullptr;

    // HOT: the bound __init__ (a nanobind function) through its vectorcall pointer, without
    // PyObject_Vectorcall's lookup and result check (the error path below does the check).
    vectorcallfunc call = vectorcall_generic;
    PyTypeObject *init_type = Py_TYPE(init);
    if (PyType_HasFeature(init_type, Py_TPFLAGS_HAVE_VECTORCALL)) // PyVectorcall_Function, inline
        if (vectorcallfunc f = *reinterpret_cast<vectorcallfunc *>(
                reinterpret_cast<char *>(init) + init_type->tp_vectorcall_offset))
            call = f;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    PyObject *rv;
    if (nargsf & PY_VECTORCALL_ARGUMENTS_OFFSET) {
        // The caller lent us args[-1]: put self there (the documented vectorcall contract).
        PyObject **a = const_cast<PyObject **>(args) - 1;
        PyObject *saved = a[0];
        a[0] = self;
        rv = call(init, a, (size_t) (nargs + 1), kwnames);
        a[0] = saved;
    } else {
        PyObject *small[8];
        Py_ssize_t total = nargs + nkw + 1;
        PyObject **a = total <= 8 ? small
                                  : static_cast<PyObject **>(PyMem_Malloc(sizeof(PyObject *) * (size_t) total));
        if (!a) {
            Py_DECREF(self);
            return PyErr_NoMemory();
        }
        a[0] = self;
        for (Py_ssize_t i = 0; i < nargs + nkw; ++i)
            a[i + 1] = args[i];
        rv = call(init, a, (size_t) (nargs + 1), kwnames);
        if (a != small)
            PyMem_Free(a);
    }
    if (!rv) {
        if (!PyErr_Occurred())
            PyErr_Format(PyExc_SystemError, "%s.__init__ failed without setting an exception",
                         type->tp_name);
        Py_DECREF(self);
        return nullptr;
    }
    Py_DECREF(rv);
    return self;
}

} // namespace

PyObject *alloc_wrapper(PyTypeObject *type) noexcept {
    PyObject *self;
    if (!PyType_IS_GC(type) && type->tp_dictoffset == 0 && type->tp_itemsize == 0 &&
        (type->tp_weaklistoffset == 0 || type->tp_weaklistoffset == (Py_ssize_t) sizeof(Wrapper))) {
        // HOT: every fresh wrapper of a bound type. Only the nb_inst part, the object
        // pointer and (if the type has one) the weakref list exist: allocate just that.
        // Two constant sizes, each cleared with a few vector stores: a memset of a size known
        // only at run time compiles to `rep stos`, whose start-up cost was 6.6 % of a
        // construction's time on 3.13t (perf, AMD EPYC).
        constexpr size_t plain = sizeof(Wrapper), weak = sizeof(Wrapper) + sizeof(PyObject *);
        bool has_weaklist = type->tp_weaklistoffset != 0;
        self = static_cast<PyObject *>(PyObject_Malloc(has_weaklist ? weak : plain));
        if (!self)
            return PyErr_NoMemory();
        if (has_weaklist)
            std::memset(static_cast<void *>(self), 0, weak);
        else
            std::memset(static_cast<void *>(self), 0, plain);
        PyObject_Init(self, type);
    } else {
        self = type->tp_alloc(type, 0);
        if (!self)
            return nullptr;
    }
    Wrapper *w = reinterpret_cast<Wrapper *>(self);
    w->offset = (int32_t) offsetof(Wrapper, object);
    w->state = InstState{};
    w->state.state = state_uninitialized;
    w->object = nullptr;
    return self;
}

PyObject *make_move_token(PyObject *wrapper) noexcept {
    PyObject *t = PyType_GenericAlloc(g_move_token_type, 0);
    if (!t)
        return nullptr;
    Py_INCREF(wrapper);
    reinterpret_cast<MoveToken *>(t)->target = wrapper;
    return t;
}

PyObject *move_token_target(PyObject *o) noexcept {
    return Py_IS_TYPE(o, g_move_token_type) ? reinterpret_cast<MoveToken *>(o)->target : nullptr;
}

// ---- __class__ assignment ---------------------------------------------------------------------
//
// CPython lets `o.__class__ = C` through when the two layouts match, and every tether wrapper
// has the same layout (nb_inst, the object pointer, a weakref list) whatever C++ type it wraps:
// `inner.__class__ = Outer` would have Outer's getters read an Inner as an Outer. So
// tether.Object carries its own __class__ descriptor: the new class must be a Python type for
// the object's C++ type (its bound type or a bound base, or a Python subclass of one); then
// object.__class__'s own checks run (layout, __dict__ and slots).
namespace {

/// A type that tether::class_ registered (install_type), as opposed to a Python subclass.
bool is_bound_type(PyTypeObject *t) noexcept {
    for (uint32_t i = 0; i < detail::max_types; ++i) // rare (an assignment), so a scan will do
        if (type_for(i) == t)
            return true;
    return false;
}

/// The first bound type in t's MRO (t itself for a bound type), or nullptr.
PyTypeObject *bound_type_of(PyTypeObject *t) noexcept {
    PyObject *mro = t->tp_mro;
    for (Py_ssize_t i = 0; mro && i < PyTuple_GET_SIZE(mro); ++i) {
        auto *u = reinterpret_cast<PyTypeObject *>(PyTuple_GET_ITEM(mro, i));
        if (is_bound_type(u))
            return u;
    }
    return nullptr;
}

PyObject *class_get(PyObject *self, void *) noexcept {
    return Py_NewRef(reinterpret_cast<PyObject *>(Py_TYPE(self)));
}

int class_set(PyObject *self, PyObject *value, void *) noexcept {
    if (value && PyType_Check(value)) {
        PyTypeObject *want = bound_type_of(reinterpret_cast<PyTypeObject *>(value));
        PyTypeObject *have = nullptr;
        {
            WrapperLock lock(self); // the object stays while we look
            if (Object *obj = object_of(self))
                have = type_for(obj->type_index());
        }
        if (!have) // moved-from, uninitialized, or a C++ type with no Python type of its own
            have = bound_type_of(Py_TYPE(self));
        if (!want || !have || !PyType_IsSubtype(have, want)) {
            PyErr_Format(PyExc_TypeError,
                         "__class__ assignment: '%s' is not a Python type for this object's "
                         "C++ type ('%s')",
                         reinterpret_cast<PyTypeObject *>(value)->tp_name,
                         have ? have->tp_name : Py_TYPE(self)->tp_name);
            return -1;
        }
    }
    // object.__class__ itself: its layout checks, and the swap of the type reference.
    PyObject *base = compat::type_lookup(&PyBaseObject_Type, g_str_class);
    if (!base || !Py_TYPE(base)->tp_descr_set) {
        PyErr_SetString(PyExc_SystemError, "tether: object.__class__ has no setter");
        return -1;
    }
    return Py_TYPE(base)->tp_descr_set(base, self, value);
}

PyGetSetDef g_class_getset = {
    "__class__", &class_get, &class_set,
    "The object's class. Only a Python type for the object's C++ type can be assigned.",
    nullptr};

/// On tether.Object (type index 0), so that every tether type and subclass finds it first.
int install_class_guard(PyTypeObject *root) noexcept {
    g_str_class = PyUnicode_InternFromString("__class__");
    if (!g_str_class)
        return -1;
    PyObject *descr = PyDescr_NewGetSet(root, &g_class_getset);
    if (!descr)
        return -1;
    int rc = PyDict_SetItem(root->tp_dict, g_str_class, descr);
    Py_DECREF(descr);
    return rc;
}

} // namespace

int install_type(PyTypeObject *type, uint32_t type_index) noexcept {
    auto *slot = detail::type_slot(type_index);
    if (!slot) {
        PyErr_SetString(PyExc_RuntimeError, "tether::py::install_type(): bad type index");
        return -1;
    }
    type->tp_new = tp_new_impl;
    type->tp_dealloc = tether_dealloc;
    type->tp_vectorcall = type_vectorcall;
    // The object lives in its own block, never inside the wrapper, so a wrapper is just
    // nb_inst, the object pointer and a weakref list, whatever sizeof(T) is (nanobind sized
    // the type for an inline T). Python subclasses then lay out __dict__ and slots after it.
    // Types nanobind gave a __dict__ or weakref slot of its own (nb::dynamic_attr,
    // nb::is_weak_referenceable) keep nanobind's layout. A GC type traversed by tether (a
    // bound base has traced fields: cycles.cpp) is laid out as any other: the GC head lies
    // before the object.
    const Py_ssize_t ours = (Py_ssize_t) sizeof(Wrapper); // where our weakref list goes
    if ((type->tp_weaklistoffset == 0 || type->tp_weaklistoffset == ours) &&
        type->tp_dictoffset == 0 && (!PyType_IS_GC(type) || cycles::traced(type)) &&
        type->tp_itemsize == 0 &&
        type->tp_basicsize >= ours + (Py_ssize_t) sizeof(PyObject *)) {
        type->tp_weaklistoffset = (Py_ssize_t) sizeof(Wrapper);
        type->tp_basicsize = (Py_ssize_t) (sizeof(Wrapper) + sizeof(PyObject *));
    }
    if (type_index == 0 && install_class_guard(type) != 0)
        return -1;
    cycles::on_install_type(type, type_index); // inherits its bound base's traced fields
    PyType_Modified(type);
    Py_INCREF(type); // the process-wide table refers to it for as long as the process runs
    PyObject *old = static_cast<PyObject *>(slot->exchange(type, std::memory_order_acq_rel));
    (void) old; // a type registered twice: the newest binding wins (the old one stays alive)
    return 0;
}

void apply_deferred() noexcept { deferred::drain(); }
bool begin_python_call() noexcept { return deferred::begin_python_call(); }
void end_python_call() noexcept { deferred::end_python_call(); }

PyObject *stats_dict() noexcept {
    deferred::drain_if_pending(); // counts as if every C++ thread's release had been applied
    Stats c = detail::read_stats();
    return Py_BuildValue("{sLsLsLsL}", "live", (long long) c.live, "bound", (long long) c.bound,
                         "shared", (long long) c.shared, "orphaned", (long long) c.orphaned);
}

int initialize() noexcept {
    if (deferred::interpreter_gone()) {
        // Objects C++ kept name wrappers and types of the interpreter that was finalized:
        // handing them to a new one would give it dead memory.
        PyErr_SetString(PyExc_ImportError,
                        "tether: Python was finalized and started again in this process; "
                        "tether's objects and types belong to the first interpreter, so tether "
                        "cannot be imported again (keep one interpreter for the life of the "
                        "process)");
        return -1;
    }
    if (g_initialized.load(std::memory_order_acquire))
        return 0;
    if (claim_runtime() != 0) // issue 11: one runtime per process (runtime_guard.cpp)
        return -1;
    if (!check_abi()) {
        PyErr_Format(PyExc_ImportError,
                     "tether: this module was built against tether ABI %u but the loaded "
                     "libtether has ABI %u; rebuild it against the installed tether",
                     abi_version, detail::runtime_abi_version());
        return -1;
    }
    g_str_init = PyUnicode_InternFromString("__init__");
    g_move_token_type = reinterpret_cast<PyTypeObject *>(PyType_FromSpec(&move_token_spec));
    if (!g_str_init || !g_move_token_type)
        return -1;
    if (deferred::install() != 0) // atexit, Py_AtExit and fork hooks of the edge queue
        return -1;
    PythonHooks hooks;
    hooks.settle = &settle;
    hooks.release_shared = &release_shared;
    detail::set_python_hooks(hooks);
    g_initialized.store(true, std::memory_order_release);
    return 0;
}

} // namespace tether::py
