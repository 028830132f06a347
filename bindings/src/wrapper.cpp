// SPDX-License-Identifier: Apache-2.0
// bindings/src/wrapper.cpp: the Python half of the header's state machine (wrap, park, revive,
// release, move). Transition names T1..T10 and invariants I1..I6 are defined in
// cpp/include/tether/header.h; read that banner first.
#include "wrapper_internal.h"

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
    count(Counter::parked, -1);
    count(Counter::bound, 1);
    return p;
}

/// Type mismatch on revive: the parked wrapper cannot stand for the object as the type the
/// caller needs. Untie it (PARKED -> DETACHED; it owned no count) and drop the header's
/// reference, so it dies normally, or lives on as a moved-from shell if a weakref user
/// still holds it. A fresh wrapper is then made by T1.
static void drop_parked(ObjectHeader *h, uintptr_t word, PyObject *p) noexcept {
    if (!publish(h, word, nullptr, WrapState::Detached))
        return;
    count(Counter::parked, -1);
    Wrapper *w = reinterpret_cast<Wrapper *>(p);
    w->object = nullptr;
    w->state.state = state_relinquished;
    clear_finalized(p);
    Py_DECREF(p);
}

PyObject *wrap_slow(Object *obj, PyTypeObject *required) noexcept {
    PyTypeObject *type = type_for(obj->type_index());
    if (!type || (required && !PyType_IsSubtype(type, required)))
        type = required;
    if (!type) {
        PyErr_SetString(PyExc_TypeError,
                        "tether: no Python type is bound for this C++ object's type");
        return nullptr;
    }

    ObjectHeader *h = obj->header();
    if (!h) { // the type opted out of the header: a fresh, untied wrapper each time
        PyObject *self = alloc_wrapper(type);
        if (!self)
            return nullptr;
        obj->inc_ref();
        mark_ready(self, obj);
        return self;
    }

    for (;;) {
        uintptr_t word = h->load();
        PyObject *p = static_cast<PyObject *>(ObjectHeader::wrapper_of(word));
        switch (ObjectHeader::state_of(word)) {
            case WrapState::Bound: // T2 (lost a race to another thread's T1/T4)
                Py_INCREF(p);
                return p;

            case WrapState::Parked:
                if (!required || PyObject_TypeCheck(p, required)) {
                    if (PyObject *r = revive(obj, h, word, p))
                        return r;
                } else {
                    drop_parked(h, word, p);
                }
                continue;

            case WrapState::Dying:
                PyErr_Format(PyExc_RuntimeError,
                             "tether: a %s is being finalized and cannot be returned to Python",
                             Py_TYPE(p)->tp_name);
                return nullptr;

            case WrapState::Detached: { // T1
                PyObject *self = alloc_wrapper(type);
                if (!self)
                    return nullptr;
                obj->inc_ref();
                mark_ready(self, obj);
                if (!publish(h, word, self, WrapState::Bound)) {
                    // Another thread tied a wrapper first: ours never existed for anyone.
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
    Py_SET_REFCNT(self, 1); // the header's reference; nothing was freed or cleared
    if (!publish(h, word, self, WrapState::Parked)) {
        Py_SET_REFCNT(self, 0);
        return false;
    }
    count(Counter::bound, -1);
    count(Counter::parked, 1);
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
        if (publish(h, word, self, WrapState::Parked)) {
            count(Counter::bound, -1);
            count(Counter::parked, 1);
            obj->dec_ref();
            // A C++ thread may have let go meanwhile, making ours the last count: then T6
            // ran inside dec_ref and this wrapper really dies after all, so its __del__ runs.
            if (h->load() == ObjectHeader::encode(self, WrapState::Dying))
                call_user_finalizer(self);
            return;
        }
        Py_DECREF(self);
    }
    // The wrapper really dies (T5, or T7 after T6): run the user's __del__ once.
    call_user_finalizer(self);
    if (h && h->load() == ObjectHeader::encode(self, WrapState::Dying) && Py_REFCNT(self) > 1)
        h->store(self, WrapState::Bound); // T8: __del__ kept self; it keeps its count
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
    uintptr_t word = h->load();
    bool handled = false;
    if (ObjectHeader::state_of(word) == WrapState::Parked) {
        PyObject *p = static_cast<PyObject *>(ObjectHeader::wrapper_of(word));
        ObjectAccess::set_strong(obj, 1); // p owns the count again while it dies (or lives)
        bool still_used = Py_REFCNT(p) > 1; // a weakref handed it out while parked
        h->store(p, still_used ? WrapState::Bound : WrapState::Dying);
        count(Counter::parked, -1);
        count(Counter::bound, 1);
        clear_finalized(p);
        Py_DECREF(p); // the header's reference: T6 -> T7 (destroys obj) or stays BOUND
        handled = true;
    }
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
        h->store(nullptr, WrapState::Detached);
        count(Counter::bound, -1);
    }
    w->object = nullptr;
    w->state.state = state_relinquished;
    return obj; // the count `self` owned is now the caller's
}

} // namespace tether::py
