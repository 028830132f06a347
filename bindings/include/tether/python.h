// SPDX-License-Identifier: Apache-2.0
// bindings/include/tether/python.h: the CPython half of tying, exported by libtether_python
//
// These functions implement the transitions listed in cpp/include/tether/header.h on the
// Python side. They use only the CPython API; the nanobind templates in nanobind.h call them.
// One copy lives in libtether_python, shared by every extension module of the process.
#pragma once

#include <Python.h>
#include <tether/tether.h>
#include <tether/compat.h>

namespace tether::py {

/// A tether wrapper: nanobind's nb_inst (24 bytes on GIL builds) followed by the object
/// pointer, which nanobind reads in its "indirect" mode. The layout of nb_inst is checked
/// against nanobind at import (see nanobind.h, check_inst_layout()).
struct InstState {
    uint8_t state : 2;      // nanobind: 0 uninitialized, 1 relinquished, 2 ready
    uint8_t direct : 1;     // 0: offset leads to a pointer we store
    uint8_t internal : 1;   // 0: the object lives outside the wrapper
    uint8_t destruct : 1;   // 0: nanobind never destroys tether objects
    uint8_t cpp_delete : 1; // 0: nor deletes them (the block begins before the object)
    uint8_t intrusive : 1;
    uint8_t pad : 1;
    uint8_t clear_keep_alive;
    uint16_t unused;
};
struct Wrapper {
    PyObject_HEAD
    int32_t offset;
    InstState state;
    Object *object; ///< null while uninitialized and after tether.move()
};
static_assert(sizeof(InstState) == 4, "mirrors nanobind's 32-bit nb_inst_state");
static_assert(offsetof(Wrapper, object) == sizeof(PyObject) + 8,
              "the object pointer must follow nanobind's nb_inst directly (its indirect mode)");

constexpr uint8_t state_uninitialized = 0, state_relinquished = 1, state_ready = 2;

#if defined(Py_GIL_DISABLED)
/// Free-threaded builds: after tether.move() the wrapper keeps its former object's memory
/// (one weak count, the pointer tagged with bit 0), so a thread that read the pointer just
/// before another thread moved the wrapper can still test the object's count safely: it
/// finds zero once the object is destroyed (see take_quiet). Freed when the wrapper dies.
constexpr uintptr_t moved_tag = 1;
inline uintptr_t object_word(PyObject *self) noexcept {
    return __atomic_load_n(reinterpret_cast<uintptr_t *>(&reinterpret_cast<Wrapper *>(self)->object),
                           __ATOMIC_ACQUIRE);
}
#endif

/// Object behind a wrapper, or nullptr (uninitialized or moved-from). No type check.
inline Object *object_of(PyObject *self) noexcept {
#if defined(Py_GIL_DISABLED)
    uintptr_t p = object_word(self);
    return (p & moved_tag) ? nullptr : reinterpret_cast<Object *>(p);
#else
    return reinterpret_cast<Wrapper *>(self)->object;
#endif
}

/// The wrapper's own lock: its critical section on free-threaded builds, nothing on GIL
/// builds. Field reads and writes hold it while they use the object, and tether.move() takes
/// it to detach the object, so an object never leaves its wrapper during a use. Nothing that
/// can run Python code happens while it is held.
struct WrapperLock {
#if defined(Py_GIL_DISABLED)
    PyCriticalSection cs;
    // Not noexcept (nor is PyCriticalSection_Begin): marked so, GCC 12 warns that the field
    // setter's std::optional swap may read an uninitialized value (a false positive).
    explicit WrapperLock(PyObject *self) { PyCriticalSection_Begin(&cs, self); }
    ~WrapperLock() { PyCriticalSection_End(&cs); }
#else
    explicit WrapperLock(PyObject *) noexcept {}
#endif
    WrapperLock(const WrapperLock &) = delete;
    WrapperLock &operator=(const WrapperLock &) = delete;
};

/// Raise the error that says why `self` has no object (moved-from or uninitialized).
TETHER_API PyObject * raise_unusable(PyObject *self) noexcept;

/// Slow half of wrap(): T2 (a fresh wrapper) or T3 under the header's lock. New reference.
/// `type` is the type a fresh wrapper gets when obj's own C++ type has no Python type.
/// Raises TypeError for an object not made by make_object, RuntimeError for one whose
/// wrapper is being deallocated or that is being destroyed.
TETHER_API PyObject * wrap_slow(Object *obj, PyTypeObject *type) noexcept;

#if defined(Py_GIL_DISABLED)
/// Free-threaded T3 without a lock: wrap_bound() below, out of line (kept for modules built
/// when the fast path was not inline).
TETHER_API PyObject * wrap_bound_unlocked(Object *obj) noexcept;
#endif

/// T3 only: the live wrapper of `obj` as a new reference, or nullptr if it has none (then
/// call wrap_slow). HOT: one load, one compare, one incref; no type lookup. Inline, so that a
/// getter pays no call into libtether_python.
inline PyObject *wrap_bound(Object *obj) noexcept {
    const ObjectHeader *h = obj->header(); // the common distance as a constant (object.h)
    if (!h)
        return nullptr;
    uintptr_t w = h->load();
    if (ObjectHeader::state_of(w) != WrapState::Bound)
        return nullptr;
    PyObject *p = static_cast<PyObject *>(ObjectHeader::wrapper_of(w));
#if defined(Py_GIL_DISABLED)
    // Without the GIL, BOUND(p) may be read just as another thread drops p's last reference:
    // the reference is taken with a try-incref that refuses a dying wrapper, and the word is
    // read again after it (wrap_bound_unlocked in bindings/src/lifecycle.cpp says why that
    // is safe).
    if (!compat::try_incref(p))
        return nullptr;
    if (h->load() == w)
        return p;
    Py_DECREF(p);
    return nullptr;
#else
    Py_INCREF(p);
    return p;
#endif
}

/// T2/T3: the one wrapper of `obj`, as a new reference; None for nullptr. `type` is the
/// type a fresh wrapper needs when obj's own C++ type has no Python type registered.
inline PyObject *wrap(Object *obj, PyTypeObject *type) noexcept {
    if (!obj)
        Py_RETURN_NONE;
    if (PyObject *p = wrap_bound(obj))
        return p;
    return wrap_slow(obj, type);
}

/// T1: ties the uninitialized wrapper `self` to a new object (constructed from Python).
/// Takes over `obj`'s strong count. Raises TypeError if self is already initialized.
TETHER_API bool bind_new(PyObject *self, Object *obj) noexcept;

/// T4 / T5 / T8: make obj's SHARED bit match its count again (header.h). Any thread.
TETHER_API void settle(Object *obj) noexcept;

/// A strong count taken without the E1 edge, for argument casters: the caller holds the
/// wrapper `self` for the whole call, and settle_after_call(self) runs when it returns.
inline void inc_ref_quiet(Object *obj) noexcept {
    detail::ObjectAccess::strong_word(obj).fetch_add(1, std::memory_order_relaxed);
}

/// inc_ref_quiet for an `obj` just read from the wrapper `self` without a lock: on
/// free-threaded builds another thread may have moved self's object away (tether.move) and
/// destroyed it meanwhile. Its memory is still there (see object_of); the count is taken only
/// if the object lives and is still self's. False: self no longer owns an object.
inline bool take_quiet(PyObject *self, Object *obj) noexcept {
#if defined(Py_GIL_DISABLED)
    auto &word = detail::ObjectAccess::strong_word(obj);
    uint32_t c = word.load(std::memory_order_relaxed);
    do {
        if ((c & Object::count_mask) == 0)
            return false; // destroyed: self was moved from
    } while (!word.compare_exchange_weak(c, c + 1, std::memory_order_acq_rel,
                                         std::memory_order_relaxed));
    if (object_of(self) == obj)
        return true;
    obj->dec_ref(); // a real count on an object self gave away: ours to drop
    return false;
#else
    (void) self; // the GIL: nothing moves self's object during the conversion
    inc_ref_quiet(obj);
    return true;
#endif
}

/// After a call that may have stored (or dropped) counts taken with inc_ref_quiet: settle
/// the object still tied to `self`, if any. HOT: one load and a compare when nothing changes.
inline void settle_after_call(PyObject *self) noexcept {
    Object *obj = object_of(self);
    if (!obj)
        return; // moved away meanwhile (T7): the wrapper owns nothing any more
    uint32_t c = detail::ObjectAccess::strong_word(obj).load(std::memory_order_relaxed);
    if (!(c & Object::wrapped_bit))
        return;
    uint32_t n = c & Object::count_mask;
    if ((c & Object::shared_bit) ? n <= 1 : n >= 2)
        settle(obj);
}

/// T7: detach `self` from its object and return the object's strong count that self held.
/// Raises and returns nullptr if self has no object.
TETHER_API Object * move_out(PyObject *self) noexcept;

/// tether.move(x): a token that Ref<T> and T* parameters accept as "take it" (see T7).
TETHER_API PyObject * make_move_token(PyObject *wrapper) noexcept;
/// The wrapper inside a move token, or nullptr if `o` is not one. Borrowed.
TETHER_API PyObject * move_token_target(PyObject *o) noexcept;

/// Makes `type` (a freshly bound nanobind class) a tether type: installs tp_new, tp_dealloc
/// and the type call, shrinks its instances to the wrapper itself (the object lives in its
/// own block), and records it as the Python type of C++ type `type_index`.
TETHER_API int install_type(PyTypeObject *type, uint32_t type_index) noexcept;

/// Cycles through C++ (bindings/src/cycles.cpp, docs/lifecycle.md "Cycles through C++").
/// A traced field's contents, handed to a FieldSink: `visit` lends each object the field holds
/// (null ones are skipped); `clear` moves every reference out of the field, passing each with
/// its strong count, which the sink then owns.
enum class FieldOp { visit, clear };
struct FieldSink {
    void (*object)(FieldSink *self, Object *target) noexcept;
};
/// Reports (or clears) one field of `holder`, which is a T; `closure` names the field.
using FieldTracer = void (*)(Object *holder, void *closure, FieldOp op, FieldSink *sink) noexcept;

/// Registers an owning field (Ref<U>, std::optional<Ref<U>>, std::vector<Ref<U>>) of the bound
/// type `type` (C++ type index `type_index`, and `alias_index` for its trampoline): the type
/// becomes a GC type at its first one (binding time, before any instance exists). Returns 0;
/// a type whose tp_traverse is not tether's (nb::dynamic_attr) is left untraced.
TETHER_API int register_traced_field(PyTypeObject *type, uint32_t type_index, uint32_t alias_index,
                                     FieldTracer tracer, void *closure) noexcept;

/// tether.collect_cycles(): a full collection in which every wrapper also reports the cycles
/// made of C++ fields alone. The caller promises that no thread without the GIL (or, on
/// free-threaded builds, without an attached thread state) copies, drops or writes tether
/// references meanwhile. Returns gc.collect()'s result, or -1 with an exception set.
TETHER_API Py_ssize_t collect_cycles() noexcept;

/// How many of the collector's visitor functions the import-time probe saw subtract
/// references (1 on default builds, 2 on free-threaded ones); 0 while uncalibrated, when
/// traversals report no C++ edge at all.
TETHER_API int cycle_calibration() noexcept;

/// Python type registered for a type index, or nullptr.
inline PyTypeObject *type_for(uint32_t type_index) noexcept {
    // HOT (every argument check): the table's address is asked for once, not per call.
    static std::atomic<void *> *const table = detail::type_slot(0);
    return type_index < detail::max_types
               ? static_cast<PyTypeObject *>(table[type_index].load(std::memory_order_acquire))
               : nullptr;
}

/// Set up the runtime once per process: hooks, the move-token type. Idempotent.
TETHER_API int initialize() noexcept;


/// Counters as a dict: live, bound, shared, orphaned (after apply_deferred()).
TETHER_API PyObject * stats_dict() noexcept;

/// Applies every edge C++ threads queued instead of waiting for the GIL (tether.settle()):
/// afterwards, every wrapper C++ let go of on another thread has been released (its
/// __del__ and weakref callbacks have run). Needs the GIL.
TETHER_API void apply_deferred() noexcept;

/// For code on a C++ thread without the GIL that must run Python code (trampolines): true
/// while Python runs normally, and then the thread may take the GIL (PyGILState_Ensure) and
/// calls end_python_call() after releasing it; false once finalization began (run C++
/// instead: a thread waiting for the GIL then would be ended or hang inside CPython).
TETHER_API bool begin_python_call() noexcept;
TETHER_API void end_python_call() noexcept;


// ---- numeric vector fields: typed access for pickle (bindings/src/vector_fields.cpp) ---------
//
// A def_field of type std::vector<U> (U arithmetic, not bool, the standard allocator) is
// registered with a table of functions compiled for its T and U (fields.h, VectorOps), so
// the C++ reducer (bindings/src/reduce.cpp) reads and writes the member by its real type
// instead of converting it to a list of Python numbers. Pickle protocol 5 gets a read-only
// buffer over the vector's own memory (no copy): while such an export is alive, every write
// from Python to that member (the field's setter, __setstate__) raises BufferError, as
// resizing an exported bytearray does, so the memory a view points at is never freed behind
// it. C++ code that resizes the vector meanwhile breaks the view, as with nanobind's
// reference_internal views (docs/processes.md).

/// The typed functions of one numeric vector field. `closure` is the field's getset closure
/// (the member pointer's bits, fields.h Field), passed back to every function.
struct VectorField {
    uint32_t size;     ///< sizeof(VectorField) of the module that registered it (grows at the end)
    char format;       ///< the struct-module code of U: 'd', 'f', 'b', 'B', 'h', 'H', 'i', ...
    char kind;         ///< 'f' floating point, 'i' signed integer, 'u' unsigned integer
    uint16_t itemsize; ///< sizeof(U)
    void *closure;
    /// The vector's address, items and count inside `holder` (a T). The caller holds the
    /// owning wrapper's lock (WrapperLock) or otherwise knows no one writes the member.
    void (*data)(Object *holder, void *closure, void **member, const void **items,
                 size_t *count) noexcept;
    /// Replaces the vector of the object of wrapper `self` by `count` items copied from
    /// `src` (one copy into a new std::vector, swapped in under the wrapper's lock, the old
    /// one freed outside it). -1 with BufferError while the member is exported, MemoryError,
    /// or the error of an unusable wrapper.
    int (*assign)(PyObject *self, void *closure, const void *src, size_t count) noexcept;
};

/// Records `field` for the getset definition `def` (called by def_field at binding time;
/// both live with the type). Returns 0, or -1 with an exception set.
TETHER_API int register_vector_field(const PyGetSetDef *def, const VectorField *field) noexcept;

/// The table registered for `def`, or nullptr (not a numeric vector field).
TETHER_API const VectorField *vector_field(const PyGetSetDef *def) noexcept;

/// True while a buffer over the vector at `member` is exported. The field's writers call it
/// under the wrapper's lock, where exports begin. HOT only as far as vector writes go: one
/// atomic load when nothing is exported anywhere.
TETHER_API bool vector_exported(const void *member) noexcept;

/// A new object exporting (buffer protocol, read-only, C-contiguous, format `field->format`)
/// the items of `field` in the object of wrapper `self`, without copying them. It holds a
/// reference to `self` and a strong count of its C++ object; each buffer taken from it counts
/// as an export of the member until released. nullptr with an exception on failure.
TETHER_API PyObject *export_vector(PyObject *self, const VectorField *field) noexcept;

/// Registered numeric vector fields and live exports (tests, tether._core._reduce_vector_fields).
TETHER_API void vector_field_stats(size_t *fields, size_t *exports) noexcept;

} // namespace tether::py
