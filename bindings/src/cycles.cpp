// SPDX-License-Identifier: Apache-2.0
// bindings/src/cycles.cpp: cycles through C++ are collected (tp_traverse / tp_clear of tether types)
//
// The header's reference to a wrapper is invisible to the collector, so a cycle through a C++
// Ref (`p.__dict__ -> Box -> Ref -> p`) was never reclaimed. A bound type with an owning field
// declared with def_field (Ref<U>, std::optional<Ref<U>>, std::vector<Ref<U>>) is a GC type;
// its wrappers report the wrappers their object's fields lead to, by the rule below.
// docs/lifecycle.md ("Cycles through C++") has the soundness argument; in short:
//
// * Exact rule, for the visitors that subtract references (the collector's subtract pass):
//   only a wrapper that is its object's sole owner (header BOUND(self), count WRAPPED|1, no
//   WeakRef) walks its object's traced fields, at most 64 levels deep; a target held by that
//   field alone is visited: an unwrapped object with count 1 is descended into, a wrapped one
//   with count WRAPPED|SHARED|2 (the header's one reference is that field's) has its wrapper
//   visited and is descended into too (its own wrapper does not walk it: not a root). No
//   thread without the GIL can take a count on anything this walk reaches (it needs the
//   wrapper, a WeakRef or a Ref held by something outside the walk), so each visit is owned,
//   once.
// * Lenient superset, for every other visitor (those only mark reachable: a superset keeps a
//   live object alive, never the reverse): every wrapper walks its object's traced fields,
//   through unwrapped objects, visiting every SHARED target's wrapper (whose own traversal
//   walks on). So an edge the subtract pass used is seen again in the next passes from any
//   reachable holder, whatever C++ threads did to the counts meanwhile (a thread copying a
//   field through a raw pointer). No Python refcount is read: the free-threaded collector
//   uses them as scratch space during its resurrection pass.
// * tether.collect_cycles(): for the duration of one explicit collection whose caller promises
//   that no thread without the GIL touches tether counts, every wrapper walks its fields
//   (count-1 unwrapped objects descended into, WRAPPED|SHARED|2 targets visited): cycles made of
//   C++ fields alone (a <-> b) are collected too.
//
// Which visitors subtract is learned once, at the first traced field, from a probe: an
// unreachable object is traversed only by the visitors that subtract (CPython's
// visit_decref, and visit_decref_unreachable on free-threaded builds). tests/test_cycles.py
// checks the count on every interpreter CI runs; until it is known, no C++ edge is reported.
#include "cycles.h"

#include <tether/compat.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <new>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace tether::py {

using detail::ObjectAccess;

namespace {

constexpr uint32_t WRAPPED = Object::wrapped_bit;
constexpr uint32_t SHARED = Object::shared_bit;
constexpr int max_depth = 64; // levels below a root: the cost bound of one traversal
constexpr int exact_budget = 4096; // objects one exact walk may reach (fewer edges: a leak at worst)

std::atomic<uint32_t> &strong(Object *obj) noexcept { return ObjectAccess::strong_word(obj); }

// ---- the registry: traced fields per bound type ----------------------------------------------

struct TracedField {
    FieldTracer tracer;
    void *closure;
};
/// One bound type's traced fields, and its nearest bound base's (inherited). Written at
/// binding time under g_registry; read by traversals without a lock (field lists are
/// immutable snapshots, replaced whole and never freed).
struct TypeTrace {
    PyTypeObject *type = nullptr;
    const TypeTrace *base = nullptr;
    std::atomic<const std::vector<TracedField> *> fields{nullptr};
};

std::atomic<const TypeTrace *> g_trace[detail::max_types]; // by C++ type index
std::mutex g_registry;
std::unordered_map<PyTypeObject *, TypeTrace *> *g_by_type = nullptr; // under g_registry
/// Field lists replaced by a longer one (under g_registry), never freed: binding time only.
auto *g_retired = new std::vector<const std::vector<TracedField> *>();

TypeTrace *find_locked(PyTypeObject *tp) noexcept {
    if (!g_by_type)
        return nullptr;
    auto it = g_by_type->find(tp);
    return it == g_by_type->end() ? nullptr : it->second;
}

TypeTrace *ensure_locked(PyTypeObject *tp) {
    if (TypeTrace *t = find_locked(tp))
        return t;
    if (!g_by_type)
        g_by_type = new std::unordered_map<PyTypeObject *, TypeTrace *>();
    auto *t = new TypeTrace();
    t->type = tp;
    for (PyTypeObject *b = tp->tp_base; b && !t->base; b = b->tp_base)
        t->base = find_locked(b);
    (*g_by_type)[tp] = t;
    return t;
}

/// Calls `sink` for every traced field of obj (its type's and its bound bases').
template <typename F> void for_each_field(Object *obj, F &&each) noexcept {
    uint32_t index = obj->type_index();
    if (index >= detail::max_types)
        return;
    for (const TypeTrace *t = g_trace[index].load(std::memory_order_acquire); t; t = t->base)
        if (const auto *list = t->fields.load(std::memory_order_acquire))
            for (const TracedField &f : *list)
                each(f);
}

// ---- which visitors subtract: the probe ------------------------------------------------------

constexpr int max_visitors = 4;
std::atomic<visitproc> g_subtracting[max_visitors];
std::atomic<int> g_calibrated{0}; // how many g_subtracting holds; 0: unknown (report nothing)
std::atomic<bool> g_quiescent{false};

std::atomic<bool> g_recording{false};
visitproc g_seen[max_visitors + 1];
int g_seen_count = 0;

struct ProbeObject {
    PyObject_HEAD
    PyObject *ref;
};

int probe_traverse(PyObject *self, visitproc visit, void *arg) {
    if (g_recording.load(std::memory_order_relaxed)) {
        bool known = false;
        for (int i = 0; i < g_seen_count; ++i)
            known = known || g_seen[i] == visit;
        if (!known && g_seen_count <= max_visitors)
            g_seen[g_seen_count++] = visit;
    }
    Py_VISIT(reinterpret_cast<ProbeObject *>(self)->ref);
    Py_VISIT(Py_TYPE(self));
    return 0;
}
int probe_clear(PyObject *self) {
    Py_CLEAR(reinterpret_cast<ProbeObject *>(self)->ref);
    return 0;
}
void probe_dealloc(PyObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    Py_CLEAR(reinterpret_cast<ProbeObject *>(self)->ref);
    tp->tp_free(self);
    Py_DECREF(tp);
}
PyType_Slot probe_slots[] = {
    {Py_tp_traverse, (void *) probe_traverse},
    {Py_tp_clear, (void *) probe_clear},
    {Py_tp_dealloc, (void *) probe_dealloc},
    {0, nullptr},
};
PyType_Spec probe_spec = {"tether._CycleProbe", sizeof(ProbeObject), 0,
                          Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC, probe_slots};

/// Makes one self-referencing probe garbage and collects the young generation, recording
/// the visitors the collector traverses it with: an unreachable object is traversed only by
/// the passes that subtract references. GIL held; runs Python (the collection).
void calibrate() noexcept {
    if (g_calibrated.load(std::memory_order_acquire) != 0)
        return;
    static PyObject *probe_type = nullptr;
    if (!probe_type && !(probe_type = PyType_FromSpec(&probe_spec))) {
        PyErr_Clear();
        return;
    }
    PyObject *probe = PyType_GenericAlloc(reinterpret_cast<PyTypeObject *>(probe_type), 0);
    PyObject *gc = probe ? PyImport_ImportModule("gc") : nullptr;
    PyObject *collect = gc ? PyObject_GetAttrString(gc, "collect") : nullptr;
    PyObject *zero = collect ? PyLong_FromLong(0) : nullptr;
    if (!zero) {
        PyErr_Clear();
        Py_XDECREF(collect);
        Py_XDECREF(gc);
        Py_XDECREF(probe);
        return;
    }
    reinterpret_cast<ProbeObject *>(probe)->ref = Py_NewRef(probe);
    g_seen_count = 0;
    g_recording.store(true, std::memory_order_relaxed);
    Py_DECREF(probe); // garbage now: only its own reference keeps it
    PyObject *r = PyObject_CallOneArg(collect, zero);
    g_recording.store(false, std::memory_order_relaxed);
    if (!r)
        PyErr_Clear();
    Py_XDECREF(r);
    Py_DECREF(zero);
    Py_DECREF(collect);
    Py_DECREF(gc);
    int n = g_seen_count;
    if (n < 1 || n > max_visitors)
        return; // not collected (a collection was already running), or not understood
    for (int i = 0; i < n; ++i)
        g_subtracting[i].store(g_seen[i], std::memory_order_relaxed);
    g_calibrated.store(n, std::memory_order_release);
}

bool subtracts(visitproc visit, int n) noexcept {
    for (int i = 0; i < n; ++i)
        if (g_subtracting[i].load(std::memory_order_relaxed) == visit)
            return true;
    return false;
}

// ---- the walk ------------------------------------------------------------------------------

enum class Mode { exact, lenient, quiescent };

/// The live wrapper the header names (BOUND), or nullptr. Called for SHARED objects only:
/// the header owns a reference to it, so it is alive.
PyObject *bound_wrapper(const ObjectHeader *h) noexcept {
    uintptr_t word = h->load();
    if (ObjectHeader::state_of(word) != WrapState::Bound)
        return nullptr;
    return static_cast<PyObject *>(ObjectHeader::wrapper_of(word));
}

struct Frame {
    Object *obj;
    int depth;
};

/// Objects met by a lenient walk: a few inline, a hash set beyond.
struct Seen {
    std::vector<Object *> small;
    std::unordered_set<Object *> big;
    bool insert(Object *o) {
        if (big.empty()) {
            for (Object *s : small)
                if (s == o)
                    return false;
            if (small.size() < 32) {
                small.push_back(o);
                return true;
            }
            big.insert(small.begin(), small.end());
        }
        return big.insert(o).second;
    }
    void reset() noexcept {
        small.clear();
        if (!big.empty())
            big.clear();
    }
};

struct Buffers {
    std::vector<Frame> stack;
    Seen seen;
    bool busy = false;
};
thread_local Buffers t_buffers;

struct Walker : FieldSink {
    visitproc visit;
    void *arg;
    Mode mode;
    int depth = 0; ///< of the object whose fields are being reported
    int pushed = 0; ///< objects the walk reached (exact walks stop at exact_budget)
    int err = 0;
    bool failed = false; ///< out of memory (the walk stops: fewer edges)
    Buffers *buf;
};

void push(Walker *w, Object *t, int depth) noexcept {
    if (depth >= max_depth)
        return;
    if (w->mode == Mode::exact && ++w->pushed > exact_budget)
        return; // a subset of the exact edges never over-visits (C1); the lenient walk has all
    try {
        w->buf->stack.push_back(Frame{t, depth});
    } catch (...) {
        w->failed = true;
    }
}

void on_target(FieldSink *sink, Object *t) noexcept {
    Walker *w = static_cast<Walker *>(sink);
    if (w->err || w->failed || !t)
        return;
    const ObjectHeader *h = t->header();
    if (!h)
        return; // no header (opted out): never tied, never descended into
    uint32_t c = strong(t).load(std::memory_order_acquire);
    int next = w->depth + 1;
    switch (w->mode) {
        case Mode::exact: {
            if (ObjectAccess::weak_count(t) != 1)
                return; // a WeakRef (or a queued E1) could take a count at any time
            if (c == 1) {
                push(w, t, next); // unwrapped, held by this field alone
            } else if (c == (WRAPPED | SHARED | 2)) {
                PyObject *wt = bound_wrapper(h);
                if (!wt)
                    return;
                w->err = w->visit(wt, w->arg); // the header's reference is this field's
                if (!w->err)
                    push(w, t, next); // its own wrapper does not walk it (not a root)
            }
            return;
        }
        case Mode::lenient: {
            bool fresh;
            try {
                fresh = w->buf->seen.insert(t);
            } catch (...) {
                w->failed = true;
                return;
            }
            if (!fresh)
                return;
            if (c & WRAPPED) { // its own wrapper walks it, in this pass too
                if (c & SHARED)
                    if (PyObject *wt = bound_wrapper(h))
                        w->err = w->visit(wt, w->arg);
                return;
            }
            push(w, t, next);
            return;
        }
        case Mode::quiescent: {
            if (c == 1)
                push(w, t, next);
            else if (c == (WRAPPED | SHARED | 2))
                if (PyObject *wt = bound_wrapper(h))
                    w->err = w->visit(wt, w->arg);
            return;
        }
    }
}

int walk(Object *root, Mode mode, visitproc visit, void *arg) noexcept {
    Buffers local;
    Buffers *buf = t_buffers.busy ? &local : &t_buffers; // a visitor that re-enters: rare
    buf->busy = true;
    Walker w;
    w.object = &on_target;
    w.visit = visit;
    w.arg = arg;
    w.mode = mode;
    w.buf = buf;
    push(&w, root, 0);
    while (!buf->stack.empty() && !w.err && !w.failed) {
        Frame f = buf->stack.back();
        buf->stack.pop_back();
        w.depth = f.depth;
        for_each_field(f.obj, [&](const TracedField &field) {
            if (!w.err && !w.failed)
                field.tracer(f.obj, field.closure, FieldOp::visit, &w);
        });
    }
    buf->stack.clear();
    buf->seen.reset();
    if (buf == &t_buffers)
        t_buffers.busy = false;
    return w.err;
}

// ---- the type slots --------------------------------------------------------------------------

int traverse(PyObject *self, visitproc visit, void *arg) {
    // A heap type's instances own a reference to it; CPython's subtype_traverse leaves that
    // visit to the nearest base traverse of a heap type, which this is.
    Py_VISIT(Py_TYPE(self));
    Object *obj = object_of(self);
    if (!obj)
        return 0; // uninitialized or moved from
    const ObjectHeader *h = obj->header();
    if (!h || h->load() != ObjectHeader::encode(self, WrapState::Bound))
        return 0;
    uint32_t c = strong(obj).load(std::memory_order_acquire);
    Mode mode;
    if (g_quiescent.load(std::memory_order_acquire)) {
        mode = Mode::quiescent;
    } else {
        int n = g_calibrated.load(std::memory_order_acquire);
        if (n == 0)
            return 0;
        if (subtracts(visit, n)) {
            if (c != (WRAPPED | 1) || ObjectAccess::weak_count(obj) != 1)
                return 0; // not the sole owner: something outside may take counts
            mode = Mode::exact;
        } else {
            mode = Mode::lenient; // every wrapper: the superset of every exact walk's edges
        }
    }
    return walk(obj, mode, visit, arg);
}

struct Dropper : FieldSink {
    std::vector<Object *> *out;
};
void on_cleared(FieldSink *sink, Object *t) noexcept {
    if (!t)
        return;
    try {
        static_cast<Dropper *>(sink)->out->push_back(t);
    } catch (...) {
        t->dec_ref(); // out of memory: released here, under the wrapper's lock
    }
}

/// Only a root of this collection's rule empties its fields (the collector found its wrapper
/// garbage; the object is owned by the wrapper alone, so nothing else can reach it). The
/// references leave the fields under the wrapper's lock and are released after it.
int clear(PyObject *self) {
    std::vector<Object *> drop;
    {
        WrapperLock lock(self);
        Object *obj = object_of(self);
        const ObjectHeader *h = obj ? obj->header() : nullptr;
        if (!h || h->load() != ObjectHeader::encode(self, WrapState::Bound))
            return 0;
        bool root;
        if (g_quiescent.load(std::memory_order_acquire))
            root = true;
        else
            root = g_calibrated.load(std::memory_order_acquire) != 0 &&
                   strong(obj).load(std::memory_order_acquire) == (WRAPPED | 1) &&
                   ObjectAccess::weak_count(obj) == 1;
        if (!root)
            return 0;
        Dropper d;
        d.object = &on_cleared;
        d.out = &drop;
        for_each_field(obj, [&](const TracedField &f) {
            f.tracer(obj, f.closure, FieldOp::clear, &d);
        });
    }
    for (Object *o : drop)
        o->dec_ref(); // may cross E2 (T5) and free the rest of the cycle
    return 0;
}

/// Makes `tp` a GC type traversed by tether. False if it has a traversal of its own.
bool make_gc(PyTypeObject *tp) noexcept {
    if (tp->tp_traverse == &traverse)
        return true;
    if (tp->tp_traverse || PyType_IS_GC(tp))
        return false; // nanobind's (nb::dynamic_attr, nb::is_weak_referenceable): left alone
    tp->tp_flags |= Py_TPFLAGS_HAVE_GC;
    tp->tp_traverse = &traverse;
    tp->tp_clear = &clear;
    tp->tp_free = PyObject_GC_Del;
    PyType_Modified(tp);
    return true;
}

} // namespace

namespace cycles {

void on_install_type(PyTypeObject *type, uint32_t type_index) noexcept {
    if (type_index >= detail::max_types)
        return;
    try {
        std::lock_guard<std::mutex> lock(g_registry);
        g_trace[type_index].store(ensure_locked(type), std::memory_order_release);
    } catch (...) { // out of memory at binding time: the type's fields are not traced
    }
}

bool traced(PyTypeObject *type) noexcept { return type->tp_traverse == &traverse; }

} // namespace cycles

int register_traced_field(PyTypeObject *type, uint32_t type_index, uint32_t alias_index,
                          FieldTracer tracer, void *closure) noexcept {
    if (type_index >= detail::max_types || alias_index >= detail::max_types)
        return 0;
    try {
        std::lock_guard<std::mutex> lock(g_registry);
        if (!make_gc(type))
            return 0;
        TypeTrace *t = ensure_locked(type);
        auto list = std::make_unique<std::vector<TracedField>>();
        const auto *old = t->fields.load(std::memory_order_acquire);
        if (old)
            *list = *old;
        list->push_back(TracedField{tracer, closure});
        if (old)
            g_retired->push_back(old); // kept: a traversal on another thread may be reading it
        t->fields.store(list.release(), std::memory_order_release);
        g_trace[type_index].store(t, std::memory_order_release);
        g_trace[alias_index].store(t, std::memory_order_release);
    } catch (...) {
        PyErr_NoMemory();
        return -1;
    }
    calibrate();
    return 0;
}

Py_ssize_t collect_cycles() noexcept {
    apply_deferred(); // a queued release holds a count: apply them first
    PyObject *gc = PyImport_ImportModule("gc");
    if (!gc)
        return -1;
    g_quiescent.store(true, std::memory_order_release);
    PyObject *r = PyObject_CallMethod(gc, "collect", nullptr);
    g_quiescent.store(false, std::memory_order_release);
    Py_DECREF(gc);
    if (!r)
        return -1;
    Py_ssize_t n = PyLong_AsSsize_t(r);
    Py_DECREF(r);
    return n;
}

int cycle_calibration() noexcept { return g_calibrated.load(std::memory_order_acquire); }

} // namespace tether::py
