// SPDX-License-Identifier: Apache-2.0
// bindings/src/lifecycle.cpp: every transition of an object's tie to Python, in the order an
// object meets them. States, bits, transitions and invariants: cpp/include/tether/header.h.
//
//   T0 make       make_object<T> (cpp/include/tether/alloc.h)
//   T1 bind       bind_new()        Python constructed the object
//   T2 wrap       wrap_fresh()      first trip to Python of an object C++ made
//   T3 hit        wrap_bound() (python.h, hot) and wrap_slow()
//   T4 share      share()           C++ took a count besides the wrapper's
//   T5 unshare    unshare()         C++ let go of all but the wrapper's count
//      settle()   the E1/E2 hook and the casters' after-call check: picks T4, T5 or T8
//      (a C++ thread that cannot run Python hands E1/E2 to a queue: deferred_edges.h)
//   T6 die        tether_dealloc()  the wrapper's refcount reached zero
//   T7 move       move_out()        tether.move(w) handed w's count to C++
//   T8 orphan     orphan()          an edge after the interpreter finalized
//   T9 destroy    detail::on_last_strong (cpp/src/runtime.cpp)
//
// Nothing else writes the header word or the count's WRAPPED/SHARED bits.
#include "lifecycle.h"

#include "deferred_edges.h"

#include <tether/compat.h>

#include <optional>

#if defined(Py_GIL_DISABLED)
#include <thread>
#endif

namespace tether::py {

using detail::ObjectAccess;

namespace {

constexpr uint32_t WRAPPED = Object::wrapped_bit;
constexpr uint32_t SHARED = Object::shared_bit;
constexpr uint32_t COUNT = Object::count_mask;

std::atomic<uint32_t> &strong(Object *obj) noexcept { return ObjectAccess::strong_word(obj); }

void count(Counter which, int64_t delta) noexcept { detail::add_count(which, delta); }

// ---- the header's lock ------------------------------------------------------------------------
//
// GIL builds: the GIL orders every transition (a C++ thread takes it before settling), so
// the lock is empty. Free-threaded builds: a striped table of PyMutex, one cache line each,
// picked by a hash of the header's whole address (objects made at the same point in two
// threads share low address bits). Nothing that can run Python code (allocation,
// Py_DECREF, finalizers) happens with a stripe held: PyMutex is not reentrant.
#if defined(Py_GIL_DISABLED)
struct alignas(64) Stripe {
    PyMutex mutex;
};
constexpr unsigned stripe_bits = 7;
Stripe g_stripes[1u << stripe_bits];

PyMutex *stripe(const ObjectHeader *h) noexcept {
    uint64_t a = reinterpret_cast<uintptr_t>(h);
    return &g_stripes[(a * 0x9E3779B97F4A7C15ull) >> (64 - stripe_bits)].mutex;
}

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
struct WordLock {
    explicit WordLock(const ObjectHeader *) noexcept {}
    void unlock() noexcept {}
};
#endif

/// The only writer of the header word. Callers hold the header's lock (or the GIL).
void publish(ObjectHeader *h, PyObject *wrapper, WrapState s) noexcept {
    h->word.store(ObjectHeader::encode(wrapper, s), std::memory_order_release);
}

/// Mark `w` so that another thread's try_incref is exact (free-threaded builds only).
void allow_try_incref(PyObject *w) noexcept {
#if defined(Py_GIL_DISABLED)
    compat::enable_try_incref(w);
#else
    (void) w;
#endif
}

void mark_ready(PyObject *self, Object *obj) noexcept {
    Wrapper *w = reinterpret_cast<Wrapper *>(self);
    w->object = obj;
    w->state.state = state_ready;
}

/// In T6: the dying wrapper holds the object's only reference and no WeakRef exists. Then no
/// other thread can take a reference or reach the header (that needs a Ref, a WeakRef, or
/// the wrapper, whose refcount is zero), so T6 needs neither the lock nor an atomic
/// read-modify-write. The weak count is read first: a thread that locked a WeakRef and then
/// dropped it released the weak count after taking its strong one, so once we read weak == 1
/// (acquire) the strong read sees that count and the slow path runs.
bool sole_reference(Object *obj) noexcept {
    if (detail::ObjectAccess::weak_count(obj) != 1) // acquire
        return false;
    return strong(obj).load(std::memory_order_acquire) == (WRAPPED | 1);
}

/// Drop WRAPPED (and, if set, SHARED) and the wrapper's own reference in one step. Returns
/// the old count word; the caller runs T9 if that was the last reference (outside any lock).
uint32_t drop_wrapper_reference(Object *obj) noexcept {
    uint32_t c = strong(obj).load(std::memory_order_relaxed);
    uint32_t next;
    do {
        TETHER_ASSERT((c & WRAPPED) && (c & COUNT) >= 1, "I2: the wrapper owns one reference");
        next = (c & COUNT) - 1;
    } while (!strong(obj).compare_exchange_weak(c, next, std::memory_order_acq_rel,
                                                std::memory_order_relaxed));
    return c;
}

/// drop_wrapper_reference, then T9 if nothing else holds the object.
uint32_t release_wrapper_reference(Object *obj) noexcept {
    uint32_t c = drop_wrapper_reference(obj);
    if ((c & COUNT) == 1)
        detail::on_last_strong(obj); // T9
    return c;
}

/// The type a fresh wrapper gets: obj's own registered type, unless that is not a `required`.
PyTypeObject *fresh_type(Object *obj, PyTypeObject *required) noexcept {
    PyTypeObject *type = type_for(obj->type_index());
    if (!type || (required && !PyType_IsSubtype(type, required)))
        type = required;
    if (!type)
        PyErr_SetString(PyExc_TypeError,
                        "tether: no Python type is bound for this C++ object's type");
    return type;
}

/// A wrapper for a type that opted out of the header: fresh each time, owning a plain count.
PyObject *untied_wrapper(Object *obj, PyTypeObject *required) noexcept {
    PyTypeObject *type = fresh_type(obj, required);
    PyObject *self = type ? alloc_wrapper(type) : nullptr;
    if (self) {
        obj->inc_ref();
        mark_ready(self, obj);
    }
    return self;
}

} // namespace

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

// ---- T1 bind: Python constructed the object ----------------------------------------------------

/// T1 for all but bind_new's common case: __init__ run on a wrapper twice, a type without a
/// header, an object make_object made (not tether::init), or one whose constructor handed
/// `this` to C++. Out of line, so that the common case saves and restores no registers.
__attribute__((noinline)) static bool bind_new_other(PyObject *self, Object *obj) noexcept {
    Wrapper *w = reinterpret_cast<Wrapper *>(self);
    if (w->object || w->state.state != state_uninitialized) {
        PyErr_Format(PyExc_TypeError, "%s.__init__() called on an already initialized object",
                     Py_TYPE(self)->tp_name);
        if (strong(obj).load(std::memory_order_relaxed) & WRAPPED) {
            // Made for a wrapper (tether::init) that lost: allocate_block counted it bound.
            count(Counter::bound, -1);
            release_wrapper_reference(obj);
        } else
            obj->dec_ref();
        return false;
    }
    mark_ready(self, obj);
    ObjectHeader *h = obj->header();
    if (!h)
        return true; // opted out of the header: the wrapper owns a plain count
    allow_try_incref(self);
    uint32_t c = strong(obj).load(std::memory_order_relaxed);
    if (!(c & WRAPPED)) { // made by make_object, not tether::init: the reference becomes w's
        c = strong(obj).fetch_or(WRAPPED, std::memory_order_acq_rel) | WRAPPED;
        count(Counter::bound, 1); // (tether::init's allocate_block counted its own)
    }
    if ((c & COUNT) == 1) { // the only reference, as in bind_new: no lock
        TETHER_ASSERT(h->load() == 0, "T1 starts from DETACHED");
        publish(h, self, WrapState::Bound);
        return true;
    }
    {
        WordLock lock(h); // T's constructor already handed `this` to C++
        TETHER_ASSERT(h->load() == 0, "T1 starts from DETACHED");
        publish(h, self, WrapState::Bound);
    }
    settle(obj);
    return true;
}

bool bind_new(PyObject *self, Object *obj) noexcept {
    Wrapper *w = reinterpret_cast<Wrapper *>(self);
    ObjectHeader *h = obj->header();
    // HOT: every construction through tether::init. The only reference is the one
    // make_object returned to this thread for this wrapper (WRAPPED | 1, counted bound by
    // allocate_block), so no other thread can reach the header: no lock, no count.
    if (w->object || w->state.state != state_uninitialized || !h ||
        strong(obj).load(std::memory_order_relaxed) != (WRAPPED | 1))
        return bind_new_other(self, obj);
    mark_ready(self, obj);
    allow_try_incref(self);
    TETHER_ASSERT(h->load() == 0, "T1 starts from DETACHED");
    publish(h, self, WrapState::Bound);
    return true;
}

// ---- T2 wrap / T3 hit: the way into Python -----------------------------------------------------

/// T2 under the header's lock, word DETACHED: tie `self` (ready, owning nothing yet) to obj.
/// The caller reached obj through a reference it holds, so after this the count is at least
/// 2: the header keeps `self` from the start (SHARED). False if obj is being destroyed.
static bool wrap_fresh(Object *obj, ObjectHeader *h, PyObject *self) noexcept {
    uint32_t c = strong(obj).load(std::memory_order_relaxed);
    do {
        TETHER_ASSERT(!(c & (WRAPPED | SHARED)), "I2: WRAPPED without a wrapper in the word");
        if ((c & COUNT) == 0)
            return false; // T9 under way (a destructor handed `this` to Python)
    } while (!strong(obj).compare_exchange_weak(c, (c + 1) | WRAPPED | SHARED,
                                                std::memory_order_acq_rel,
                                                std::memory_order_relaxed));
    Py_INCREF(self); // the header's reference (I3)
    publish(h, self, WrapState::Bound);
    count(Counter::bound, 1);
    count(Counter::shared, 1);
    return true;
}

#if defined(Py_GIL_DISABLED)
/// T3 on free-threaded builds, with no lock (wrap_bound in python.h): the protocol of
/// CPython's own optimistic reads (_Py_TryIncrefCompare). A wrapper's memory stays an object
/// of CPython's object heaps until every attached thread passes a quiescent state (QSBR), so
/// the try-incref reads valid refcount fields even if the wrapper was just freed: it then
/// fails (the refcount is zero), or it took a reference to an object that reused the block,
/// which the re-check of the word detects and gives back.
PyObject *wrap_bound_unlocked(Object *obj) noexcept {
    return wrap_bound(obj); // inline in python.h; exported for modules built before it was
}
#endif

PyObject *wrap_slow(Object *obj, PyTypeObject *required) noexcept {
    if (!obj->made_by_tether()) {
        PyErr_SetString(PyExc_TypeError,
                        "tether: cannot return an object that tether::make_object did not "
                        "allocate (a member of another object, or one on the stack) to "
                        "Python; return a Ref<T> to an object made with make_object");
        return nullptr;
    }
    ObjectHeader *h = obj->header();
    if (!h)
        return untied_wrapper(obj, required);

    for (;;) {
        WordLock lock(h);
        uintptr_t word = h->load();
        PyObject *p = static_cast<PyObject *>(ObjectHeader::wrapper_of(word));
        switch (ObjectHeader::state_of(word)) {
            case WrapState::Bound: // T3
#if defined(Py_GIL_DISABLED)
                if (!compat::try_incref(p)) { // p is in its dealloc, which needs this lock
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

            case WrapState::Dying:
                lock.unlock(); // PyErr_Format allocates
                PyErr_Format(PyExc_RuntimeError,
                             "tether: this %s's wrapper is being deallocated; it cannot be "
                             "returned to Python until it is gone",
                             Py_TYPE(p)->tp_name);
                return nullptr;

            case WrapState::Detached: {
                lock.unlock(); // allocating may run the GC, and so deallocs
                PyTypeObject *type = fresh_type(obj, required);
                PyObject *self = type ? alloc_wrapper(type) : nullptr;
                if (!self)
                    return nullptr;
                mark_ready(self, obj);
                allow_try_incref(self);
                WordLock relock(h);
                if (h->load() == 0 && wrap_fresh(obj, h, self))
                    return self;
                // Another thread tied a wrapper first, or obj is being destroyed: ours never
                // existed for anyone.
                bool dying = h->load() == 0;
                relock.unlock();
                reinterpret_cast<Wrapper *>(self)->object = nullptr;
                Py_DECREF(self);
                if (dying) {
                    PyErr_SetString(PyExc_RuntimeError,
                                    "tether: this object is being destroyed; it cannot be "
                                    "returned to Python");
                    return nullptr;
                }
                continue;
            }

            default:
                TETHER_ASSERT(false, "the header word holds an unknown state");
                return nullptr;
        }
    }
}

// ---- T4 share / T5 unshare: C++ starts and stops sharing the object ----------------------------

/// T4: the count is at least 2 and SHARED is off: the header takes a reference to the wrapper.
static void share(Object *obj, ObjectHeader *h) noexcept {
    WordLock lock(h);
    uintptr_t word = h->load();
    if (ObjectHeader::state_of(word) != WrapState::Bound)
        return; // no wrapper any more (T6 or T7 won the race), or it is dying
    PyObject *w = static_cast<PyObject *>(ObjectHeader::wrapper_of(word));
#if defined(Py_GIL_DISABLED)
    if (!compat::try_incref(w))
        return; // its dealloc (T6) runs on another thread and will drop WRAPPED
#else
    if (Py_REFCNT(w) == 0) {
        // A count taken while w's own dealloc runs on this thread (a __del__ or a cleared
        // attribute reached the object through C++): w is past saving. Keep it out of
        // reach; T6 drops WRAPPED and the object lives on without a wrapper.
        publish(h, w, WrapState::Dying);
        return;
    }
    Py_INCREF(w);
#endif
    uint32_t c = strong(obj).load(std::memory_order_relaxed);
    for (;;) {
        if (!(c & WRAPPED) || (c & SHARED) || (c & COUNT) < 2) {
            lock.unlock();
            Py_DECREF(w); // nothing to keep after all (another thread settled first)
            return;
        }
        if (strong(obj).compare_exchange_weak(c, c | SHARED, std::memory_order_acq_rel,
                                              std::memory_order_relaxed))
            break;
    }
    count(Counter::shared, 1);
}

/// T5 under the header's lock: if SHARED is on and the count is down to the wrapper's own, turn
/// it off and return the header's reference (the caller drops it, unlocked).
static PyObject *unshare_locked(Object *obj, ObjectHeader *h) noexcept {
    uintptr_t word = h->load();
    uint32_t c = strong(obj).load(std::memory_order_relaxed);
    for (;;) {
        if (!(c & SHARED) || (c & COUNT) >= 2)
            return nullptr;
        if (strong(obj).compare_exchange_weak(c, c & ~SHARED, std::memory_order_acq_rel,
                                              std::memory_order_relaxed))
            break;
    }
    TETHER_ASSERT(ObjectHeader::state_of(word) == WrapState::Bound,
                  "I3: SHARED while the word names no live wrapper");
    count(Counter::shared, -1);
    return static_cast<PyObject *>(ObjectHeader::wrapper_of(word));
}

/// T5: the count fell to the wrapper's own while SHARED was on: the header lets the wrapper
/// go. The caller keeps the object alive (it holds the wrapper, or a reference).
static void unshare(Object *obj, ObjectHeader *h) noexcept {
    PyObject *drop;
    {
        WordLock lock(h);
        drop = unshare_locked(obj, h);
    }
    Py_XDECREF(drop); // may be the wrapper's last reference: T6 runs inside
}

/// T8: the interpreter is gone. Untie the wrapper without touching it (its memory belongs to
/// a dead interpreter) and release the reference it owned.
static void orphan(Object *obj, ObjectHeader *h) noexcept {
    uintptr_t word = h->load();
    if (ObjectHeader::state_of(word) == WrapState::Detached ||
        !h->word.compare_exchange_strong(word, 0, std::memory_order_acq_rel))
        return; // no wrapper, or another thread orphaned it
    uint32_t old = release_wrapper_reference(obj);
    count(Counter::bound, -1);
    if (old & SHARED)
        count(Counter::shared, -1);
    count(Counter::orphaned, 1);
}

/// Finalization has begun but the interpreter still runs (Python code of its teardown may
/// use any wrapper): no thread may attach, and no wrapper may be orphaned yet.
static bool finalizing_not_gone() noexcept {
    return compat::is_finalizing() && !deferred::interpreter_gone();
}

/// Enter Python from whatever thread this is: false if the interpreter is gone (then T8).
/// Only the queue's fallback (it could not take the edge: out of memory) comes here from a
/// thread that cannot run Python.
struct PythonEntry {
    bool entered = false;
    PyGILState_STATE gil{};
    bool enter() noexcept {
        if (compat::thread_can_run_python())
            return true;
        if (!compat::interpreter_accepts_threads())
            return false;
        gil = PyGILState_Ensure(); // a C++ thread: see docs/lifecycle.md, "Threads"
        entered = true;
        return true;
    }
    ~PythonEntry() {
        if (entered)
            PyGILState_Release(gil);
    }
};

/// The E1 hook (runtime.h) and the slow half of settle_after_call(): T4, T5 or T8. The
/// caller owns a reference (or holds the wrapper), so obj stays alive throughout. A thread
/// that cannot run Python hands the edge to the queue (deferred_edges.h), which applies it
/// here on a thread that can.
void settle(Object *obj) noexcept {
    ObjectHeader *h = obj->header();
    if (!h)
        return;
    if (!compat::thread_can_run_python()) {
        switch (deferred::defer_share(obj)) {
            case deferred::Outcome::applied:
            case deferred::Outcome::queued:
                return;
            case deferred::Outcome::gone:
                orphan(obj, h);
                return;
            case deferred::Outcome::no_queue:
                if (finalizing_not_gone())
                    return; // left as a quiet count: the wrapper's death copes with it (T6)
                break;      // take the GIL, as before the queue existed
        }
    }
    PythonEntry python;
    if (!python.enter()) {
        orphan(obj, h);
        return;
    }
    uint32_t c = strong(obj).load(std::memory_order_acquire);
    if (c & WRAPPED) {
        uint32_t n = c & COUNT;
        if (!(c & SHARED) && n >= 2)
            share(obj, h);
        else if ((c & SHARED) && n <= 1)
            unshare(obj, h);
    }
}

/// The E2 hook (runtime.h): drop the caller's reference, the last one besides the wrapper's,
/// then T5. The reference is dropped only once Python may run and under the header's lock:
/// until then it keeps the object alive, whatever other threads do. A thread that cannot run
/// Python never waits: the queue takes the reference over (deferred_edges.h) and applies it
/// on a thread that can, or orphans it (T8) once the interpreter is gone.
void release_shared(Object *obj) noexcept {
    ObjectHeader *h = obj->header();
    if (h && !compat::thread_can_run_python()) {
        switch (deferred::defer_release(obj)) {
            case deferred::Outcome::applied:
            case deferred::Outcome::queued:
                return;
            case deferred::Outcome::gone:
                orphan(obj, h); // releases the wrapper's reference; ours keeps obj alive...
                obj->dec_ref(); // ...until here (no bits left: a plain release, maybe T9)
                return;
            case deferred::Outcome::no_queue:
                if (finalizing_not_gone())
                    return; // out of memory while finalizing: the reference is leaked
                break;      // take the GIL, as before the queue existed
        }
    }
    PythonEntry python;
    if (!h || !python.enter()) {
        if (h)
            orphan(obj, h); // releases the wrapper's reference; ours keeps obj alive until...
        obj->dec_ref();     // ...here (no bits left: a plain release, maybe T9)
        return;
    }
    PyObject *drop;
    uint32_t old;
    {
        WordLock lock(h);
        old = strong(obj).fetch_sub(1, std::memory_order_acq_rel);
        drop = unshare_locked(obj, h);
    }
    Py_XDECREF(drop); // may be the wrapper's last reference: T6 (and T9) run inside
    if ((old & COUNT) == 1) // only possible if T7 or T6 took the bits meanwhile
        detail::on_last_strong(obj);
}

// ---- T6 die: the wrapper's refcount reached zero ----------------------------------------------

/// The one tp_dealloc of every bound tether type. Python subclasses reach it through
/// CPython's subtype_dealloc, after their __del__ (which may have resurrected them by
/// handing `self` to C++: then T4 ran and this is never reached).
///
/// In two steps around the wrapper's teardown. The teardown runs Python code (weakref
/// callbacks, the values of its __dict__ dying) that may reach the object through C++ (a
/// WeakRef, a raw pointer): first the word says DYING(self), so such code gets no wrapper and
/// makes none (wrap raises, share does nothing) while this wrapper still owns WRAPPED; then,
/// once nothing Python is left, DETACHED and the wrapper's reference released (maybe T9).
void tether_dealloc(PyObject *self) noexcept {
    PyTypeObject *tp = Py_TYPE(self);
    Object *obj = object_of(self);
#if defined(Py_GIL_DISABLED)
    uintptr_t former = object_word(self); // read before tp_free
#endif
    ObjectHeader *h = obj ? obj->header() : nullptr;
    bool tied = false;
    if (h) {
        // HOT (every object made and dropped from Python): with the only reference, no other
        // thread can reach the header or the count (see sole_reference): no lock.
        std::optional<WordLock> lock;
        if (!sole_reference(obj))
            lock.emplace(h);
        if (ObjectHeader::wrapper_of(h->load()) == self) {
            TETHER_ASSERT(!(strong(obj).load() & SHARED), "I4: a SHARED wrapper died");
            publish(h, self, WrapState::Dying);
            tied = true;
        }
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

    if (tied) {
        // Looked at again: the teardown may have let C++ take a count or a WeakRef.
        if (sole_reference(obj)) { // no one else: stores, no lock, no read-modify-write
            publish(h, nullptr, WrapState::Detached);
            strong(obj).store(0, std::memory_order_relaxed); // was WRAPPED | 1, ours
            detail::on_last_strong_unbound(obj);             // uncounts bound, then T9
            return;
        }
        count(Counter::bound, -1);
        uint32_t old;
        { // word and bits together: no T2 can find DETACHED with WRAPPED still set
            WordLock lock(h);
            publish(h, nullptr, WrapState::Detached);
            old = drop_wrapper_reference(obj);
        }
        if ((old & COUNT) == 1) // else a count taken meanwhile keeps the object
            detail::on_last_strong(obj); // T9
    } else if (obj) {
        obj->dec_ref(); // an untied wrapper (opted-out type) owns a plain count
    }
#if defined(Py_GIL_DISABLED)
    else if (former & moved_tag) // a moved-from wrapper kept its former object's memory
        reinterpret_cast<Object *>(former & ~moved_tag)->dec_weak();
#endif
}

// ---- T7 move: tether.move(w) -------------------------------------------------------------------

Object *move_out(PyObject *self) noexcept {
    Wrapper *w = reinterpret_cast<Wrapper *>(self);
    Object *obj = nullptr;
    bool was_shared = false;
    {
        // The lock field reads and writes hold while they use the object: the object leaves
        // the wrapper between two of them, never during one, and two threads moving one
        // wrapper cannot both take its reference.
        WrapperLock lock(self);
        obj = object_of(self); // (null once moved: tagged on free-threaded builds)
        if (obj) {
            if (ObjectHeader *h = obj->header()) {
                WordLock lock(h);
                TETHER_ASSERT(ObjectHeader::wrapper_of(h->load()) == self,
                              "T7 starts from BOUND(self)");
                publish(h, nullptr, WrapState::Detached);
                // The wrapper's reference stays in the count: it is the caller's now.
                uint32_t old = strong(obj).fetch_and(~(WRAPPED | SHARED), std::memory_order_acq_rel);
                was_shared = (old & SHARED) != 0;
            }
#if defined(Py_GIL_DISABLED)
            // Keep the memory for threads that read the pointer before now (object_of).
            obj->inc_weak();
            __atomic_store_n(reinterpret_cast<uintptr_t *>(&w->object),
                             reinterpret_cast<uintptr_t>(obj) | moved_tag, __ATOMIC_RELEASE);
#else
            w->object = nullptr;
#endif
            w->state.state = state_relinquished;
        }
    }
    if (!obj) {
        raise_unusable(self);
        return nullptr;
    }
    if (obj->header()) {
        count(Counter::bound, -1);
        if (was_shared) {
            count(Counter::shared, -1);
            Py_DECREF(self); // the header's reference (the caller holds its own)
        }
    }
    return obj;
}

} // namespace tether::py
