// SPDX-License-Identifier: Apache-2.0
// bindings/src/wrapper.cpp: the Python half of the header's state machine (wrap, park, revive,
// release, move). Transition names T1..T10 and invariants I1..I6 are defined in
// cpp/include/tether/header.h; read that banner first.
#include "wrapper_internal.h"

#if defined(Py_GIL_DISABLED)
#include <thread>
#endif

namespace tether::py {

using detail::ObjectAccess;

// ---- helpers ---------------------------------------------------------------------------

/// CPython sets a GC object's "finalized" bit after tp_finalize returns, and never calls
/// tp_finalize again while it is set. A wrapper parked from tp_finalize must get that bit
/// cleared when it leaves the header's hands, or its next death would skip the park (and
/// __del__). The bit is bit 0 of PyGC_Head::_gc_prev on 3.9-3.13 GIL builds and
/// _PyGC_BITS_FINALIZED in ob_gc_bits on free-threaded builds.
void clear_finalized(PyObject *self) noexcept {
    if (!PyType_IS_GC(Py_TYPE(self)))
        return;
#if defined(Py_GIL_DISABLED)
    self->ob_gc_bits &= (uint8_t) ~2u;
#else
    reinterpret_cast<uintptr_t *>(self)[-1] &= ~(uintptr_t) 1;
#endif
}

static void mark_ready(PyObject *self, Object *obj) noexcept {
    Wrapper *w = reinterpret_cast<Wrapper *>(self);
    w->object = obj;
    w->state.state = state_ready;
}

// ---- free-threaded builds: the per-header lock and TryIncRef ------------------------------
//
// With the GIL, reading BOUND(w) and Py_INCREF(w) is one atomic step for Python. Without it
// another thread can drop w's last reference in between: w's refcount is then 0 and its
// tp_dealloc is about to park it (T3) or free it (T5/T7). So on free-threaded builds:
//   - every transition of a tied word, and every read that turns the word into a reference,
//     happens under a lock picked by the header's address (a striped table of PyMutex);
//   - a reader that finds BOUND(w) takes its reference with try_incref(w), which refuses
//     a wrapper whose refcount already reached zero. It then unlocks and retries: the
//     deallocating thread takes the lock next and moves the word to PARKED or DETACHED.
//   - nothing that can run Python code (allocation, Py_DECREF, finalizers) happens with a
//     stripe held: PyMutex is not reentrant, and a dealloc would take a stripe itself.
// For try_incref to tell "dying" from "alive", every wrapper published as BOUND carries
// the "may be weakly referenced" mark in its shared refcount (allow_try_incref). Without
// it, an owner thread frees the object the moment its local count hits zero, without the
// atomic merge that makes the refusal reliable (the contract PyUnstable_TryIncRef and
// PyUnstable_EnableTryIncRef document for 3.14).
#if defined(Py_GIL_DISABLED)
namespace {
constexpr size_t stripe_count = 64; // a power of two
PyMutex g_stripes[stripe_count];

PyMutex *stripe(const ObjectHeader *h) noexcept {
    return &g_stripes[(reinterpret_cast<uintptr_t>(h) >> 4) & (stripe_count - 1)];
}

/// Mark `p` so that a try_incref from another thread is exact (see above).
void allow_try_incref(PyObject *p) noexcept {
    Py_ssize_t shared = __atomic_load_n(&p->ob_ref_shared, __ATOMIC_RELAXED);
    while ((shared & 3) == 0 && // unowned, not yet marked (other flag states are fine)
           !__atomic_compare_exchange_n(&p->ob_ref_shared, &shared, shared | _Py_REF_MAYBE_WEAKREF,
                                        true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
}

/// A new reference to `p`, unless its refcount has reached zero (it is being deallocated).
bool try_incref(PyObject *p) noexcept {
    uint32_t local = __atomic_load_n(&p->ob_ref_local, __ATOMIC_RELAXED);
    if (local == _Py_IMMORTAL_REFCNT_LOCAL)
        return true;
    if (__atomic_load_n(&p->ob_tid, __ATOMIC_RELAXED) == _Py_ThreadId()) {
        // The owner thread: only it could bring the local count to zero, and it is here.
        __atomic_store_n(&p->ob_ref_local, local + 1, __ATOMIC_RELAXED);
        return true;
    }
    Py_ssize_t shared = __atomic_load_n(&p->ob_ref_shared, __ATOMIC_RELAXED);
    for (;;) {
        if (shared == 0 || shared == _Py_REF_MERGED)
            return false; // no reference left anywhere: tp_dealloc runs or is about to
        if (__atomic_compare_exchange_n(&p->ob_ref_shared, &shared,
                                        shared + ((Py_ssize_t) 1 << _Py_REF_SHARED_SHIFT), true,
                                        __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
            return true;
    }
}
} // namespace

struct WordLock {
    PyMutex *m;
    explicit WordLock(const ObjectHeader *h) noexcept : m(stripe(h)) { PyMutex_Lock(m); }
    ~WordLock() { unlock(); }
    void unlock() noexcept {
        if (m)
            PyMutex_Unlock(m);
        m = nullptr;
    }
};
#else
struct WordLock { // GIL builds: the GIL orders every transition
    explicit WordLock(const ObjectHeader *) noexcept {}
    void unlock() noexcept {}
};
inline void allow_try_incref(PyObject *) noexcept {}
#endif

PyObject *alloc_wrapper(PyTypeObject *type) noexcept {
    adopt_python_subclass(type);
    PyObject *self;
    if (!PyType_IS_GC(type) && type->tp_dictoffset == 0 && type->tp_itemsize == 0 &&
        (type->tp_weaklistoffset == 0 || type->tp_weaklistoffset == (Py_ssize_t) sizeof(Wrapper))) {
        // HOT: every fresh wrapper of a bound type. Only the nb_inst part, the object
        // pointer and (if the type has one) the weakref list are ever read: allocate just
        // that, as nanobind does for its external instances.
        size_t size = sizeof(Wrapper) + (type->tp_weaklistoffset ? sizeof(PyObject *) : 0);
        self = static_cast<PyObject *>(PyObject_Malloc(size));
        if (!self)
            return PyErr_NoMemory();
        std::memset(static_cast<void *>(self), 0, size);
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

PyObject *raise_unusable(PyObject *self) noexcept {
    const char *name = Py_TYPE(self)->tp_name;
    if (reinterpret_cast<Wrapper *>(self)->state.state == state_relinquished)
        PyErr_Format(PyExc_ValueError,
                     "this %s was moved into C++ with tether.move() and can no longer be "
                     "used; fetch the object again from where C++ stored it",
                     name);
    else
        PyErr_Format(PyExc_ValueError,
                     "this %s is not initialized: its __init__ did not run (or failed)", name);
    return nullptr;
}

// ---- T1 / T4: the way into Python --------------------------------------------------------

/// T4: PARKED(p) -> BOUND(p). The header's reference becomes the caller's.
static PyObject *revive(Object *obj, ObjectHeader *h, uintptr_t word, PyObject *p) noexcept {
    obj->inc_ref();
    if (!publish(h, word, p, WrapState::Bound)) { // another thread revived it first
        obj->dec_ref();
        return nullptr;
    }
    clear_finalized(p);
    allow_try_incref(p);
    count(Counter::parked, -1);
    count(Counter::bound, 1);
    return p;
}

/// Type mismatch on revive: the parked wrapper cannot stand for the object as the type the
/// caller needs. Untie it (PARKED -> DETACHED; it owned no count) and drop the header's
/// reference, so it dies normally, or lives on as a moved-from shell if a weakref user
/// still holds it. A fresh wrapper is then made by T1.
/// Returns the reference the caller must drop once the word's lock is released.
static PyObject *drop_parked(ObjectHeader *h, uintptr_t word, PyObject *p) noexcept {
    if (!publish(h, word, nullptr, WrapState::Detached))
        return nullptr;
    count(Counter::parked, -1);
    Wrapper *w = reinterpret_cast<Wrapper *>(p);
    w->object = nullptr;
    w->state.state = state_relinquished;
    clear_finalized(p);
    return p;
}

/// The type a fresh wrapper gets: obj's own registered type, unless that is not a `required`.
static PyTypeObject *fresh_type(Object *obj, PyTypeObject *required) noexcept {
    PyTypeObject *type = type_for(obj->type_index());
    if (!type || (required && !PyType_IsSubtype(type, required)))
        type = required;
    if (!type)
        PyErr_SetString(PyExc_TypeError,
                        "tether: no Python type is bound for this C++ object's type");
    return type;
}

/// A ready wrapper of the right type for `obj`, owning a new strong count (T1 before publish).
static PyObject *new_wrapper(Object *obj, PyTypeObject *required) noexcept {
    PyTypeObject *type = fresh_type(obj, required);
    PyObject *self = type ? alloc_wrapper(type) : nullptr;
    if (self) {
        obj->inc_ref();
        mark_ready(self, obj);
    }
    return self;
}

PyObject *wrap_slow(Object *obj, PyTypeObject *required) noexcept {
    ObjectHeader *h = obj->header();
    if (!h) // the type opted out of the header: a fresh, untied wrapper each time
        return new_wrapper(obj, required);

    for (;;) {
        WordLock lock(h);
        uintptr_t word = h->load();
        PyObject *p = static_cast<PyObject *>(ObjectHeader::wrapper_of(word));
        switch (ObjectHeader::state_of(word)) {
            case WrapState::Bound: // T2 (lost a race to another thread's T1/T4)
#if defined(Py_GIL_DISABLED)
                if (!try_incref(p)) { // p is in tp_dealloc, which needs this lock to finish
                    lock.unlock();
                    // Detach while waiting: the deallocating thread may need a stop-the-world
                    // pause (GC) to finish, and that waits for every attached thread.
                    PyThreadState *ts = PyEval_SaveThread();
                    std::this_thread::yield();
                    PyEval_RestoreThread(ts);
                    continue;
                }
#else
                Py_INCREF(p);
#endif
                return p;

            case WrapState::Parked:
                if (!required || PyObject_TypeCheck(p, required)) {
                    if (PyObject *r = revive(obj, h, word, p))
                        return r;
                } else if (PyObject *dropped = drop_parked(h, word, p)) {
                    lock.unlock();
                    Py_DECREF(dropped);
                }
                continue;

            case WrapState::Dying:
                lock.unlock(); // PyErr_Format allocates
                PyErr_Format(PyExc_RuntimeError,
                             "tether: a %s is being finalized and cannot be returned to Python",
                             Py_TYPE(p)->tp_name);
                return nullptr;

            case WrapState::Detached: { // T1
                lock.unlock(); // allocating may run the GC, and so deallocs
                PyObject *self = new_wrapper(obj, required);
                if (!self)
                    return nullptr;
                allow_try_incref(self);
                WordLock relock(h);
                if (!publish(h, word, self, WrapState::Bound)) {
                    // Another thread tied a wrapper first: ours never existed for anyone.
                    relock.unlock();
                    reinterpret_cast<Wrapper *>(self)->object = nullptr;
                    obj->dec_ref();
                    Py_DECREF(self);
                    continue;
                }
                count(Counter::bound, 1);
                return self;
            }
        }
    }
}

bool bind_new(PyObject *self, Object *obj) noexcept {
    Wrapper *w = reinterpret_cast<Wrapper *>(self);
    if (w->object || w->state.state != state_uninitialized) {
        PyErr_Format(PyExc_TypeError, "%s.__init__() called on an already initialized object",
                     Py_TYPE(self)->tp_name);
        obj->dec_ref();
        return false;
    }
    mark_ready(self, obj);
    if (ObjectHeader *h = obj->header()) { // T1 with the wrapper Python just made
        allow_try_incref(self);
        h->store(self, WrapState::Bound);
        count(Counter::bound, 1);
    }
    return true;
}

// ---- T3 / T5 / T7: the way out -----------------------------------------------------------

/// T3 from tp_dealloc: `self` has refcount 0 and nothing of it was cleared yet.
/// Returns true if the wrapper was parked (the caller must then return at once).
static bool park_from_dealloc(PyObject *self, Object *obj, ObjectHeader *h, uintptr_t word) noexcept {
    if (obj->use_count() <= 1)
        return false; // T5: we own the last count
    WordLock lock(h);
    Py_SET_REFCNT(self, 1); // the header's reference; nothing was freed or cleared
    if (!publish(h, word, self, WrapState::Parked)) {
        Py_SET_REFCNT(self, 0);
        return false;
    }
    count(Counter::bound, -1);
    count(Counter::parked, 1);
    lock.unlock();
    obj->dec_ref(); // may be the last now (a C++ thread let go meanwhile): T6 runs inside
    return true;
}

/// The one tp_dealloc of every bound tether type. Python subclasses reach it through
/// CPython's subtype_dealloc, after their tp_finalize (tether_finalize) declined to park.
void tether_dealloc(PyObject *self) noexcept {
    PyTypeObject *tp = Py_TYPE(self);
    Object *obj = object_of(self);
    ObjectHeader *h = obj ? obj->header() : nullptr;
    if (h) {
        uintptr_t word = h->load();
        if (word == ObjectHeader::encode(self, WrapState::Bound) &&
            park_from_dealloc(self, obj, h, word))
            return;
        // T5 or T7 (after T6): this wrapper really dies.
        WordLock lock(h);
        word = h->load();
        if (ObjectHeader::wrapper_of(word) == self &&
            publish(h, word, nullptr, WrapState::Detached))
            count(Counter::bound, -1);
    }

    if (PyType_IS_GC(tp) && PyObject_GC_IsTracked(self))
        PyObject_GC_UnTrack(self); // (subtype_dealloc already did for Python subclasses)
    // The weakref list belongs to the bound type (install_type), so Python subclasses inherit
    // it and CPython's subtype_dealloc leaves it to us: clear it for every instance.
    if (tp->tp_weaklistoffset > 0 &&
        *reinterpret_cast<PyObject **>(reinterpret_cast<char *>(self) + tp->tp_weaklistoffset))
        PyObject_ClearWeakRefs(self);
    bool python_subclass = tp->tp_dealloc != &tether_dealloc;
    if (!python_subclass && tp->tp_dictoffset > 0) // subtype_dealloc clears subclass dicts
        Py_CLEAR(*reinterpret_cast<PyObject **>(reinterpret_cast<char *>(self) + tp->tp_dictoffset));
    tp->tp_free(self);
    Py_DECREF(tp); // heap type instances own a reference to their type
    if (obj)
        obj->dec_ref(); // T7: may destroy the object
}

/// tp_finalize of every tether type. For Python subclasses CPython calls it first thing in
/// subtype_dealloc (with a temporary reference), before __dict__, slots or weakrefs are
/// touched, so parking here keeps them all. The GC may also call it on a cycle it thinks is
/// garbage; parking then makes the cycle reachable again, which the GC handles.
void tether_finalize(PyObject *self) noexcept {
    Object *obj = object_of(self);
    ObjectHeader *h = obj ? obj->header() : nullptr;
    uintptr_t word = h ? h->load() : 0;
    if (h && word == ObjectHeader::encode(self, WrapState::Bound) && obj->use_count() > 1) {
        Py_INCREF(self); // T3: the header's reference; CPython sees a resurrection and stops
        WordLock lock(h);
        if (publish(h, word, self, WrapState::Parked)) {
            count(Counter::bound, -1);
            count(Counter::parked, 1);
            lock.unlock();
            obj->dec_ref();
            // A C++ thread may have let go meanwhile, making ours the last count: then T6
            // ran inside dec_ref and this wrapper really dies after all, so its __del__ runs.
            if (h->load() == ObjectHeader::encode(self, WrapState::Dying))
                call_user_finalizer(self);
            return;
        }
        lock.unlock();
        Py_DECREF(self);
    }
    // The wrapper really dies (T5, or T7 after T6): run the user's __del__ once.
    call_user_finalizer(self);
    if (h && h->load() == ObjectHeader::encode(self, WrapState::Dying) && Py_REFCNT(self) > 1) {
        allow_try_incref(self);
        h->store(self, WrapState::Bound); // T8: __del__ kept self; it keeps its count
    }
}

// ---- T6 / T10: the last count goes in C++ -------------------------------------------------

static bool python_alive() noexcept {
#if PY_VERSION_HEX >= 0x030D0000
    return Py_IsInitialized() && !Py_IsFinalizing();
#else
    return Py_IsInitialized() && !_Py_IsFinalizing();
#endif
}

bool release_parked(Object *obj) noexcept {
    if (!python_alive())
        return false; // T10
    PyGILState_STATE gil = PyGILState_Ensure();
    ObjectHeader *h = obj->header();
    WordLock lock(h);
    uintptr_t word = h->load();
    bool handled = false;
    if (ObjectHeader::state_of(word) == WrapState::Parked) {
        PyObject *p = static_cast<PyObject *>(ObjectHeader::wrapper_of(word));
        ObjectAccess::set_strong(obj, 1); // p owns the count again while it dies (or lives)
        bool still_used = Py_REFCNT(p) > 1; // a weakref handed it out while parked
        if (still_used)
            allow_try_incref(p);
        h->store(p, still_used ? WrapState::Bound : WrapState::Dying);
        count(Counter::parked, -1);
        count(Counter::bound, 1);
        clear_finalized(p);
        lock.unlock();
        Py_DECREF(p); // the header's reference: T6 -> T7 (destroys obj) or stays BOUND
        handled = true;
    }
    lock.unlock();
    PyGILState_Release(gil);
    return handled;
}

// ---- T9: tether.move ------------------------------------------------------------------------

Object *move_out(PyObject *self) noexcept {
    Wrapper *w = reinterpret_cast<Wrapper *>(self);
    Object *obj = w->object;
    if (!obj) {
        raise_unusable(self);
        return nullptr;
    }
    if (ObjectHeader *h = obj->header()) {
        WordLock lock(h);
        h->store(nullptr, WrapState::Detached);
        count(Counter::bound, -1);
    }
    w->object = nullptr;
    w->state.state = state_relinquished;
    return obj; // the count `self` owned is now the caller's
}

} // namespace tether::py
