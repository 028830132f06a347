// SPDX-License-Identifier: Apache-2.0
// bindings/src/runtime_api.cpp: tether._core._C_API, the capsule downstream modules bind to
//
// See tether/runtime_api.h for the contract and tether/module_init.h for the other side.
// Compiled into tether._core with nanobind's src/ on the include path (for the layout check).
#include "runtime_api_export.h"

#include <tether/nanobind_layout.h>
#include <tether/runtime_api.h>

#include <dlfcn.h>

namespace tether::py {
namespace {

void *g_runtime = nullptr; // dlopen handle of the loaded libtether_python (RTLD_NOLOAD)

void *lookup(const char *symbol) {
    // A handle's scope is the library and its dependencies: libtether_python, then libtether.
    return g_runtime ? dlsym(g_runtime, symbol) : nullptr;
}

} // namespace

int export_runtime_api(PyObject *module) noexcept {
    static tether_runtime_api api{};
    if (!g_runtime) {
        Dl_info info{};
        if (!dladdr(reinterpret_cast<void *>(&initialize), &info) || !info.dli_fname ||
            !(g_runtime = dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD))) {
            PyErr_Format(PyExc_ImportError,
                         "tether._core: cannot find the loaded libtether_python (%s)",
                         dlerror());
            return -1;
        }
        api.size = sizeof(api);
        api.api_version = TETHER_RUNTIME_API_VERSION;
        api.abi_version = abi_version;
        api.nanobind_version = TETHER_NB_VERSION_STR;
        api.nanobind_key = TETHER_NB_INTERNALS_KEY;
        api.runtime_path = info.dli_fname;
        api.lookup = &lookup;
    }
    PyObject *capsule = PyCapsule_New(&api, TETHER_RUNTIME_API_CAPSULE, nullptr);
    if (!capsule)
        return -1;
    if (PyModule_AddObject(module, "_C_API", capsule) != 0) { // steals only on success
        Py_DECREF(capsule);
        return -1;
    }
    return 0;
}

} // namespace tether::py
