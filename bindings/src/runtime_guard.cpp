// SPDX-License-Identifier: Apache-2.0
// bindings/src/runtime_guard.cpp: refuse a second copy of tether's runtime in one process
//
// tether's state (type table, counters, release hook, the move-token type) must exist once
// per process: objects of one copy are foreign to the other (`tether.move` refused, split
// counters). A second copy appears when a module carries its own libtether /
// libtether_python, e.g. after `auditwheel repair` grafted them into its wheel under new
// names, so the loader cannot tell them from the real ones. tether_add_module() modules link
// neither library (tether/module_init.h), so this only catches modules built otherwise.
//
// The first copy to initialize records itself in the interpreter's state dict under
// "tether.runtime"; a different copy that initializes later finds that entry and raises
// ImportError naming both files.
//
// The runtime also belongs to one interpreter: the main one. A wrapper lives in the
// interpreter that made it, and C++ threads enter Python with PyGILState_Ensure, which only
// knows the main interpreter (in a subinterpreter on 3.11, which shares one GIL, it waits for
// the GIL its own thread holds: a hang). nanobind refuses subinterpreters on 3.12+
// (Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED) before any of this runs; claim_runtime()
// and tether._core's init (in_subinterpreter(), runtime_guard.h) refuse them on every
// version, so 3.11 raises an ImportError too instead of hanging.
#include "runtime_guard.h"

#include <tether/python.h>

#include <dlfcn.h>

namespace tether::py {
namespace {

constexpr const char *key = "tether.runtime";

/// This copy's identity: its own address, and the files it was loaded from.
struct RuntimeId {
    const char *python_path; ///< this libtether_python
    const char *core_path;   ///< the libtether it resolved its imports to
};
RuntimeId g_id{};

const char *file_of(const void *address) noexcept {
    Dl_info info{};
    if (dladdr(const_cast<void *>(address), &info) && info.dli_fname)
        return info.dli_fname;
    return "(unknown file)";
}

} // namespace

int claim_runtime() noexcept {
    if (in_subinterpreter()) {
        PyErr_SetString(PyExc_ImportError, subinterpreter_refused);
        return -1;
    }
    if (!g_id.python_path) {
        g_id.python_path = file_of(reinterpret_cast<const void *>(&claim_runtime));
        g_id.core_path = file_of(reinterpret_cast<const void *>(&detail::register_type));
    }
    PyObject *dict = PyInterpreterState_GetDict(PyInterpreterState_Get()); // borrowed
    if (!dict) {
        PyErr_SetString(PyExc_ImportError, "tether: no interpreter state dict");
        return -1;
    }
    PyObject *name = PyUnicode_InternFromString(key);
    PyObject *mine = name ? PyCapsule_New(&g_id, key, nullptr) : nullptr;
    PyObject *first = mine ? PyDict_SetDefault(dict, name, mine) : nullptr; // borrowed
    Py_XDECREF(mine);
    Py_XDECREF(name);
    if (!first)
        return -1;
    auto *other = static_cast<RuntimeId *>(PyCapsule_GetPointer(first, key));
    if (!other)
        return -1;
    if (other == &g_id)
        return 0;
    PyErr_Format(PyExc_ImportError,
                 "tether: a second copy of tether's runtime was loaded (%s, with %s), but this "
                 "process already uses %s (with %s). Objects of one copy are foreign to the "
                 "other, so it is refused. Every module must use the libraries of the installed "
                 "tether package: build it with tether_add_module() from "
                 "`python -m tether --cmake-dir` (such modules carry no copy of libtether), and "
                 "do not let `auditwheel repair` graft libtether.so or libtether_python.so into "
                 "a wheel (--exclude 'libtether*.so'; see README, 'Shipping wheels').",
                 g_id.python_path, g_id.core_path, other->python_path, other->core_path);
    return -1;
}

} // namespace tether::py
