// SPDX-License-Identifier: Apache-2.0
// bindings/src/reduce.cpp: pickle, copy and deepcopy of tether objects, in C++
//
// One generic reducer for every tether type. Each declared field is a CPython getset
// descriptor in its type's dict, so its get/set functions are called directly
// (d_getset->get(self, closure)): no attribute lookup, no Python frame, and the field's own
// function keeps its locking (the wrapper's critical section on free-threaded builds).
//
// Per type, a Layout (the fields, the Python slots, the constructor parameters, and whether a
// subclass overrides __reduce__/__getstate__/__setstate__) is computed once by Python
// (tether._pickle._fast_layout) and cached here, keyed by the type and validated by the
// type's version tag: CPython changes the tag whenever the type or a base gains, loses or
// changes an attribute, so a stale layout is never used. Descriptors are kept borrowed: the
// type's dict holds them while the tag is unchanged.
//
// What __reduce_ex__ gives (the format tether._pickle documents):
//     (tether._core._rebuild, (key, *ctor_values), state), key = (cls, ctor_names)
//     state = (state_names, *state_values), or (dict, state_names, *state_values) when the
//     object has a non-empty __dict__, or None when empty
// `key` and `state_names` are tuples cached per type (and per combination of fields present),
// so pickle memoizes them: each object carries its values, not its class or field names. The
// keys live in a list in the class's own dict (cls.__tether_rebuild_keys__), not in this
// file's cache, since a key holds its class. _rebuild allocates cls and runs the bound C++
// __init__ with ctor_names=ctor_values; __setstate__ sets the rest after pickle memoized the
// object, so sharing and cycles survive. Both still take what earlier versions wrote:
// _rebuild(cls, ctor_names, *ctor_values) and the state (None, state_names, *state_values).
//
// Numeric vectors: a field def_field registered as a std::vector of numbers (its typed
// functions, python.h VectorField) goes as its memory instead of a list of numbers: with
// protocol 5 a PickleBuffer over the vector itself (out of band with a buffer_callback; no
// copy, see vector_fields.cpp for what holds while it lives), with older protocols one bytes
// copy; loading copies the buffer into a new vector (one memcpy).
#include <tether/nanobind.h>

#include <cstring>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace nb = nanobind;

namespace tether {
namespace {

// ---- small helpers ----------------------------------------------------------------------------

struct Ref_ { // an owned PyObject*
    PyObject *p = nullptr;
    Ref_() = default;
    explicit Ref_(PyObject *o) : p(o) {}
    Ref_(const Ref_ &) = delete;
    Ref_ &operator=(const Ref_ &) = delete;
    Ref_(Ref_ &&o) noexcept : p(o.p) { o.p = nullptr; }
    Ref_ &operator=(Ref_ &&o) noexcept {
        std::swap(p, o.p);
        return *this;
    }
    ~Ref_() { Py_XDECREF(p); }
    PyObject *release() {
        PyObject *r = p;
        p = nullptr;
        return r;
    }
    explicit operator bool() const { return p != nullptr; }
};

/// A vector with room for N items inline: per-object work allocates nothing for small types.
template <typename T, size_t N> class Small {
    T inline_[N];
    std::vector<T> heap_;
    size_t n_ = 0;

public:
    Small() = default;
    Small(const Small &) = delete;
    Small &operator=(const Small &) = delete;
    void push_back(T v) {
        if (n_ < N) {
            inline_[n_++] = std::move(v);
            return;
        }
        if (heap_.empty())
            for (size_t i = 0; i < N; ++i)
                heap_.push_back(std::move(inline_[i]));
        heap_.push_back(std::move(v));
        ++n_;
    }
    size_t size() const { return n_; }
    bool empty() const { return n_ == 0; }
    T *data() { return n_ <= N ? inline_ : heap_.data(); }
    const T *data() const { return n_ <= N ? inline_ : heap_.data(); }
    T &operator[](size_t i) { return data()[i]; }
    const T &operator[](size_t i) const { return data()[i]; }
    T *begin() { return data(); }
    T *end() { return data() + n_; }
    const T *begin() const { return data(); }
    const T *end() const { return data() + n_; }
};

PyTypeObject *g_object_type = nullptr; // tether.Object, set by bind_reduce
PyTypeObject *object_type() { return g_object_type; }

PyObject *import_attr(const char *module, const char *attr) {
    PyObject *m = PyImport_ImportModule(module);
    if (!m)
        return nullptr;
    PyObject *r = PyObject_GetAttrString(m, attr);
    Py_DECREF(m);
    return r;
}

/// A cached attribute of a Python module (a strong reference kept for the process).
PyObject *cached_attr(PyObject *&slot, const char *module, const char *attr) {
    if (!slot)
        slot = import_attr(module, attr);
    return slot;
}
PyObject *g_fast_layout = nullptr, *g_pickle_base = nullptr, *g_deepcopy = nullptr,
         *g_reconstruct = nullptr;
PyObject *g_empty_tuple = nullptr;
PyObject *g_rebuild = nullptr; // tether._core._rebuild
PyObject *g_str_dict = nullptr;

unsigned int version_of(PyTypeObject *tp) {
#if defined(Py_GIL_DISABLED)
    return __atomic_load_n(&tp->tp_version_tag, __ATOMIC_ACQUIRE);
#else
    return tp->tp_version_tag;
#endif
}

bool has_dict(PyTypeObject *tp) {
#ifdef Py_TPFLAGS_MANAGED_DICT
    if (tp->tp_flags & Py_TPFLAGS_MANAGED_DICT)
        return true;
#endif
    return tp->tp_dictoffset != 0;
}

/// Vectors shorter than this go as lists: a PickleBuffer costs more than a few numbers.
constexpr Py_ssize_t min_vector_items = 64;

// ---- layouts ----------------------------------------------------------------------------------

enum class Access : uint8_t { getset, descriptor, generic };

struct Entry {
    Ref_ name;                 // str
    PyObject *descr = nullptr; // borrowed, valid while the version tag is unchanged
    Access access = Access::generic;
    getter get = nullptr;
    setter set = nullptr;
    void *closure = nullptr;
    bool readonly = false, slot = false, param_default = false;
    int param = -1;   // >= 0: a constructor parameter of the same name
    int numeric = 0;  // 1: annotated list[float], 2: list[int] (0: or named in __tether_list_fields__)
    const py::VectorField *vec = nullptr; // a numeric std::vector field, numeric != 0
};

struct Names {
    uint64_t mask;
    Ref_ ctor, state;
    Py_ssize_t key = -1; // index in Layout::keys of (class_ref, ctor), _rebuild's first argument
};

struct Layout {
    PyTypeObject *type = nullptr;
    unsigned int version = 0;
    bool constructible = false, user_reduce = false, user_getstate = false,
         user_setstate = false, dict = false;
    PyObject *init = nullptr;      // borrowed: the bound base's __init__ (in its dict)
    PyObject *class_ref = nullptr; // borrowed: cls, or its by-value spec (in cls.__dict__)
    // borrowed: the list cls.__tether_rebuild_keys__, holding each Names' (class_ref, ctor)
    // tuple. Kept by the class, not here: a key holds the class, which a process-wide cache
    // must not keep alive (the class, its dict and the list form a cycle the collector frees).
    // Null for a class that refused the attribute: a fresh key per object.
    PyObject *keys = nullptr;
    std::vector<Entry> entries;    // declared fields, then Python slots
    std::vector<Names> names;      // per combination of entries present (mask), at most a few
    Ref_ seen_ctor_names;          // the last ctor_names tuple _rebuild saw ...
    bool seen_ctor_positional = false; // ... and whether it names parameters 0..n-1 in order
    Ref_ seen_state_names;         // the last state_names tuple __setstate__ resolved ...
    std::vector<int> seen_index;   // ... to these entries (-1: not an entry)
    std::mutex mutex;              // names/seen_* on free-threaded builds

    bool fast_copy() const {
        return constructible && !user_reduce && !user_getstate && !user_setstate;
    }
};

// Never destroyed: layouts hold Python references, which must not be released after the
// interpreter finalized (static destructors run after Py_Finalize).
using LayoutMap = std::unordered_map<PyTypeObject *, std::shared_ptr<Layout>>;
LayoutMap &g_layouts = *new LayoutMap();
std::mutex g_layouts_mutex;

struct MaybeLock { // a std::mutex on free-threaded builds, nothing under the GIL
#if defined(Py_GIL_DISABLED)
    std::lock_guard<std::mutex> g;
    explicit MaybeLock(std::mutex &m) : g(m) {}
#else
    explicit MaybeLock(std::mutex &) {}
#endif
};

bool build_entry(PyTypeObject *tp, Entry &e) {
    e.descr = _PyType_Lookup(tp, e.name.p);
    if (e.descr && Py_IS_TYPE(e.descr, &PyGetSetDescr_Type)) {
        PyGetSetDef *d = reinterpret_cast<PyGetSetDescrObject *>(e.descr)->d_getset;
        e.access = Access::getset;
        e.get = d->get;
        e.set = d->set;
        e.closure = d->closure;
        if (!e.get)
            e.access = Access::generic;
    } else if (e.descr && Py_TYPE(e.descr)->tp_descr_get && Py_TYPE(e.descr)->tp_descr_set) {
        e.access = Access::descriptor;
    } else {
        e.access = Access::generic;
    }
    if (e.access != Access::getset)
        e.numeric = 0;
    // what def_field registered for this very descriptor (vector_fields.cpp): the member's
    // C++ type is known, never guessed
    e.vec = e.numeric ? py::vector_field(reinterpret_cast<PyGetSetDescrObject *>(e.descr)->d_getset)
                      : nullptr;
    return true;
}

std::shared_ptr<Layout> compute_layout(PyTypeObject *tp) {
    if (!cached_attr(g_fast_layout, "tether._pickle", "_fast_layout"))
        return nullptr;
    Ref_ info(PyObject_CallOneArg(g_fast_layout, reinterpret_cast<PyObject *>(tp)));
    if (!info)
        return nullptr;
    PyObject *keys = PyTuple_Check(info.p) && PyTuple_GET_SIZE(info.p) == 9
                         ? PyTuple_GET_ITEM(info.p, 8)
                         : nullptr;
    if (!keys || !(PyList_CheckExact(keys) || keys == Py_None)) {
        PyErr_SetString(PyExc_SystemError, "tether._pickle._fast_layout: bad result");
        return nullptr;
    }
    auto L = std::make_shared<Layout>();
    L->type = tp;
    PyObject **it = &PyTuple_GET_ITEM(info.p, 0);
    L->constructible = PyObject_IsTrue(it[0]) == 1;
    L->init = it[1] == Py_None ? nullptr : it[1];
    PyObject *fields = it[2], *slots = it[3];
    L->class_ref = it[4];
    L->user_reduce = PyObject_IsTrue(it[5]) == 1;
    L->user_getstate = PyObject_IsTrue(it[6]) == 1;
    L->user_setstate = PyObject_IsTrue(it[7]) == 1;
    L->keys = keys == Py_None ? nullptr : keys;
    L->dict = has_dict(tp);
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(fields); ++i) {
        PyObject *f = PyTuple_GET_ITEM(fields, i); // (name, readonly, param, default, numeric)
        Entry e;
        e.name = Ref_(Py_NewRef(PyTuple_GET_ITEM(f, 0)));
        PyUnicode_InternInPlace(&e.name.p);
        e.readonly = PyObject_IsTrue(PyTuple_GET_ITEM(f, 1)) == 1;
        e.param = (int) PyLong_AsLong(PyTuple_GET_ITEM(f, 2));
        e.param_default = PyObject_IsTrue(PyTuple_GET_ITEM(f, 3)) == 1;
        e.numeric = (int) PyLong_AsLong(PyTuple_GET_ITEM(f, 4));
        L->entries.push_back(std::move(e));
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(slots); ++i) {
        Entry e;
        e.name = Ref_(Py_NewRef(PyTuple_GET_ITEM(slots, i)));
        PyUnicode_InternInPlace(&e.name.p);
        e.slot = true;
        L->entries.push_back(std::move(e));
    }
    if (PyErr_Occurred())
        return nullptr;
    // Python ran above (it may have cached things in the class dict, changing its version):
    // the descriptors and the version are read after it, with no Python code in between.
    for (Entry &e : L->entries)
        build_entry(tp, e);
    L->names.reserve(16); // at most 16 combinations cached; entries never move
    if (version_of(tp) == 0) { // assign a tag (attribute lookups through the cache do)
        _PyType_Lookup(tp, g_str_dict);
    }
    L->version = version_of(tp);
    // info (holding init and class_ref) dies here; both stay in class dicts (borrowed above)
    return L;
}

/// The Layout of `tp`; nullptr with an exception set on failure.
#if !defined(Py_GIL_DISABLED)
// The last layout used (the GIL orders every use): a graph's objects come in runs of a type.
std::shared_ptr<Layout> &g_last = *new std::shared_ptr<Layout>();
#endif

std::shared_ptr<Layout> layout_of(PyTypeObject *tp) {
    unsigned int v = version_of(tp);
#if !defined(Py_GIL_DISABLED)
    if (v != 0 && g_last && g_last->type == tp && g_last->version == v)
        return g_last;
#endif
    if (v != 0) {
        MaybeLock lock(g_layouts_mutex);
        auto it = g_layouts.find(tp);
        if (it != g_layouts.end() && it->second->version == v) {
#if !defined(Py_GIL_DISABLED)
            g_last = it->second;
#endif
            return it->second;
        }
    }
    std::shared_ptr<Layout> L = compute_layout(tp);
    if (!L)
        return nullptr;
    // Without its key list (an allocation failed while the class was given one) the layout
    // serves this call only: the next one tries again.
    if (L->version != 0 && L->version == version_of(tp) && L->keys) {
        MaybeLock lock(g_layouts_mutex);
        if (g_layouts.size() > 4096) // dead classes leave entries behind: start afresh
            g_layouts.clear();
        g_layouts[tp] = L;
    }
    return L;
}

bool is_tether_instance(PyObject *o) {
    PyTypeObject *base = object_type();
    return base && PyObject_TypeCheck(o, base);
}

/// True if `value` is a tether object or a list, tuple or dict holding one (as _pickle did).
bool holds_objects(PyObject *v) {
    if (is_tether_instance(v))
        return true;
    if (PyList_CheckExact(v) || PyTuple_CheckExact(v)) {
        Py_ssize_t n = PySequence_Fast_GET_SIZE(v);
        for (Py_ssize_t i = 0; i < n; ++i)
            if (is_tether_instance(PySequence_Fast_GET_ITEM(v, i)))
                return true;
    } else if (PyDict_CheckExact(v)) {
        Py_ssize_t pos = 0;
        PyObject *k, *x;
        while (PyDict_Next(v, &pos, &k, &x))
            if (is_tether_instance(x))
                return true;
    }
    return false;
}

// ---- reading and writing one entry ------------------------------------------------------------

PyObject *read_entry(PyObject *self, const Entry &e) {
    switch (e.access) {
    case Access::getset:
        return e.get(self, e.closure);
    case Access::descriptor:
        return Py_TYPE(e.descr)->tp_descr_get(e.descr, self,
                                              reinterpret_cast<PyObject *>(Py_TYPE(self)));
    default:
        return PyObject_GenericGetAttr(self, e.name.p);
    }
}

int write_entry(PyObject *self, const Entry &e, PyObject *v) {
    switch (e.access) {
    case Access::getset:
        if (!e.set) {
            PyErr_Format(PyExc_AttributeError, "field %U of %s is read-only", e.name.p,
                         Py_TYPE(self)->tp_name);
            return -1;
        }
        return e.set(self, v, e.closure);
    case Access::descriptor:
        return Py_TYPE(e.descr)->tp_descr_set(e.descr, self, v);
    default:
        return PyObject_GenericSetAttr(self, e.name.p, v);
    }
}

// ---- numeric vectors: buffers out, one copy in ------------------------------------------------
//
// A field registered by def_field as a numeric vector (python.h, VectorField; its table knows
// the member's C++ type) and annotated list[float] / list[int] (so not named in
// __tether_list_fields__) is pickled as its memory: with protocol 5 a PickleBuffer over the
// vector itself (vector_fields.cpp: no copy; writes from Python raise BufferError while it
// lives), with older protocols one bytes copy. Loading copies a buffer into a new vector.

/// Calls `use(items, count)` with the vector of `self`'s field, under the wrapper's lock (use
/// must not run Python code). False if the wrapper has no object (the caller raises).
template <typename F> bool with_vector(PyObject *self, const Entry &e, F &&use) {
    py::WrapperLock lock(self);
    Object *o = py::object_of(self);
    if (!o)
        return false;
    void *member;
    const void *items;
    size_t count;
    e.vec->data(o, e.vec->closure, &member, &items, &count);
    use(items, count);
    return true;
}

/// The vector's item count, or -1 with an exception (the wrapper is unusable).
Py_ssize_t vector_items(PyObject *self, const Entry &e) {
    size_t n = 0;
    if (!with_vector(self, e, [&](const void *, size_t count) { n = count; })) {
        py::raise_unusable(self);
        return -1;
    }
    return Py_ssize_t(n);
}

/// Protocols 0 to 4: the vector as one bytes object (a snapshot).
PyObject *vector_bytes(PyObject *self, const Entry &e) {
    PyObject *bytes = nullptr;
    bool usable = with_vector(self, e, [&](const void *items, size_t count) {
        // allocates, runs no Python code (bytes are not tracked by the collector)
        bytes = PyBytes_FromStringAndSize(static_cast<const char *>(items),
                                          Py_ssize_t(count * e.vec->itemsize));
    });
    if (!usable)
        return py::raise_unusable(self);
    return bytes;
}

/// Read one entry for pickling: a vector field as a buffer when it is long enough.
PyObject *read_entry_for_pickle(PyObject *self, const Entry &e, int protocol) {
    if (!e.vec)
        return read_entry(self, e);
    Py_ssize_t n = vector_items(self, e);
    if (n < 0)
        return nullptr;
    if (n < min_vector_items)
        return read_entry(self, e); // a few numbers: a list costs less than a buffer
    if (protocol < 5)
        return vector_bytes(self, e);
    Ref_ exporter(py::export_vector(self, e.vec)); // the vector's own memory, no copy
    if (!exporter)
        return nullptr;
    return PyPickleBuffer_FromObject(exporter.p);
}

/// 'f', 'i' or 'u' for a struct-module item code, 0 for anything else.
char kind_of_code(char c) {
    switch (c) {
    case 'e': case 'f': case 'd': return 'f';
    case 'b': case 'h': case 'i': case 'l': case 'q': case 'n': return 'i';
    case 'B': case 'H': case 'I': case 'L': case 'Q': case 'N': return 'u';
    default: return 0;
    }
}

/// Checks a buffer given for vector field `e`: raw bytes (format 'B', 'b' or 'c') of a whole
/// number of items, or items of the field's own kind and size, C-contiguous, native order.
bool check_vector_buffer(PyObject *self, const Entry &e, const Py_buffer &view) {
    const char *type = Py_TYPE(self)->tp_name;
    if (!PyBuffer_IsContiguous(&view, 'C')) {
        PyErr_Format(PyExc_ValueError, "%s.%U: the buffer is not C-contiguous", type, e.name.p);
        return false;
    }
    const char *fmt = view.format ? view.format : "B";
    if (*fmt == '@' || *fmt == '=' || *fmt == '<')
        ++fmt; // native or little-endian (every platform tether builds on)
    bool raw = view.itemsize == 1 && (fmt[0] == 'B' || fmt[0] == 'b' || fmt[0] == 'c') &&
               fmt[1] == 0;
    if (!raw && (fmt[1] != 0 || kind_of_code(fmt[0]) != e.vec->kind ||
                 view.itemsize != Py_ssize_t(e.vec->itemsize))) {
        PyErr_Format(PyExc_TypeError,
                     "%s.%U: a buffer of '%s' items (%zd bytes each) cannot fill a vector of "
                     "'%c' (%d bytes each)",
                     type, e.name.p, view.format ? view.format : "B", view.itemsize,
                     e.vec->format, int(e.vec->itemsize));
        return false;
    }
    if (view.len % Py_ssize_t(e.vec->itemsize)) {
        PyErr_Format(PyExc_ValueError,
                     "%s.%U: a buffer of %zd bytes is not a whole number of %d-byte items", type,
                     e.name.p, view.len, int(e.vec->itemsize));
        return false;
    }
    return true;
}

/// Write a buffer (bytes, bytearray, memoryview, PickleBuffer...) into a vector field: one
/// copy into a new std::vector. 0 done, -1 error.
int assign_vector(PyObject *self, const Entry &e, PyObject *value) {
    Py_buffer view;
    if (PyObject_GetBuffer(value, &view, PyBUF_RECORDS_RO) != 0) {
        if (PyErr_ExceptionMatches(PyExc_BufferError)) { // e.g. an indirect (PIL-style) one
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError, "%s.%U: cannot read a %s as a plain buffer",
                         Py_TYPE(self)->tp_name, e.name.p, Py_TYPE(value)->tp_name);
        }
        return -1;
    }
    int rc = -1;
    if (check_vector_buffer(self, e, view))
        rc = e.vec->assign(self, e.vec->closure, view.buf,
                           size_t(view.len) / e.vec->itemsize);
    PyBuffer_Release(&view);
    return rc;
}

/// A buffer given to a list[float] / list[int] field that is no vector this build knows (a
/// std::vector with its own allocator, a std::list...): as a list of its numbers.
PyObject *buffer_as_list(PyObject *value, int numeric) {
    Ref_ mv(PyMemoryView_FromObject(value));
    if (!mv)
        return nullptr;
    Py_buffer *b = PyMemoryView_GET_BUFFER(mv.p);
    if (!b->format || std::strcmp(b->format, "B") == 0) { // raw bytes: 8-byte items
        Ref_ cast(PyObject_CallMethod(mv.p, "cast", "s", numeric == 1 ? "d" : "q"));
        if (!cast)
            return nullptr;
        return PyObject_CallMethod(cast.p, "tolist", nullptr);
    }
    return PyObject_CallMethod(mv.p, "tolist", nullptr);
}

/// Set one entry from a state value, taking the buffer path for vector fields.
int set_entry_value(PyObject *self, const Entry &e, PyObject *v) {
    if (e.numeric && !PyList_CheckExact(v) && PyObject_CheckBuffer(v)) {
        if (e.vec && e.set)
            return assign_vector(self, e, v);
        Ref_ list(buffer_as_list(v, e.numeric));
        if (!list)
            return -1;
        return write_entry(self, e, list.p);
    }
    return write_entry(self, e, v);
}

// ---- the names tuples -------------------------------------------------------------------------

/// The key tuple of `n`, new reference, if L.keys still holds it where it was put; else null.
PyObject *cached_key(Layout &L, const Names &n) {
    if (n.key < 0 || !L.keys)
        return nullptr;
    PyObject *k = py::compat::list_item_ref(L.keys, n.key);
    if (k && PyTuple_CheckExact(k) && PyTuple_GET_SIZE(k) == 2 &&
        PyTuple_GET_ITEM(k, 0) == L.class_ref && PyTuple_GET_ITEM(k, 1) == n.ctor.p)
        return k;
    Py_XDECREF(k);
    return nullptr;
}

/// The cached names of the combination `mask`, or null (L.mutex held).
Names *find_names(Layout &L, uint64_t mask) {
    for (Names &n : L.names)
        if (n.mask == mask)
            return &n;
    return nullptr;
}

/// The (ctor_names, state_names) tuples for the entries in `ctor` and `state` (indices), and
/// the key (class_ref, ctor_names) if `key` is given, cached per mask so that every object of
/// the type refers to the same tuples.
template <typename V>
bool names_for(Layout &L, const V &ctor, const V &state,
               PyObject **ctor_names, PyObject **state_names, PyObject **key = nullptr) {
    uint64_t mask = 0;
    bool cacheable = L.entries.size() <= 32;
    Names *found = nullptr; // L.names never reallocates (reserved): stays valid
    if (cacheable) {
        for (int i : ctor)
            mask |= uint64_t(1) << i;
        for (int i : state)
            mask |= uint64_t(1) << (i + 32);
        MaybeLock lock(L.mutex);
        found = find_names(L, mask);
        if (found && (!key || (*key = cached_key(L, *found)))) {
            *ctor_names = Py_NewRef(found->ctor.p);
            *state_names = Py_NewRef(found->state.p);
            return true;
        }
    }
    // Allocating may run the collector, and with it Python code: never under L.mutex.
    Ref_ c, s;
    if (found) { // names known, no key yet (copy made them) or the list was changed
        c = Ref_(Py_NewRef(found->ctor.p));
        s = Ref_(Py_NewRef(found->state.p));
    } else {
        c = Ref_(PyTuple_New(Py_ssize_t(ctor.size())));
        s = Ref_(PyTuple_New(Py_ssize_t(state.size())));
        if (!c || !s)
            return false;
        for (size_t k = 0; k < ctor.size(); ++k)
            PyTuple_SET_ITEM(c.p, Py_ssize_t(k), Py_NewRef(L.entries[size_t(ctor[k])].name.p));
        for (size_t k = 0; k < state.size(); ++k)
            PyTuple_SET_ITEM(s.p, Py_ssize_t(k), Py_NewRef(L.entries[size_t(state[k])].name.p));
    }
    Ref_ k;
    if (key) {
        k = Ref_(PyTuple_Pack(2, L.class_ref, c.p));
        if (!k)
            return false;
    }
    if (cacheable) {
        MaybeLock lock(L.mutex);
        Names *n = find_names(L, mask);
        if (!n && L.names.size() < L.names.capacity()) {
            L.names.push_back(Names{mask, Ref_(Py_NewRef(c.p)), Ref_(Py_NewRef(s.p)), -1});
            n = &L.names.back();
        }
        // A key is put in the list once per Names: a list someone changed is not refilled.
        if (n && k && L.keys && n->key < 0 && n->ctor.p == c.p) {
            Py_ssize_t at = PyList_Size(L.keys);
            if (PyList_Append(L.keys, k.p) == 0) // frees nothing: runs no Python code
                n->key = at;
            else
                PyErr_Clear();
        }
    }
    *ctor_names = c.release();
    *state_names = s.release();
    if (key)
        *key = k.release();
    return true;
}

PyObject *raise_not_constructible(PyTypeObject *tp) {
    if (!cached_attr(g_pickle_base, "tether._pickle", "_pickle_base"))
        return nullptr;
    PyObject *r = PyObject_CallOneArg(g_pickle_base, reinterpret_cast<PyObject *>(tp));
    if (r) { // it found a base after all (the type changed meanwhile): say so plainly
        Py_DECREF(r);
        PyErr_Format(PyExc_TypeError, "cannot pickle %s object", tp->tp_name);
    }
    return nullptr;
}

// ---- reduce -----------------------------------------------------------------------------------

/// The values of an object split as pickle and copy need them.
struct Parts {
    Small<int, 12> ctor, state; // entry indices
    Small<Ref_, 12> ctor_values, state_values;
    Ref_ dict;                    // a non-empty __dict__, or null
};

/// copy and deepcopy read a vector field as protocol 4 does (one bytes snapshot, written back
/// with one copy) instead of as a list of numbers.
constexpr int copy_protocol = 4;

/// Reads every entry of `self` once. `protocol` < 0: no buffers at all.
bool read_parts(PyObject *self, Layout &L, int protocol, Parts &P) {
    if (!py::object_of(self)) {
        py::raise_unusable(self);
        return false;
    }
    for (size_t i = 0; i < L.entries.size(); ++i) {
        const Entry &e = L.entries[i];
        PyObject *v;
        if (e.slot) {
            v = read_entry(self, e);
            if (!v) {
                if (!PyErr_ExceptionMatches(PyExc_AttributeError))
                    return false;
                PyErr_Clear(); // an unset slot stays unset
                continue;
            }
        } else {
            if (e.readonly && e.param < 0)
                continue; // neither given to the constructor nor settable: not kept
            // A vector field read as a buffer goes with the state: the constructor's caster
            // takes a list. One the constructor needs (no default) is read as a list.
            bool buffer_ok = protocol >= 0 && (e.param < 0 || (e.param_default && !e.readonly));
            v = buffer_ok ? read_entry_for_pickle(self, e, protocol) : read_entry(self, e);
            if (!v)
                return false;
        }
        Ref_ value(v);
        bool is_buffer = e.numeric && !PyList_CheckExact(value.p);
        bool to_ctor = e.param >= 0 && !is_buffer &&
                       (e.readonly || !e.param_default || !holds_objects(value.p));
        if (to_ctor) {
            P.ctor.push_back(int(i));
            P.ctor_values.push_back(std::move(value));
        } else {
            P.state.push_back(int(i));
            P.state_values.push_back(std::move(value));
        }
    }
    if (L.dict) {
        PyObject *d = PyObject_GenericGetDict(self, nullptr);
        if (!d)
            return false;
        if (PyDict_GET_SIZE(d) > 0)
            P.dict = Ref_(d);
        else
            Py_DECREF(d);
    }
    return true;
}

PyObject *reduce_impl(PyObject *self, int protocol) {
    PyTypeObject *tp = Py_TYPE(self);
    std::shared_ptr<Layout> L = layout_of(tp);
    if (!L)
        return nullptr;
    if (L->user_reduce)
        return PyObject_CallMethod(self, "__reduce__", nullptr);
    if (!L->constructible)
        return raise_not_constructible(tp);
    // cls.__dict__ holds it now (the version matched); reading fields may run Python code
    // that replaces it, so it is held until names_for has used it
    Ref_ keys(Py_XNewRef(L->keys));
    PyObject *rebuild = g_rebuild;
    Parts P;
    if (!read_parts(self, *L, protocol, P))
        return nullptr;
    PyObject *ctor_names = nullptr, *state_names = nullptr, *key = nullptr;
    if (!names_for(*L, P.ctor, P.state, &ctor_names, &state_names, &key))
        return nullptr;
    Ref_ cn(ctor_names), sn(state_names), k_(key);
    // ((cls, ctor_names), *ctor_values): the key is one tuple per type, written once
    Ref_ args(PyTuple_New(Py_ssize_t(1 + P.ctor_values.size())));
    if (!args)
        return nullptr;
    PyTuple_SET_ITEM(args.p, 0, k_.release());
    for (size_t k = 0; k < P.ctor_values.size(); ++k)
        PyTuple_SET_ITEM(args.p, Py_ssize_t(1 + k), P.ctor_values[k].release());
    Ref_ state;
    if (L->user_getstate || L->user_setstate) {
        state = Ref_(PyObject_CallMethod(self, "__getstate__", nullptr));
        if (!state)
            return nullptr;
        // What the constructor was given, and read-only fields, are not set again.
        if (PyTuple_Check(state.p) && PyTuple_GET_SIZE(state.p) == 2 &&
            PyDict_CheckExact(PyTuple_GET_ITEM(state.p, 1))) {
            Ref_ values(PyDict_Copy(PyTuple_GET_ITEM(state.p, 1)));
            if (!values)
                return nullptr;
            for (const Entry &e : L->entries) {
                bool skip = e.readonly;
                for (int i : P.ctor)
                    skip = skip || &L->entries[size_t(i)] == &e;
                if (skip && PyDict_DelItem(values.p, e.name.p) != 0)
                    PyErr_Clear();
            }
            state = Ref_(PyTuple_Pack(2, PyTuple_GET_ITEM(state.p, 0), values.p));
            if (!state)
                return nullptr;
        }
    } else if (!P.state.empty() || P.dict) {
        // (names, *values), or (__dict__, names, *values) when there is a __dict__: one item
        // fewer for what pickle writes and rebuilds per object of a type without one
        Py_ssize_t at = P.dict ? 1 : 0;
        state = Ref_(PyTuple_New(at + 1 + Py_ssize_t(P.state_values.size())));
        if (!state)
            return nullptr;
        if (P.dict)
            PyTuple_SET_ITEM(state.p, 0, P.dict.release());
        PyTuple_SET_ITEM(state.p, at, sn.release());
        for (size_t k = 0; k < P.state_values.size(); ++k)
            PyTuple_SET_ITEM(state.p, at + 1 + Py_ssize_t(k), P.state_values[k].release());
    } else {
        state = Ref_(Py_NewRef(Py_None));
    }
    return PyTuple_Pack(3, rebuild, args.p, state.p);
}

PyObject *meth_reduce_ex(PyObject *self, PyObject *protocol) {
    long proto = PyLong_AsLong(protocol);
    if (proto == -1 && PyErr_Occurred())
        return nullptr;
    return reduce_impl(self, int(proto));
}

// ---- rebuild ----------------------------------------------------------------------------------

bool check_names(PyObject *names, Py_ssize_t n, const char *what) {
    if (!PyTuple_CheckExact(names) || PyTuple_GET_SIZE(names) != n) {
        PyErr_Format(PyExc_TypeError, "tether._core._rebuild: %s must be a tuple of %zd names",
                     what, n);
        return false;
    }
    for (Py_ssize_t i = 0; i < n; ++i) {
        PyObject *s = PyTuple_GET_ITEM(names, i);
        if (!PyUnicode_CheckExact(s)) {
            PyErr_Format(PyExc_TypeError, "tether._core._rebuild: a field name must be a str, "
                                          "got %s", Py_TYPE(s)->tp_name);
            return false;
        }
        for (Py_ssize_t j = 0; j < i; ++j)
            if (PyUnicode_Compare(s, PyTuple_GET_ITEM(names, j)) == 0) {
                PyErr_Format(PyExc_TypeError, "tether._core._rebuild: field %R given twice", s);
                return false;
            }
    }
    return true;
}

/// A new object of `tp` made by its bound C++ __init__ with names=values.
PyObject *construct(PyTypeObject *tp, Layout &L, PyObject *names, PyObject *const *values,
                    Py_ssize_t n) {
    if (!L.constructible)
        return raise_not_constructible(tp);
    if (!L.init) {
        PyErr_Format(PyExc_TypeError, "cannot rebuild %s: no bound __init__", tp->tp_name);
        return nullptr;
    }
    if (!tp->tp_new) {
        PyErr_Format(PyExc_TypeError, "cannot rebuild %s: it cannot be instantiated",
                     tp->tp_name);
        return nullptr;
    }
    Ref_ obj(tp->tp_new(tp, g_empty_tuple, nullptr));
    if (!obj)
        return nullptr;
    if (!PyObject_TypeCheck(obj.p, tp)) {
        PyErr_Format(PyExc_TypeError, "cannot rebuild %s: __new__ returned a %s", tp->tp_name,
                     Py_TYPE(obj.p)->tp_name);
        return nullptr;
    }
    Small<PyObject *, 16> stack;
    for (Py_ssize_t i = 0; i <= n; ++i)
        stack.push_back(nullptr);
    stack[0] = obj.p;
    for (Py_ssize_t i = 0; i < n; ++i)
        stack[size_t(i) + 1] = values[i];
    // Keyword arguments cost nanobind a name lookup each: when the names are the first n
    // parameters in order, they are passed by position.
    bool positional = n == 0;
    if (n) {
        MaybeLock lock(L.mutex);
        if (L.seen_ctor_names.p == names) {
            positional = L.seen_ctor_positional;
        } else {
            positional = true;
            for (Py_ssize_t k = 0; k < n && positional; ++k) {
                PyObject *s = PyTuple_GET_ITEM(names, k);
                bool ok = false;
                for (const Entry &e : L.entries)
                    if (e.param == int(k) && !e.slot &&
                        (e.name.p == s || PyUnicode_Compare(e.name.p, s) == 0)) {
                        ok = true;
                        break;
                    }
                positional = ok;
            }
            if (PyErr_Occurred())
                PyErr_Clear();
            L.seen_ctor_names = Ref_(Py_NewRef(names));
            L.seen_ctor_positional = positional;
        }
    }
    Ref_ init(Py_NewRef(L.init));
    Ref_ r(positional ? PyObject_Vectorcall(init.p, stack.data(), size_t(n) + 1, nullptr)
                      : PyObject_Vectorcall(init.p, stack.data(), 1, names));
    if (!r)
        return nullptr;
    return obj.release();
}

PyObject *fn_rebuild(PyObject *, PyObject *const *args, Py_ssize_t nargs) {
    // ((cls, names), *values), as __reduce_ex__ writes it; or (cls, names, *values)
    PyObject *cls, *names;
    if (nargs >= 1 && PyTuple_CheckExact(args[0]) && PyTuple_GET_SIZE(args[0]) == 2) {
        cls = PyTuple_GET_ITEM(args[0], 0);
        names = PyTuple_GET_ITEM(args[0], 1);
        args += 1;
        nargs -= 1;
    } else if (nargs >= 2) {
        cls = args[0];
        names = args[1];
        args += 2;
        nargs -= 2;
    } else {
        PyErr_SetString(PyExc_TypeError,
                        "tether._core._rebuild: expected ((cls, names), *values)");
        return nullptr;
    }
    if (!PyType_Check(cls) || !object_type() ||
        !PyType_IsSubtype(reinterpret_cast<PyTypeObject *>(cls), object_type())) {
        PyErr_Format(PyExc_TypeError, "tether._core._rebuild: %R is not a tether type", cls);
        return nullptr;
    }
    PyTypeObject *tp = reinterpret_cast<PyTypeObject *>(cls);
    std::shared_ptr<Layout> L = layout_of(tp);
    if (!L)
        return nullptr;
    bool checked;
    {
        MaybeLock lock(L->mutex);
        checked = L->seen_ctor_names.p == names && // its names were checked when seen first
                  PyTuple_GET_SIZE(names) == nargs;
    }
    if (!checked && !check_names(names, nargs, "constructor arguments"))
        return nullptr;
    return construct(tp, *L, names, args, nargs);
}

// ---- setstate ---------------------------------------------------------------------------------

int update_dict(PyObject *self, PyObject *d) {
    if (d == Py_None)
        return 0;
    if (!PyDict_Check(d)) {
        PyErr_Format(PyExc_TypeError, "%s.__setstate__: __dict__ state must be a dict, got %s",
                     Py_TYPE(self)->tp_name, Py_TYPE(d)->tp_name);
        return -1;
    }
    if (PyDict_GET_SIZE(d) == 0)
        return 0;
    Ref_ own(PyObject_GenericGetDict(self, nullptr));
    if (!own)
        return -1;
    return PyDict_Update(own.p, d);
}

/// Entry index for each name of `names` (-1 for a name that is no entry), into `out`.
template <typename V> void resolve(Layout &L, PyObject *names, V &out) {
    {
        MaybeLock lock(L.mutex);
        if (L.seen_state_names.p == names) {
            for (int i : L.seen_index)
                out.push_back(i);
            return;
        }
    }
    std::vector<int> idx;
    for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(names); ++k) {
        PyObject *s = PyTuple_GET_ITEM(names, k);
        int found = -1;
        for (size_t i = 0; i < L.entries.size() && found < 0; ++i)
            if (L.entries[i].name.p == s ||
                (PyUnicode_Check(s) && PyUnicode_Compare(L.entries[i].name.p, s) == 0))
                found = int(i);
        if (PyErr_Occurred())
            PyErr_Clear();
        idx.push_back(found);
    }
    for (int i : idx)
        out.push_back(i);
    MaybeLock lock(L.mutex);
    L.seen_state_names = Ref_(Py_NewRef(names));
    L.seen_index = std::move(idx);
}

int setstate_impl(PyObject *self, PyObject *state) {
    PyTypeObject *tp = Py_TYPE(self);
    // (names, *values) or (dict or None, names, *values): what __reduce_ex__ gives
    Py_ssize_t at = -1; // where the names are
    if (PyTuple_Check(state) && PyTuple_GET_SIZE(state) >= 1 &&
        PyTuple_Check(PyTuple_GET_ITEM(state, 0)))
        at = 0;
    else if (PyTuple_Check(state) && PyTuple_GET_SIZE(state) >= 2 &&
             PyTuple_Check(PyTuple_GET_ITEM(state, 1)))
        at = 1;
    if (at >= 0) {
        PyObject *names = PyTuple_GET_ITEM(state, at);
        Py_ssize_t n = PyTuple_GET_SIZE(names);
        if (PyTuple_GET_SIZE(state) != n + at + 1) {
            PyErr_Format(PyExc_TypeError, "%s.__setstate__: %zd names for %zd values",
                         tp->tp_name, n, PyTuple_GET_SIZE(state) - at - 1);
            return -1;
        }
        std::shared_ptr<Layout> L = layout_of(tp);
        if (!L)
            return -1;
        bool seen;
        {
            MaybeLock lock(L->mutex);
            seen = L->seen_state_names.p == names; // checked when it was seen first
        }
        for (Py_ssize_t k = 0; k < n && !seen; ++k)
            if (!PyUnicode_Check(PyTuple_GET_ITEM(names, k))) {
                PyErr_Format(PyExc_TypeError, "%s.__setstate__: a field name must be a str",
                             tp->tp_name);
                return -1;
            }
        Small<int, 16> idx;
        resolve(*L, names, idx);
        for (Py_ssize_t k = 0; k < n; ++k) {
            PyObject *v = PyTuple_GET_ITEM(state, k + at + 1);
            int rc = idx[size_t(k)] >= 0
                         ? set_entry_value(self, L->entries[size_t(idx[size_t(k)])], v)
                         : PyObject_GenericSetAttr(self, PyTuple_GET_ITEM(names, k), v);
            if (rc != 0)
                return -1;
        }
        return at ? update_dict(self, PyTuple_GET_ITEM(state, 0)) : 0;
    }
    PyObject *d, *values;
    if (PyTuple_Check(state) && PyTuple_GET_SIZE(state) == 2) {
        d = PyTuple_GET_ITEM(state, 0);
        values = PyTuple_GET_ITEM(state, 1);
    } else if (state == Py_None || PyDict_Check(state)) {
        d = state;
        values = Py_None;
    } else {
        PyErr_Format(PyExc_TypeError, "%s.__setstate__: expected (dict or None, dict), got %s",
                     tp->tp_name, Py_TYPE(state)->tp_name);
        return -1;
    }
    if (values != Py_None) {
        if (!PyDict_Check(values)) {
            PyErr_Format(PyExc_TypeError, "%s.__setstate__: field values must be a dict, got %s",
                         tp->tp_name, Py_TYPE(values)->tp_name);
            return -1;
        }
        std::shared_ptr<Layout> L = layout_of(tp);
        if (!L)
            return -1;
        Ref_ items(PyDict_Items(values)); // a copy: setting may run Python code
        if (!items)
            return -1;
        for (Py_ssize_t k = 0; k < PyList_GET_SIZE(items.p); ++k) {
            PyObject *kv = PyList_GET_ITEM(items.p, k);
            PyObject *name = PyTuple_GET_ITEM(kv, 0), *v = PyTuple_GET_ITEM(kv, 1);
            if (!PyUnicode_Check(name)) {
                PyErr_Format(PyExc_TypeError, "%s.__setstate__: a field name must be a str",
                             tp->tp_name);
                return -1;
            }
            const Entry *found = nullptr;
            for (const Entry &e : L->entries)
                if (PyUnicode_Compare(e.name.p, name) == 0) {
                    found = &e;
                    break;
                }
            int rc = found ? set_entry_value(self, *found, v)
                           : PyObject_GenericSetAttr(self, name, v);
            if (rc != 0)
                return -1;
        }
    }
    if (d != Py_None && !PyDict_Check(d)) {
        PyErr_Format(PyExc_TypeError, "%s.__setstate__: __dict__ state must be a dict, got %s",
                     tp->tp_name, Py_TYPE(d)->tp_name);
        return -1;
    }
    return update_dict(self, d);
}

PyObject *meth_setstate(PyObject *self, PyObject *state) {
    if (setstate_impl(self, state) != 0)
        return nullptr;
    Py_RETURN_NONE;
}

// ---- copy and deepcopy ------------------------------------------------------------------------

PyObject *generic_copy(PyObject *self, PyObject *memo) {
    // copy._reconstruct(self, memo, *self.__reduce_ex__(4)), as copy.copy/deepcopy would
    if (!cached_attr(g_reconstruct, "copy", "_reconstruct"))
        return nullptr;
    Ref_ rv(PyObject_CallMethod(self, "__reduce_ex__", "i", 4));
    if (!rv)
        return nullptr;
    if (!PyTuple_Check(rv.p)) {
        PyErr_SetString(PyExc_TypeError, "__reduce_ex__ must return a tuple");
        return nullptr;
    }
    Ref_ args(PyTuple_New(2 + PyTuple_GET_SIZE(rv.p)));
    if (!args)
        return nullptr;
    PyTuple_SET_ITEM(args.p, 0, Py_NewRef(self));
    PyTuple_SET_ITEM(args.p, 1, Py_NewRef(memo));
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(rv.p); ++i)
        PyTuple_SET_ITEM(args.p, 2 + i, Py_NewRef(PyTuple_GET_ITEM(rv.p, i)));
    return PyObject_Call(g_reconstruct, args.p, nullptr);
}

PyObject *meth_copy(PyObject *self, PyObject *) {
    PyTypeObject *tp = Py_TYPE(self);
    std::shared_ptr<Layout> L = layout_of(tp);
    if (!L)
        return nullptr;
    if (!L->fast_copy())
        return L->constructible || L->user_reduce ? generic_copy(self, Py_None)
                                                  : raise_not_constructible(tp);
    Parts P;
    if (!read_parts(self, *L, copy_protocol, P))
        return nullptr;
    PyObject *cn = nullptr, *sn = nullptr;
    if (!names_for(*L, P.ctor, P.state, &cn, &sn))
        return nullptr;
    Ref_ ctor_names(cn), state_names(sn);
    Small<PyObject *, 12> vals;
    for (Ref_ &v : P.ctor_values)
        vals.push_back(v.p);
    Ref_ obj(construct(tp, *L, ctor_names.p, vals.data(), Py_ssize_t(vals.size())));
    if (!obj)
        return nullptr;
    for (size_t k = 0; k < P.state.size(); ++k)
        if (set_entry_value(obj.p, L->entries[size_t(P.state[k])], P.state_values[k].p) != 0)
            return nullptr;
    if (P.dict && update_dict(obj.p, P.dict.p) != 0)
        return nullptr;
    return obj.release();
}

struct DeepCopier {
    PyObject *memo; // a dict
    int depth = 0;  // objects being copied, one inside the other

    int keep_alive(PyObject *x) {
        Ref_ key(PyLong_FromVoidPtr(memo));
        if (!key)
            return -1;
        PyObject *lst = PyDict_GetItemWithError(memo, key.p);
        if (!lst) {
            if (PyErr_Occurred())
                return -1;
            Ref_ l(PyList_New(0));
            if (!l || PyDict_SetItem(memo, key.p, l.p) != 0)
                return -1;
            lst = l.p;
            return PyList_Append(lst, x);
        }
        return PyList_Append(lst, x);
    }

    PyObject *generic(PyObject *v) {
        if (!cached_attr(g_deepcopy, "copy", "deepcopy"))
            return nullptr;
        return PyObject_CallFunctionObjArgs(g_deepcopy, v, memo, nullptr);
    }

    /// A deep copy of a value a field getter just made. A container only the getter's result
    /// refers to (a count of one: a C++ field converted to a list, dict or tuple) is new, so
    /// it is copied here without the memo, nothing else can refer to it; anything else (a
    /// Python object a field stores, as @tether.dataclass fields do) goes through
    /// copy.deepcopy with the memo, so its sharing is kept.
    PyObject *value(PyObject *v, bool fresh) {
        PyTypeObject *t = Py_TYPE(v);
        fresh = fresh && Py_REFCNT(v) == 1;
        if (v == Py_None || t == &PyLong_Type || t == &PyFloat_Type || t == &PyUnicode_Type ||
            t == &PyBool_Type || t == &PyBytes_Type)
            return Py_NewRef(v);
        if (is_tether_instance(v))
            return object(v);
        if (fresh && t == &PyList_Type) {
            Py_ssize_t n = PyList_GET_SIZE(v);
            Ref_ r(PyList_New(n));
            if (!r)
                return nullptr;
            for (Py_ssize_t i = 0; i < n; ++i) {
                PyObject *c = value(PyList_GET_ITEM(v, i), true);
                if (!c)
                    return nullptr;
                PyList_SET_ITEM(r.p, i, c);
            }
            return r.release();
        }
        if (fresh && t == &PyTuple_Type) {
            Py_ssize_t n = PyTuple_GET_SIZE(v);
            Ref_ r(PyTuple_New(n));
            if (!r)
                return nullptr;
            for (Py_ssize_t i = 0; i < n; ++i) {
                PyObject *c = value(PyTuple_GET_ITEM(v, i), true);
                if (!c)
                    return nullptr;
                PyTuple_SET_ITEM(r.p, i, c);
            }
            return r.release();
        }
        if (fresh && t == &PyDict_Type) {
            Ref_ r(PyDict_New());
            if (!r)
                return nullptr;
            Py_ssize_t pos = 0;
            PyObject *k, *x;
            while (PyDict_Next(v, &pos, &k, &x)) {
                Ref_ kc(value(k, true));
                if (!kc)
                    return nullptr;
                Ref_ xc(value(x, true));
                if (!xc || PyDict_SetItem(r.p, kc.p, xc.p) != 0)
                    return nullptr;
            }
            return r.release();
        }
        return generic(v);
    }

    PyObject *object(PyObject *self) {
        Ref_ key(PyLong_FromVoidPtr(self));
        if (!key)
            return nullptr;
        if (PyObject *hit = PyDict_GetItemWithError(memo, key.p))
            return Py_NewRef(hit);
        if (PyErr_Occurred())
            return nullptr;
        PyTypeObject *tp = Py_TYPE(self);
        std::shared_ptr<Layout> L = layout_of(tp);
        if (!L)
            return nullptr;
        if (!L->fast_copy())
            return generic(self); // its own __deepcopy__, __reduce__ or state methods
        // Python's recursion limit bounds the depth too: from 3.12 on, Py_EnterRecursiveCall
        // counts against a C limit (about 10000) that these frames, larger than the
        // interpreter's, would overflow the stack before reaching.
        if (depth >= Py_GetRecursionLimit()) {
            PyErr_SetString(PyExc_RecursionError,
                            "maximum recursion depth exceeded while deep-copying a tether object");
            return nullptr;
        }
        if (Py_EnterRecursiveCall(" while deep-copying a tether object"))
            return nullptr;
        ++depth;
        PyObject *r = object_body(self, tp, *L, key.p);
        --depth;
        Py_LeaveRecursiveCall();
        return r;
    }

    PyObject *object_body(PyObject *self, PyTypeObject *tp, Layout &L, PyObject *key) {
        Parts P;
        if (!read_parts(self, L, copy_protocol, P))
            return nullptr;
        Small<Ref_, 12> ctor_copies;
        Small<PyObject *, 12> vals;
        for (Ref_ &v : P.ctor_values) {
            PyObject *c = value(v.p, true);
            if (!c)
                return nullptr;
            ctor_copies.push_back(Ref_(c));
            vals.push_back(c);
        }
        PyObject *cn = nullptr, *sn = nullptr;
        if (!names_for(L, P.ctor, P.state, &cn, &sn))
            return nullptr;
        Ref_ ctor_names(cn), state_names(sn);
        // a cycle back to self may have been copied meanwhile (through a constructor value)
        if (PyObject *hit = PyDict_GetItemWithError(memo, key))
            return Py_NewRef(hit);
        Ref_ obj(construct(tp, L, ctor_names.p, vals.data(), Py_ssize_t(vals.size())));
        if (!obj)
            return nullptr;
        if (PyDict_SetItem(memo, key, obj.p) != 0 || keep_alive(self) != 0)
            return nullptr;
        for (size_t k = 0; k < P.state.size(); ++k) {
            const Entry &e = L.entries[size_t(P.state[k])];
            Ref_ c(e.slot ? generic(P.state_values[k].p) : value(P.state_values[k].p, true));
            if (!c || set_entry_value(obj.p, e, c.p) != 0)
                return nullptr;
        }
        if (P.dict) {
            Ref_ dc(generic(P.dict.p));
            if (!dc || update_dict(obj.p, dc.p) != 0)
                return nullptr;
        }
        return obj.release();
    }
};

PyObject *meth_deepcopy(PyObject *self, PyObject *memo) {
    Ref_ own;
    if (memo == Py_None) {
        own = Ref_(PyDict_New());
        if (!own)
            return nullptr;
        memo = own.p;
    }
    if (!PyDict_Check(memo)) {
        PyErr_Format(PyExc_TypeError, "__deepcopy__: memo must be a dict, got %s",
                     Py_TYPE(memo)->tp_name);
        return nullptr;
    }
    std::shared_ptr<Layout> L = layout_of(Py_TYPE(self));
    if (!L)
        return nullptr;
    if (!L->fast_copy()) {
        if (!L->constructible && !L->user_reduce)
            return raise_not_constructible(Py_TYPE(self));
        return generic_copy(self, memo);
    }
    DeepCopier dc{memo};
    return dc.object(self);
}

// ---- introspection for tests ------------------------------------------------------------------

PyObject *fn_vector_fields(PyObject *, PyObject *) {
    size_t fields = 0, exports = 0;
    py::vector_field_stats(&fields, &exports);
    return Py_BuildValue("{s:n,s:n}", "vector", Py_ssize_t(fields), "exports",
                         Py_ssize_t(exports));
}

PyObject *fn_clear_layouts(PyObject *, PyObject *) {
    LayoutMap old;
    {
        MaybeLock lock(g_layouts_mutex);
        old.swap(g_layouts);
    }
#if !defined(Py_GIL_DISABLED)
    g_last.reset();
#endif
    Py_RETURN_NONE;
}

PyMethodDef g_reduce_ex_def = {"__reduce_ex__", reinterpret_cast<PyCFunction>(meth_reduce_ex),
                               METH_O, "Reduce for pickle and copy: (tether._core._rebuild, "
                                       "(cls, ctor_names, *ctor_values), state)."};
PyMethodDef g_setstate_def = {"__setstate__", reinterpret_cast<PyCFunction>(meth_setstate),
                              METH_O, "Restore fields, slots and __dict__ from a state."};
PyMethodDef g_copy_def = {"__copy__", reinterpret_cast<PyCFunction>(meth_copy), METH_NOARGS,
                          "A new C++ object whose fields hold the same values."};
PyMethodDef g_deepcopy_def = {"__deepcopy__", reinterpret_cast<PyCFunction>(meth_deepcopy),
                              METH_O, "A deep copy of the graph, sharing kept (memo)."};
PyMethodDef g_module_defs[] = {
    {"_rebuild", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(fn_rebuild)),
     METH_FASTCALL,
     "_rebuild(cls, names, *values): a new cls made by its bound C++ __init__ with "
     "names=values (pickle's constructor for tether objects)."},
    {"_reduce_vector_fields", fn_vector_fields, METH_NOARGS,
     "Numeric std::vector fields registered by def_field, and buffers of them alive."},
    {"_reduce_clear_layouts", fn_clear_layouts, METH_NOARGS,
     "Drop the reducer's per-type layouts (tests)."},
    {nullptr, nullptr, 0, nullptr}};

} // namespace

/// Registers _rebuild on tether._core and the C++ methods on tether.Object. Called at the end
/// of NB_MODULE(_core): tether.Object exists.
void bind_reduce(nb::module_ &m) {
    g_object_type = py_type<Object>();
    g_empty_tuple = PyTuple_New(0);
    g_str_dict = PyUnicode_InternFromString("__dict__");
    if (!g_empty_tuple || !g_str_dict)
        throw nb::python_error();
    if (PyModule_AddFunctions(m.ptr(), g_module_defs) != 0)
        throw nb::python_error();
    g_rebuild = PyObject_GetAttrString(m.ptr(), "_rebuild"); // kept for the process
    if (!g_rebuild)
        throw nb::python_error();
    PyTypeObject *obj = object_type();
    PyMethodDef *defs[] = {&g_reduce_ex_def, &g_setstate_def, &g_copy_def, &g_deepcopy_def};
    for (PyMethodDef *d : defs) {
        PyObject *descr = PyDescr_NewMethod(obj, d);
        if (!descr)
            throw nb::python_error();
        // stored as _core attributes; tether._pickle.install() puts them on tether.Object
        std::string name = std::string("_object") + d->ml_name;
        int rc = PyModule_AddObject(m.ptr(), name.c_str(), descr);
        if (rc != 0) {
            Py_DECREF(descr);
            throw nb::python_error();
        }
    }
}

} // namespace tether
