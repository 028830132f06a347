// SPDX-License-Identifier: Apache-2.0
// bindings/include/tether/compat.h: the CPython details tether needs that are private or version-specific
//
// Each helper names the public API that replaces it where one exists. Nothing else in
// bindings/ reaches into CPython's internals.
#pragma once

#include <Python.h>

namespace tether::py::compat {

/// True when the calling thread may run Python code right now (holds the GIL; on
/// free-threaded builds: has an attached thread state). Unlike PyGILState_Check(), never
/// answers "yes" for a thread without a thread state when subinterpreters exist.
/// Public API: PyThreadState_GetUnchecked() (3.13+); _PyThreadState_UncheckedGet() before,
/// which on 3.10/3.11 names the GIL holder process-wide rather than the calling thread.
inline bool thread_can_run_python() noexcept {
#if PY_VERSION_HEX >= 0x030D0000
    return PyThreadState_GetUnchecked() != nullptr;
#elif PY_VERSION_HEX >= 0x030C0000
    return _PyThreadState_UncheckedGet() != nullptr;
#else
    PyThreadState *current = _PyThreadState_UncheckedGet();
    return current != nullptr && current == PyGILState_GetThisThreadState();
#endif
}

/// The interpreter is shutting down (no new thread may attach).
/// Public API: Py_IsFinalizing() (3.13+); _Py_IsFinalizing() before.
inline bool is_finalizing() noexcept {
#if PY_VERSION_HEX >= 0x030D0000
    return Py_IsFinalizing() != 0;
#else
    return _Py_IsFinalizing() != 0;
#endif
}

/// Another thread may still attach to the interpreter (PyGILState_Ensure): false before
/// Py_Initialize, while Py_FinalizeEx runs and after it (attaching then could hang or end the
/// calling thread).
inline bool interpreter_accepts_threads() noexcept {
    return Py_IsInitialized() && !is_finalizing();
}

/// `name` looked up along type's MRO without descriptors or the metatype (borrowed or null).
/// Private: _PyType_Lookup (no public equivalent with the same semantics; the type
/// attribute cache makes it cheap).
inline PyObject *type_lookup(PyTypeObject *type, PyObject *name) noexcept {
    return _PyType_Lookup(type, name);
}

/// A new reference to list[i], or null (no exception set) when i is out of range; safe while
/// another thread resizes the list. Public API: PyList_GetItemRef (3.13+); before it, the GIL
/// makes a borrowed item and its incref one step.
inline PyObject *list_item_ref(PyObject *list, Py_ssize_t i) noexcept {
#if PY_VERSION_HEX >= 0x030D0000
    PyObject *r = PyList_GetItemRef(list, i);
#else
    PyObject *r = Py_XNewRef(PyList_GetItem(list, i));
#endif
    if (!r)
        PyErr_Clear();
    return r;
}

#if defined(Py_GIL_DISABLED)
/// Mark `op` so that try_incref() from another thread is exact (its owner thread then merges
/// refcounts before freeing it). Public API: PyUnstable_EnableTryIncRef (3.14+).
inline void enable_try_incref(PyObject *op) noexcept {
#if PY_VERSION_HEX >= 0x030E0000
    PyUnstable_EnableTryIncRef(op);
#else
    Py_ssize_t shared = __atomic_load_n(&op->ob_ref_shared, __ATOMIC_RELAXED);
    while ((shared & 3) == 0 && // unowned, not yet marked (other flag states are fine)
           !__atomic_compare_exchange_n(&op->ob_ref_shared, &shared,
                                        shared | _Py_REF_MAYBE_WEAKREF, true,
                                        __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
#endif
}

/// A new reference to `op`, unless its refcount has reached zero (its dealloc runs or is
/// about to). Public API: PyUnstable_TryIncRef (3.14+), same protocol as below on 3.13.
inline bool try_incref(PyObject *op) noexcept {
#if PY_VERSION_HEX >= 0x030E0000
    return PyUnstable_TryIncRef(op) != 0;
#else
    uint32_t local = __atomic_load_n(&op->ob_ref_local, __ATOMIC_RELAXED);
    if (local == _Py_IMMORTAL_REFCNT_LOCAL)
        return true;
    if (__atomic_load_n(&op->ob_tid, __ATOMIC_RELAXED) == _Py_ThreadId()) {
        // The owner thread: only it could bring the local count to zero, and it is here.
        __atomic_store_n(&op->ob_ref_local, local + 1, __ATOMIC_RELAXED);
        return true;
    }
    Py_ssize_t shared = __atomic_load_n(&op->ob_ref_shared, __ATOMIC_RELAXED);
    for (;;) {
        if (shared == 0 || shared == _Py_REF_MERGED)
            return false;
        if (__atomic_compare_exchange_n(&op->ob_ref_shared, &shared,
                                        shared + ((Py_ssize_t) 1 << _Py_REF_SHARED_SHIFT), true,
                                        __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
            return true;
    }
#endif
}
#endif

} // namespace tether::py::compat
