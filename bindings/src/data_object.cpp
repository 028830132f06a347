// SPDX-License-Identifier: Apache-2.0
// bindings/src/data_object.cpp: tether._data: DataObject, the C++ storage behind @tether.dataclass
//
// A @tether.dataclass type is a Python subclass of DataObject. Each instance is one C++
// DataObject (made with make_object, so it has a header and is tied to its one wrapper)
// holding one Value per declared field. pkg/tether/_datatype.py reads the annotations and
// asks slot() below for one getset descriptor per field; the descriptor knows the field's
// index and what it accepts, and checks every assignment.
//
// Python objects kept in C++ (fields of no C++ kind, e.g. `tags: list[str]`) are owned
// references that must be released with the GIL: ~DataObject takes it when it runs on a
// thread without it, and leaks them once the interpreter is finalizing.
#include <tether/nanobind.h>

#include <tether/compat.h>

#include <atomic>
#include <cstring>
#include <new>
#include <string>
#include <variant>
#include <vector>

namespace nb = nanobind;
using namespace nb::literals;
using tether::Object;
using tether::Ref;

namespace {

/// A strong reference to a Python object, owned by a Value. Released under the GIL only.
struct PyRef {
    PyObject *ptr;
};

using Value = std::variant<std::monostate, int64_t, double, bool, std::string, Ref<Object>, PyRef>;

/// What a field stores. `Any` keeps the Python object itself.
enum class Kind : int { Any = 0, Int = 1, Float = 2, Bool = 3, Str = 4, Object = 5 };

/// Empties `v`, dropping the Python reference a PyRef in it owns (the caller may run Python).
void release(Value &v) noexcept {
    if (auto *r = std::get_if<PyRef>(&v)) {
        PyObject *p = r->ptr;
        v = std::monostate{};
        Py_DECREF(p);
    } else {
        v = std::monostate{};
    }
}

struct DataObject : Object {
    std::vector<Value> slots;

    explicit DataObject(size_t n) : slots(n) {}
    DataObject(const DataObject &) = delete;
    DataObject &operator=(const DataObject &) = delete;

    ~DataObject() override {
        bool any = false;
        for (const Value &v : slots)
            any = any || std::holds_alternative<PyRef>(v);
        if (!any || !tether::py::compat::interpreter_accepts_threads())
            return; // nothing to release, or too late to enter Python: leak them
        PyGILState_STATE gil = PyGILState_Ensure(); // re-entrant when we already hold it
        for (Value &v : slots)
            if (std::holds_alternative<PyRef>(v))
                release(v); // (the Refs go with the vector, as before)
        PyGILState_Release(gil);
    }
};

/// One field of one @tether.dataclass: what its descriptor reads, writes and accepts.
/// Owned by the descriptor's PyGetSetDef closure and never freed (a class's descriptors
/// may outlive it; this is a few dozen bytes per declared field).
struct Slot {
    size_t index;
    Kind kind;
    bool nullable;
    PyObject *check; ///< Object: the required tether type; Any: isinstance() target or null
    std::string owner, name, expected;
    PyGetSetDef def;
};

DataObject *data_of(PyObject *self) noexcept {
    // The descriptor checked that self is an instance of the class it was made for, and
    // every such class derives from DataObject.
    return static_cast<DataObject *>(tether::py::object_of(self));
}

PyObject *to_python(const Value &v) noexcept {
    switch (v.index()) {
        case 1: return PyLong_FromLongLong((long long) std::get<int64_t>(v));
        case 2: return PyFloat_FromDouble(std::get<double>(v));
        case 3: return PyBool_FromLong(std::get<bool>(v));
        case 4: {
            const std::string &s = std::get<std::string>(v);
            return PyUnicode_FromStringAndSize(s.data(), (Py_ssize_t) s.size());
        }
        case 5: return tether::py::wrap(std::get<Ref<Object>>(v).get(), tether::py_type<Object>());
        case 6: return Py_NewRef(std::get<PyRef>(v).ptr);
        default: Py_RETURN_NONE;
    }
}

PyObject *no_such_field(const Slot *s) noexcept {
    return PyErr_Format(PyExc_AttributeError, "%s.%s: this object has no such field",
                        s->owner.c_str(), s->name.c_str());
}

PyObject *slot_get(PyObject *self, void *closure) noexcept {
    auto *s = static_cast<Slot *>(closure);
    PyObject *result = nullptr;
    bool unusable = false, missing = false;
    {
        // Free-threaded builds: a field's read and write are atomic per object, and
        // tether.move() takes the same lock: the object stays during the read.
        tether::py::WrapperLock lock(self);
        DataObject *d = data_of(self);
        if (!d)
            unusable = true;
        else if (s->index >= d->slots.size())
            missing = true;
        else
            result = to_python(d->slots[s->index]);
    }
    if (unusable)
        return tether::py::raise_unusable(self);
    if (missing)
        return no_such_field(s);
    return result;
}

bool wrong_type(const Slot *s, PyObject *value) noexcept {
    PyErr_Format(PyExc_TypeError, "%s.%s: expected %s, got %s", s->owner.c_str(), s->name.c_str(),
                 s->expected.c_str(), Py_TYPE(value)->tp_name);
    return false;
}

/// Converts `value` to what slot `s` stores. Sets a Python error and returns false if it
/// does not fit.
bool from_python(const Slot *s, PyObject *value, Value &out) noexcept {
    if (value == Py_None && s->nullable) {
        out = std::monostate{};
        return true;
    }
    switch (s->kind) {
        case Kind::Int: {
            if (PyBool_Check(value) || !PyLong_Check(value))
                return wrong_type(s, value);
            int overflow = 0;
            long long v = PyLong_AsLongLongAndOverflow(value, &overflow);
            if (overflow) // beyond int64: keep the Python int itself
                out = PyRef{Py_NewRef(value)};
            else
                out = (int64_t) v;
            return !PyErr_Occurred();
        }
        case Kind::Float:
            if (PyBool_Check(value) || !(PyFloat_Check(value) || PyLong_Check(value)))
                return wrong_type(s, value);
            out = PyFloat_AsDouble(value);
            return !PyErr_Occurred();
        case Kind::Bool:
            if (!PyBool_Check(value))
                return wrong_type(s, value);
            out = value == Py_True;
            return true;
        case Kind::Str: {
            if (!PyUnicode_Check(value))
                return wrong_type(s, value);
            Py_ssize_t n = 0;
            const char *p = PyUnicode_AsUTF8AndSize(value, &n);
            if (!p)
                return false;
            try {
                out = std::string(p, (size_t) n);
            } catch (const std::bad_alloc &) { // (this function is noexcept)
                PyErr_NoMemory();
                return false;
            }
            return true;
        }
        case Kind::Object: {
            if (!PyObject_TypeCheck(value, reinterpret_cast<PyTypeObject *>(s->check)))
                return wrong_type(s, value);
            Object *o = tether::py::object_of(value);
            if (!o) {
                tether::py::raise_unusable(value);
                return false;
            }
            out = Ref<Object>(o);
            return true;
        }
        default:
            if (s->check) {
                int ok = PyObject_IsInstance(value, s->check);
                if (ok < 0)
                    return false;
                if (ok == 0)
                    return wrong_type(s, value);
            }
            out = PyRef{Py_NewRef(value)};
            return true;
    }
}

/// Makes the C++ object of `self` (an instance of a DataObject subclass) with the number of
/// slots its class declares, and ties the two. Sets a Python error and returns false on
/// failure, including when self is already initialized.
/// The interned name "__tether_slot_count__" (borrowed; the cache holds it for good), or null
/// with MemoryError set. Not a function-local static initialised once: a first call that ran
/// out of memory would leave it null for the life of the process (every later construction
/// failing with SystemError); this one tries again on the next call.
PyObject *slot_count_name() noexcept {
    static std::atomic<PyObject *> cached{nullptr};
    PyObject *name = cached.load(std::memory_order_acquire);
    if (name)
        return name;
    name = PyUnicode_InternFromString("__tether_slot_count__");
    if (!name)
        return nullptr;
    PyObject *expected = nullptr;
    if (!cached.compare_exchange_strong(expected, name, std::memory_order_acq_rel)) {
        Py_DECREF(name); // another thread cached it first (the same interned string)
        return expected;
    }
    return name;
}

bool make_data(PyObject *self) noexcept {
    PyObject *name = slot_count_name();
    if (!name)
        return false;
    // Borrowed, served by the type cache, and no AttributeError to raise and clear when
    // absent (DataObject itself has no slots).
    PyObject *n = tether::py::compat::type_lookup(Py_TYPE(self), name);
    Py_ssize_t count = n ? PyLong_AsSsize_t(n) : 0;
    if (count < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "__tether_slot_count__ must be >= 0");
        return false;
    }
    Ref<DataObject> obj;
    try {
        obj = tether::detail::make_object_impl<DataObject>(true, (size_t) count);
    } catch (const std::bad_alloc &) {
        PyErr_NoMemory();
        return false;
    } catch (const std::exception &e) { // std::length_error for an absurd count
        PyErr_Format(PyExc_ValueError, "%s: cannot make %zd field slots (%s)",
                     Py_TYPE(self)->tp_name, count, e.what());
        return false;
    }
    return tether::py::bind_new(self, obj.release());
}

/// A field write on a wrapper no __init__ has tied yet (the generated dataclass __init__
/// setting its first field) makes the C++ object first. Moved-from wrappers stay unusable.
DataObject *data_for_write(PyObject *self) noexcept {
    if (DataObject *d = data_of(self))
        return d;
    auto *w = reinterpret_cast<tether::py::Wrapper *>(self);
    if (w->state.state != tether::py::state_uninitialized) {
        tether::py::raise_unusable(self);
        return nullptr;
    }
    return make_data(self) ? data_of(self) : nullptr;
}

int slot_set(PyObject *self, PyObject *value, void *closure) noexcept {
    auto *s = static_cast<Slot *>(closure);
    if (!value) {
        PyErr_Format(PyExc_AttributeError, "cannot delete field %s.%s", s->owner.c_str(),
                     s->name.c_str());
        return -1;
    }
    if (!data_for_write(self))
        return -1;
    Value fresh;
    if (!from_python(s, value, fresh)) {
        release(fresh);
        return -1;
    }
    // Swap first, release the old value last: its release may run arbitrary Python code
    // (a __del__, or a wrapper dying) that reads this very field. The object is looked up
    // only now: converting the value may have run Python code (__float__, __index__,
    // __instancecheck__) that moved it into C++, where it may already be gone.
    Value old;
    bool unusable = false, missing = false;
    {
        tether::py::WrapperLock lock(self);
        DataObject *d = data_of(self);
        if (!d) {
            unusable = true;
        } else if (s->index >= d->slots.size()) {
            missing = true;
        } else {
            old = std::move(d->slots[s->index]);
            d->slots[s->index] = std::move(fresh);
        }
    }
    if (unusable || missing) {
        release(fresh); // (a Ref<Object> in it too)
        if (unusable)
            tether::py::raise_unusable(self);
        else
            no_such_field(s);
        return -1;
    }
    release(old);
    return 0;
}

/// _data.slot(): the getset descriptor of field `name` (index `index`) of class `cls`.
nb::object make_slot(nb::type_object cls, const std::string &name, size_t index, int kind,
                     bool nullable, nb::object check, const std::string &expected,
                     const std::string &doc) {
    if (kind < 0 || kind > (int) Kind::Object)
        throw nb::value_error("tether._data.slot: unknown kind");
    PyTypeObject *tp = reinterpret_cast<PyTypeObject *>(cls.ptr());
    if (!PyType_IsSubtype(tp, tether::py_type<DataObject>()))
        throw nb::type_error("tether._data.slot: cls must derive from DataObject");
    if ((Kind) kind == Kind::Object &&
        (!PyType_Check(check.ptr()) ||
         !PyType_IsSubtype(reinterpret_cast<PyTypeObject *>(check.ptr()), tether::py_type<Object>())))
        throw nb::type_error("tether._data.slot: an object field needs a tether type to check");
    auto *s = new Slot{index, (Kind) kind, nullable, nullptr, nb::str(cls.attr("__qualname__")).c_str(),
                       name, expected, {}};
    if (!check.is_none())
        s->check = check.release().ptr(); // owned by the slot, like the slot itself
    s->def = PyGetSetDef{s->name.c_str(), &slot_get, &slot_set, nullptr, s};
    if (!doc.empty()) {
        char *d = new char[doc.size() + 1];
        std::memcpy(d, doc.c_str(), doc.size() + 1);
        s->def.doc = d;
    }
    nb::object descr = nb::steal(PyDescr_NewGetSet(tp, &s->def));
    if (!descr.is_valid())
        throw nb::python_error();
    return descr;
}

/// DataObject.__init__(self): makes the C++ object with as many slots as type(self)
/// declares (its __tether_slot_count__) and ties it to self.
void data_init(nb::handle self) {
    PyTypeObject *tp = tether::py_type<DataObject>();
    if (!PyObject_TypeCheck(self.ptr(), tp))
        throw nb::type_error("DataObject.__init__: self is not a DataObject");
    if (!make_data(self.ptr()))
        throw nb::python_error();
}

/// A tether type whose constructor needs an argument that is no field: pickle must refuse it.
struct NoDefault : Object {
    int64_t value;
    explicit NoDefault(int64_t v) : value(v) {}
};

} // namespace

NB_MODULE(_data, m) {
    m.doc() = "tether._data: C++ storage for @tether.dataclass types (see pkg/tether/_datatype.py)";
    tether::init_module();

    tether::class_<DataObject, Object>(
        m, "DataObject",
        "Base of every @tether.dataclass type: one C++ object holding one value per field.")
        .def("__init__", &data_init,
             "Make the C++ object (with the slots type(self) declares) and tie it to self.")
        // What tether::init would record for a no-argument constructor (see nanobind.h):
        // pickle rebuilds a DataObject with no arguments, then sets its fields.
        .attr("__tether_init__") = nb::make_tuple(nb::tuple());

    tether::class_<NoDefault, Object>(
        m, "_NoDefault",
        "A tether type whose constructor needs an argument no field gives (tests pickle's "
        "refusal).")
        .def(tether::init<int64_t>(), "seed"_a)
        .def_field("value", &NoDefault::value, "The int payload.");

    m.def("slot", &make_slot, "cls"_a, "name"_a, "index"_a, "kind"_a, "nullable"_a,
          "check"_a.none(), "expected"_a, "doc"_a,
          "The descriptor of one field of a DataObject subclass: stored at `index`, of "
          "`kind` (0 any, 1 int, 2 float, 3 bool, 4 str, 5 tether object), None allowed if "
          "`nullable`, checked with isinstance(value, check) for kinds 0 and 5.");
    m.def("is_initialized",
          [](nb::handle obj) {
              return PyObject_TypeCheck(obj.ptr(), tether::py_type<Object>()) &&
                     tether::py::object_of(obj.ptr()) != nullptr;
          },
          "obj"_a, "True once obj's __init__ has tied it to a C++ object (and before tether.move).");
    m.def("slot_count", [](const DataObject &d) { return d.slots.size(); }, "obj"_a,
          "How many field slots obj's C++ object has.");
}
