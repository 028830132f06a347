// SPDX-License-Identifier: Apache-2.0
// bindings/src/vector_fields.cpp: numeric vector fields handed to pickle without a copy
//
// The registry of numeric vector fields (def_field of a std::vector<U>, python.h "numeric
// vector fields"), the count of live exports per vector, and the exporter type that hands a
// vector's memory to pickle.PickleBuffer. It lives in libtether_python because every module's
// field setters (fields.h, set<T, M>) ask it whether their member is exported, while only
// tether._core's reducer (reduce.cpp) makes exporters.
//
// The contract, as bytearray's while a memoryview of it lives:
//   V1. An exporter holds its wrapper and one strong count of the C++ object, so the object,
//       and with it the vector's memory, outlives every buffer taken from the exporter,
//       whatever Python drops meanwhile (`del obj; gc.collect()`).
//   V2. Each buffer taken (bf_getbuffer) counts one export of the vector's address until it
//       is released. It begins under the wrapper's lock (WrapperLock), where the writers of
//       the field check the count before they swap a new vector in, so a buffer never points
//       at memory a write from Python freed: the write raises BufferError instead.
//   V3. C++ code is not stopped: a C++ function that resizes or frees the vector while a
//       buffer lives leaves that buffer dangling, as it would a nanobind reference_internal
//       view (docs/processes.md).
#include <tether/python.h>

#include <atomic>
#include <mutex>
#include <unordered_map>

namespace tether::py {
namespace {

// ---- registry (COLD: binding time, and once per layout in the reducer) ------------------------

// Never destroyed: tables and definitions live with their types, which may outlive statics.
auto &g_fields = *new std::unordered_map<const PyGetSetDef *, const VectorField *>();
std::mutex g_fields_mutex;

// ---- export counts (V2) -------------------------------------------------------------------------

auto &g_exports = *new std::unordered_map<const void *, size_t>(); // vector address -> buffers
std::mutex g_exports_mutex;
std::atomic<size_t> g_exports_total{0}; // sum of g_exports: the writers' fast path

void export_begin(const void *member) {
    std::lock_guard<std::mutex> g(g_exports_mutex);
    ++g_exports[member]; // may throw bad_alloc: the caller turns it into MemoryError
    g_exports_total.fetch_add(1, std::memory_order_relaxed);
}

void export_end(const void *member) noexcept {
    std::lock_guard<std::mutex> g(g_exports_mutex);
    auto it = g_exports.find(member);
    if (it == g_exports.end())
        return; // not reached: every end has its begin
    if (--it->second == 0)
        g_exports.erase(it);
    g_exports_total.fetch_sub(1, std::memory_order_relaxed);
}

// ---- the exporter type ------------------------------------------------------------------------

struct Exporter {
    PyObject_HEAD
    PyObject *wrapper;        ///< strong (V1)
    Object *object;           ///< one strong C++ count (V1)
    const VectorField *field;
    void *member;             ///< the vector's address: the key of its exports
    Py_ssize_t views;         ///< buffers taken from this exporter and not released
    const void *items_at;     ///< what those buffers point at (fixed while views > 0, V2)
    Py_ssize_t items, bytes;  ///< and its shapes
    char format[2];
};

void exporter_dealloc(PyObject *self) {
    auto *e = reinterpret_cast<Exporter *>(self);
    PyTypeObject *tp = Py_TYPE(self);
    Py_XDECREF(e->wrapper);
    if (e->object)
        e->object->dec_ref();
    tp->tp_free(self);
    Py_DECREF(tp);
}

int exporter_getbuffer(PyObject *self, Py_buffer *view, int flags) {
    auto *e = reinterpret_cast<Exporter *>(self);
    if (flags & PyBUF_WRITABLE) {
        PyErr_SetString(PyExc_BufferError, "tether: a vector field's buffer is read-only");
        return -1;
    }
    bool moved = false, no_memory = false;
    {
        WrapperLock lock(e->wrapper);
        // After tether.move() the object's writers lock another wrapper: a first buffer
        // cannot begin in step with them. Further ones can: the vector is already pinned.
        moved = e->views == 0 && object_of(e->wrapper) != e->object;
        if (!moved) {
            try {
                export_begin(e->member);
            } catch (const std::bad_alloc &) {
                no_memory = true;
            }
        }
        if (!moved && !no_memory && e->views++ == 0) {
            void *member;
            size_t count;
            e->field->data(e->object, e->field->closure, &member, &e->items_at, &count);
            e->items = Py_ssize_t(count);
            e->bytes = Py_ssize_t(count * e->field->itemsize);
        }
    }
    if (moved) {
        PyErr_SetString(PyExc_BufferError, "tether: the object was moved into C++ "
                                           "(tether.move) after it was pickled");
        return -1;
    }
    if (no_memory) {
        PyErr_NoMemory();
        return -1;
    }
    static const char empty = 0; // an empty vector may have no memory: a valid address
    view->buf = const_cast<void *>(e->items_at ? e->items_at : &empty);
    view->obj = Py_NewRef(self);
    view->len = e->bytes;
    view->readonly = 1;
    bool typed = (flags & PyBUF_FORMAT) == PyBUF_FORMAT;
    view->itemsize = typed ? Py_ssize_t(e->field->itemsize) : 1; // no format: bytes ('B')
    view->format = typed ? e->format : nullptr;
    view->ndim = 1;
    view->shape = (flags & PyBUF_ND) == PyBUF_ND ? (typed ? &e->items : &e->bytes) : nullptr;
    view->strides = (flags & PyBUF_STRIDES) == PyBUF_STRIDES ? &view->itemsize : nullptr;
    view->suboffsets = nullptr;
    view->internal = nullptr;
    return 0;
}

void exporter_releasebuffer(PyObject *self, Py_buffer *) {
    auto *e = reinterpret_cast<Exporter *>(self);
    WrapperLock lock(e->wrapper);
    --e->views;
    export_end(e->member);
}

PyType_Slot exporter_slots[] = {
    {Py_tp_dealloc, (void *) exporter_dealloc},
    {Py_bf_getbuffer, (void *) exporter_getbuffer},
    {Py_bf_releasebuffer, (void *) exporter_releasebuffer},
    {Py_tp_doc, (void *) "The memory of a tether object's std::vector field, exported to pickle "
                         "without a copy (read-only). While a buffer of it lives, assigning the "
                         "field from Python raises BufferError."},
    {0, nullptr},
};
PyType_Spec exporter_spec = {"tether.VectorBuffer", sizeof(Exporter), 0,
                             Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION,
                             exporter_slots};

std::atomic<PyTypeObject *> g_exporter_type{nullptr};

PyTypeObject *exporter_type() {
    if (PyTypeObject *t = g_exporter_type.load(std::memory_order_acquire))
        return t;
    auto *t = reinterpret_cast<PyTypeObject *>(PyType_FromSpec(&exporter_spec));
    if (!t)
        return nullptr;
    PyTypeObject *expected = nullptr;
    if (!g_exporter_type.compare_exchange_strong(expected, t, std::memory_order_acq_rel)) {
        Py_DECREF(t); // another thread made it first
        return expected;
    }
    return t; // kept for the process
}

} // namespace

int register_vector_field(const PyGetSetDef *def, const VectorField *field) noexcept {
    if (!def || !field || field->size < sizeof(VectorField) || !field->data || !field->assign) {
        PyErr_SetString(PyExc_SystemError, "tether::py::register_vector_field: bad table");
        return -1;
    }
    try {
        std::lock_guard<std::mutex> g(g_fields_mutex);
        g_fields[def] = field;
    } catch (const std::bad_alloc &) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

const VectorField *vector_field(const PyGetSetDef *def) noexcept {
    std::lock_guard<std::mutex> g(g_fields_mutex);
    auto it = g_fields.find(def);
    return it == g_fields.end() ? nullptr : it->second;
}

bool vector_exported(const void *member) noexcept {
    if (g_exports_total.load(std::memory_order_relaxed) == 0)
        return false; // nothing exported anywhere (V2: a begin happens under the caller's lock)
    std::lock_guard<std::mutex> g(g_exports_mutex);
    return g_exports.find(member) != g_exports.end();
}

PyObject *export_vector(PyObject *self, const VectorField *field) noexcept {
    PyTypeObject *tp = exporter_type();
    if (!tp)
        return nullptr;
    Object *obj;
    void *member = nullptr;
    {
        WrapperLock lock(self); // the object cannot leave the wrapper meanwhile
        obj = object_of(self);
        if (obj) {
            inc_ref_quiet(obj); // settled below, outside the lock
            const void *items;
            size_t count;
            field->data(obj, field->closure, &member, &items, &count); // its address is kept
        }
    }
    if (!obj)
        return raise_unusable(self);
    settle(obj); // the count may have made it shared (T4)
    auto *e = reinterpret_cast<Exporter *>(PyType_GenericAlloc(tp, 0));
    if (!e) {
        obj->dec_ref();
        return nullptr;
    }
    e->wrapper = Py_NewRef(self);
    e->object = obj;
    e->field = field;
    e->member = member;
    e->views = e->items = e->bytes = 0;
    e->items_at = nullptr;
    e->format[0] = field->format;
    e->format[1] = 0;
    return reinterpret_cast<PyObject *>(e);
}

void vector_field_stats(size_t *fields, size_t *exports) noexcept {
    {
        std::lock_guard<std::mutex> g(g_fields_mutex);
        *fields = g_fields.size();
    }
    *exports = g_exports_total.load(std::memory_order_relaxed);
}

} // namespace tether::py
