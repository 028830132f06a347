// SPDX-License-Identifier: Apache-2.0
// bindings/src/deferred_edges.cpp: the queue of edges C++ threads hand over instead of taking
// the GIL (states and rules: deferred_edges.h). It never writes a header word or a count's
// bits itself: applying an entry is an ordinary dec_ref or settle on a thread that may run
// Python, which takes the transitions of lifecycle.cpp.
#include "deferred_edges.h"

#include <tether/compat.h>

#include <condition_variable>
#include <mutex>
#include <new>
#include <thread>
#include <vector>

namespace tether::py::deferred {

namespace {

enum State : int { OPEN, FINALIZING, GONE };

struct Entry {
    Object *obj;
    bool share; ///< E1 (holds a weak count); else E2 (holds a strong count)
};

struct Queue {
    std::mutex mutex;
    std::condition_variable wake;    ///< the drainer: entries, or stop
    std::condition_variable applied; ///< E1 threads waiting for their entry
    std::vector<Entry> entries;
    uint64_t pushed = 0;       ///< tickets handed out (the n-th entry has ticket n)
    uint64_t done = 0;         ///< every ticket up to this one has been applied
    uint64_t taken = 0;        ///< the last ticket a batch took out of `entries`
    int batches_in_flight = 0; ///< batches taken and not yet applied (threads apply in parallel)
    std::thread *drainer = nullptr;
    bool stop = false;         ///< the drainer must exit (atexit)
    int python_calls = 0;      ///< C++ threads between begin_ and end_python_call
};

// Never destroyed: C++ threads may still cross edges during static destruction. Replaced
// (the old one leaked) in a forked child, whose copy of a mutex or condition variable may be
// in any state.
std::atomic<Queue *> g_queue{new Queue};
std::atomic<int> g_state{OPEN};
std::atomic<bool> g_pending{false};
thread_local bool t_draining = false;

Queue &queue() noexcept { return *g_queue.load(std::memory_order_acquire); }

/// Locks a queue's mutex. On free-threaded builds a thread attached to the interpreter waits
/// for it detached: os.fork holds the mutex (before_fork) and then stops the world, which
/// waits for every attached thread; the drainer blocked here attached would never stop.
void lock_queue(std::mutex &m) noexcept {
#if defined(Py_GIL_DISABLED)
    if (m.try_lock())
        return;
    if (compat::thread_can_run_python()) {
        // Attaching again with the mutex held is safe: no thread stops the world while
        // waiting for this mutex (before_fork takes it before os.fork stops the world).
        Py_BEGIN_ALLOW_THREADS
        m.lock();
        Py_END_ALLOW_THREADS
        return;
    }
#endif
    m.lock();
}

/// Holds a queue's mutex, taken by lock_queue().
class QueueLock {
    std::mutex &m_;

public:
    explicit QueueLock(std::mutex &m) noexcept : m_(m) { lock_queue(m_); }
    ~QueueLock() { m_.unlock(); }
    QueueLock(const QueueLock &) = delete;
    QueueLock &operator=(const QueueLock &) = delete;
};

/// Python runs normally: the drainer may attach and E1 may wait for it.
bool python_runs(const Queue &q) noexcept {
    return g_state.load(std::memory_order_acquire) == OPEN && !q.stop &&
           !compat::is_finalizing();
}

void drainer_main(Queue *q) noexcept {
    for (;;) {
        {
            std::unique_lock<std::mutex> lock(q->mutex);
            q->wake.wait(lock, [q] { return !q->entries.empty() || q->stop; });
            if (q->stop)
                return;
        }
        // The only wait for the GIL on the queue's behalf. The atexit hook sets `stop` and
        // joins this thread with the GIL released before Py_FinalizeEx sets its finalizing
        // flag, so this never blocks into finalization (where CPython would end the thread).
        PyGILState_STATE gil = PyGILState_Ensure();
        drain();
        PyGILState_Release(gil);
    }
}

/// Appends an entry; its ticket, or 0 if the queue cannot take it (gone: `*gone` set).
uint64_t push(Object *obj, bool share, bool *gone) noexcept {
    Queue &q = queue();
    QueueLock lock(q.mutex);
    // Not Py_IsInitialized(): Py_FinalizeEx clears it as it begins, while Python code of the
    // teardown still uses every wrapper. GONE is set by the Py_AtExit callback, after it.
    *gone = g_state.load(std::memory_order_acquire) == GONE;
    if (*gone)
        return 0;
    bool added = false;
    try {
        q.entries.push_back({obj, share});
        added = true;
        if (!q.drainer && python_runs(q))
            q.drainer = new std::thread(drainer_main, &q);
    } catch (...) { // out of memory, or no thread could be started: the caller takes the GIL
        if (added)
            q.entries.pop_back();
        return 0;
    }
    g_pending.store(true, std::memory_order_release);
    q.wake.notify_one();
    return ++q.pushed;
}

void apply(const Entry &e) noexcept {
    if (e.share) {
        // E1: take a count of our own if the object lives; settle() then reads the header's
        // word again (the wrapper may have died, or another thread settled first).
        if (e.obj->try_inc_ref()) {
            settle(e.obj);
            e.obj->dec_ref();
        }
        e.obj->dec_weak();
    } else {
        e.obj->dec_ref(); // E2 again, now on a thread that may run Python (or GONE: T8)
    }
}

/// Applies what is queued, batch by batch, on this thread (GIL held, or GONE).
void apply_all() noexcept {
    if (t_draining)
        return; // a __del__ run by an entry called tether.settle(): the outer loop goes on
    t_draining = true;
    Queue &q = queue();
    for (;;) {
        std::vector<Entry> batch;
        {
            QueueLock lock(q.mutex);
            if (q.entries.empty()) {
                g_pending.store(false, std::memory_order_relaxed);
                break;
            }
            batch.swap(q.entries);
            q.taken = q.pushed;
            ++q.batches_in_flight;
        }
        for (const Entry &e : batch)
            apply(e);
        {
            // Another thread may still apply an earlier batch: tickets count as done only
            // once no batch is in flight.
            QueueLock lock(q.mutex);
            if (--q.batches_in_flight == 0)
                q.done = q.taken;
        }
        q.applied.notify_all();
    }
    t_draining = false;
}

// ---- the hooks that move the state ---------------------------------------------------------

/// atexit (Py_FinalizeEx, before its finalizing flag; main thread, GIL held): stop and join
/// the drainer, apply what is queued, and switch to FINALIZING.
PyObject *on_atexit(PyObject *, PyObject *) noexcept {
    Queue &q = queue();
    std::thread *drainer;
    {
        QueueLock lock(q.mutex);
        q.stop = true;
        drainer = q.drainer;
        q.drainer = nullptr;
    }
    q.wake.notify_all();
    Py_BEGIN_ALLOW_THREADS // they may be waiting for the GIL: let them finish
    if (drainer)
        drainer->join();
    {
        // C++ threads calling a Python override (trampolines): let every call that began
        // finish; later ones run the C++ method (begin_python_call() says no).
        std::unique_lock<std::mutex> lock(q.mutex);
        q.applied.wait(lock, [&q] { return q.python_calls == 0; });
    }
    Py_END_ALLOW_THREADS
    delete drainer;
    apply_all(); // E1 threads waiting now get their entries applied
    {
        QueueLock lock(q.mutex);
        g_state.store(FINALIZING, std::memory_order_release);
    }
    q.applied.notify_all(); // anyone who queued after apply_all stops waiting
    Py_RETURN_NONE;
}

/// Py_AtExit: the interpreter is gone. What is still queued is orphaned (T8) by the same
/// dec_ref/settle, which now find no interpreter.
void on_interpreter_gone() noexcept {
    Queue &q = queue();
    {
        QueueLock lock(q.mutex);
        g_state.store(GONE, std::memory_order_release);
    }
    q.applied.notify_all();
    apply_all();
}

PyObject *before_fork(PyObject *, PyObject *) noexcept {
    // No C++ thread is half-way through a push when the child copies; held through the fork
    // (after_fork_in_parent unlocks, the child takes a fresh queue).
    lock_queue(queue().mutex);
    Py_RETURN_NONE;
}
PyObject *after_fork_in_parent(PyObject *, PyObject *) noexcept {
    queue().mutex.unlock();
    Py_RETURN_NONE;
}
PyObject *after_fork_in_child(PyObject *, PyObject *) noexcept {
    // Only this thread exists here: the drainer and any waiting thread are gone. A fresh
    // queue takes the entries over (their counts were copied with the objects); the old one,
    // whose lock the parent's fork held, is left behind.
    Queue *old = g_queue.load(std::memory_order_relaxed);
    Queue *fresh = new (std::nothrow) Queue;
    if (fresh) {
        fresh->entries.swap(old->entries);
        fresh->pushed = fresh->done = fresh->taken = 0;
        g_queue.store(fresh, std::memory_order_release);
        g_pending.store(!fresh->entries.empty(), std::memory_order_relaxed);
    } else {
        old->drainer = nullptr; // never joined: it does not exist in this process
        old->mutex.unlock();
    }
    Py_RETURN_NONE;
}

PyMethodDef g_atexit_def = {"_tether_atexit", (PyCFunction) on_atexit, METH_NOARGS, nullptr};
PyMethodDef g_before_fork_def = {"_tether_before_fork", (PyCFunction) before_fork, METH_NOARGS,
                                 nullptr};
PyMethodDef g_parent_def = {"_tether_after_fork_in_parent", (PyCFunction) after_fork_in_parent,
                            METH_NOARGS, nullptr};
PyMethodDef g_child_def = {"_tether_after_fork_in_child", (PyCFunction) after_fork_in_child,
                           METH_NOARGS, nullptr};

} // namespace

// ---- the edges ------------------------------------------------------------------------------

Outcome defer_release(Object *obj) noexcept {
    bool gone;
    if (push(obj, false, &gone))
        return Outcome::queued;
    return gone ? Outcome::gone : Outcome::no_queue;
}

Outcome defer_share(Object *obj) noexcept {
    obj->inc_weak(); // the entry's: the memory outlives the thread's count if need be
    bool gone;
    uint64_t ticket = push(obj, true, &gone);
    if (!ticket) {
        obj->dec_weak();
        return gone ? Outcome::gone : Outcome::no_queue;
    }
    Queue &q = queue();
    std::unique_lock<std::mutex> lock(q.mutex);
    // Identity first: while Python runs, wait until the header has taken the wrapper, so
    // that Python cannot drop it meanwhile. Once finalization began, nobody waits.
    q.applied.wait(lock, [&] { return q.done >= ticket || !python_runs(q); });
    return q.done >= ticket ? Outcome::applied : Outcome::queued;
}

bool begin_python_call() noexcept {
    Queue &q = queue();
    QueueLock lock(q.mutex);
    if (!python_runs(q))
        return false;
    ++q.python_calls;
    return true;
}

void end_python_call() noexcept {
    Queue &q = queue();
    {
        QueueLock lock(q.mutex);
        --q.python_calls;
    }
    q.applied.notify_all();
}

void drain() noexcept { apply_all(); }

void drain_if_pending() noexcept {
    if (g_pending.load(std::memory_order_acquire))
        apply_all();
}

size_t pending_count() noexcept {
    Queue &q = queue();
    QueueLock lock(q.mutex);
    return q.entries.size();
}

bool interpreter_gone() noexcept {
    return g_state.load(std::memory_order_acquire) == GONE;
}

int install() noexcept {
    static bool installed = false;
    if (installed)
        return 0;
    PyObject *atexit = PyImport_ImportModule("atexit");
    PyObject *os = atexit ? PyImport_ImportModule("os") : nullptr;
    PyObject *hook = os ? PyCFunction_New(&g_atexit_def, nullptr) : nullptr;
    PyObject *r = hook ? PyObject_CallMethod(atexit, "register", "O", hook) : nullptr;
    Py_XDECREF(r);
    bool ok = r != nullptr;
    if (ok) {
        PyObject *before = PyCFunction_New(&g_before_fork_def, nullptr);
        PyObject *parent = PyCFunction_New(&g_parent_def, nullptr);
        PyObject *child = PyCFunction_New(&g_child_def, nullptr);
        PyObject *reg = os ? PyObject_GetAttrString(os, "register_at_fork") : nullptr;
        PyObject *kw = (before && parent && child && reg)
                           ? Py_BuildValue("{sOsOsO}", "before", before, "after_in_parent",
                                           parent, "after_in_child", child)
                           : nullptr;
        PyObject *empty = kw ? PyTuple_New(0) : nullptr;
        PyObject *done = empty ? PyObject_Call(reg, empty, kw) : nullptr;
        ok = done != nullptr;
        Py_XDECREF(done);
        Py_XDECREF(empty);
        Py_XDECREF(kw);
        Py_XDECREF(reg);
        Py_XDECREF(child);
        Py_XDECREF(parent);
        Py_XDECREF(before);
    }
    Py_XDECREF(hook);
    Py_XDECREF(os);
    Py_XDECREF(atexit);
    if (!ok)
        return -1;
    // After Py_FinalizeEx (a C callback, no Python). Without a free slot (CPython keeps 32),
    // edges still find the interpreter gone through Py_IsInitialized().
    (void) Py_AtExit(&on_interpreter_gone);
    installed = true;
    return 0;
}

} // namespace tether::py::deferred
