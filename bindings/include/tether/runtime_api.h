// SPDX-License-Identifier: Apache-2.0
// bindings/include/tether/runtime_api.h: the table through which downstream modules reach tether's runtime
//
// tether._core exports one capsule, `tether._core._C_API`, pointing to a tether_runtime_api
// (as NumPy exports its C API). A module built with tether_add_module() does not link
// libtether or libtether_python: every call it makes into them goes through a jump slot
// that the module fills from this table when it is imported (tether/module_init.h). So the
// module has no RUNPATH and no DT_NEEDED entry for tether, loads in any environment, and
// always uses the one runtime that `import tether` loaded.
//
// Plain C: the struct only grows (new members go at the end, `size` tells which exist).
#pragma once

#include <stdint.h>

#define TETHER_RUNTIME_API_CAPSULE "tether._core._C_API"
/// Bumped when a member changes meaning; adding members at the end does not bump it.
#define TETHER_RUNTIME_API_VERSION 1

#ifdef __cplusplus
extern "C" {
#endif

struct tether_runtime_api {
    uint32_t size;         ///< sizeof(struct tether_runtime_api) in tether._core
    uint32_t api_version;  ///< TETHER_RUNTIME_API_VERSION of tether._core
    uint32_t abi_version;  ///< tether::abi_version of the loaded libtether
    uint32_t reserved;
    /// nanobind version tether._core was compiled with ("3.1.0").
    const char *nanobind_version;
    /// nanobind's internals key of tether._core (see tether/nanobind_layout.h): modules whose
    /// key differs live in another nanobind type registry and cannot see tether.Object.
    const char *nanobind_key;
    /// The file of the libtether_python this process uses.
    const char *runtime_path;
    /// Address of an exported libtether / libtether_python function, by mangled name;
    /// nullptr if there is none.
    void *(*lookup)(const char *symbol);
};

#ifdef __cplusplus
}
#endif
