// SPDX-License-Identifier: Apache-2.0
// bindings/include/tether/module_init.h: a module reaches tether's runtime through tether._core, not the loader
//
// tether_add_module() compiles this header into every downstream module, once, through the
// generated init file (cmake/tether_module_init.cpp.in). It makes the module relocatable:
//
//   * Jump slots. For every function libtether and libtether_python export (the list
//     runtime_imports.h, generated from the libraries when tether is built), this file
//     defines a hidden symbol of the same mangled name that jumps through a slot. The
//     module's own code calls those, so the linker records no DT_NEEDED entry, no RUNPATH
//     and no undefined tether symbol: the module loads in any environment, in any order.
//   * Binding. The module's exported PyInit_<name> (in the generated init file) first
//     imports tether._core, which loads the one libtether of the installed tether package
//     (next to it, through $ORIGIN), takes its capsule tether._core._C_API
//     (tether/runtime_api.h), checks that both use the same nanobind type registry, and
//     fills the slots. Only then does it run the module's NB_MODULE body, renamed by
//     tether_add_module with -DPyInit_<name>=_tether_PyInit_<name>.
//
// Failures raise ImportError naming the module and the fix; nothing of the module runs
// before its slots are filled. Supported: ELF on x86-64 (tested) and AArch64.
#pragma once

#include <Python.h>
#include <tether/nanobind_layout.h> // also: compile-time layout check of this module's nanobind
#include <tether/runtime_api.h>
#include <tether/runtime_imports.h> // generated when tether is built (cmake/tether_imports.cmake)

#include <cstring>

// ---- jump slots -------------------------------------------------------------------------
extern "C" __attribute__((visibility("hidden"))) void *tether_import_slots[TETHER_IMPORT_COUNT];
void *tether_import_slots[TETHER_IMPORT_COUNT] = {};

#if defined(__CET__)
#  define TETHER_ENDBR "endbr64\n"
#else
#  define TETHER_ENDBR ""
#endif

#if defined(__x86_64__) && defined(__ELF__)
#  define TETHER_IMPORT(index, symbol)                                                       \
    __asm__(".pushsection .text." #symbol ",\"ax\",@progbits\n"                               \
            ".globl " #symbol "\n.hidden " #symbol "\n.type " #symbol ",@function\n"         \
            ".p2align 4\n" #symbol ":\n" TETHER_ENDBR                                         \
            "jmp *tether_import_slots+8*" #index "(%rip)\n"                                  \
            ".size " #symbol ",.-" #symbol "\n.popsection\n");
#elif defined(__aarch64__) && defined(__ELF__)
#  define TETHER_IMPORT(index, symbol)                                                       \
    __asm__(".pushsection .text." #symbol ",\"ax\",@progbits\n"                               \
            ".globl " #symbol "\n.hidden " #symbol "\n.type " #symbol ",%function\n"         \
            ".p2align 3\n" #symbol ":\n"                                                      \
            "adrp x16, tether_import_slots+8*" #index "\n"                                   \
            "ldr x16, [x16, :lo12:tether_import_slots+8*" #index "]\n"                       \
            "br x16\n"                                                                        \
            ".size " #symbol ",.-" #symbol "\n.popsection\n");
#else
#  error "tether/module_init.h: jump slots exist for ELF x86-64 and AArch64 only; link " \
         "tether::python directly (tether_link) on this platform"
#endif
TETHER_IMPORTS(TETHER_IMPORT)
#undef TETHER_IMPORT

namespace tether::module_init {

#define TETHER_IMPORT(index, symbol) #symbol,
static const char *const import_names[TETHER_IMPORT_COUNT] = {TETHER_IMPORTS(TETHER_IMPORT)};
#undef TETHER_IMPORT

/// ImportError "<module>: <what>", with the pending exception's text appended if any.
static void raise_import_error(const char *module, const char *what) noexcept {
#if PY_VERSION_HEX >= 0x030C0000
    PyObject *value = PyErr_GetRaisedException();
#else
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
#endif
    PyObject *detail = value ? PyObject_Str(value) : nullptr;
    const char *cause = detail ? PyUnicode_AsUTF8(detail) : nullptr;
    if (!cause)
        PyErr_Clear();
    PyErr_Format(PyExc_ImportError, "%s: %s%s%s%s", module, what, cause ? " (" : "",
                 cause ? cause : "", cause ? ")" : "");
    Py_XDECREF(detail);
    Py_XDECREF(value);
}

/// Imports tether._core and fills the jump slots. False with ImportError set on failure.
static bool bind_runtime(const char *module) noexcept {
    auto *api = static_cast<const tether_runtime_api *>(
        PyCapsule_Import(TETHER_RUNTIME_API_CAPSULE, 0));
    if (!api) {
        raise_import_error(module,
                           "this module binds tether types and needs the tether package, but "
                           "`import tether._core` failed; install tether in this environment "
                           "(pip install tether)");
        return false;
    }
    if (api->size < sizeof(tether_runtime_api) ||
        api->api_version != TETHER_RUNTIME_API_VERSION) {
        PyErr_Format(PyExc_ImportError,
                     "%s: the installed tether exports runtime API %u, this module was built "
                     "for %u; rebuild it against the installed tether",
                     module, api->api_version, (unsigned) TETHER_RUNTIME_API_VERSION);
        return false;
    }
    if (std::strcmp(api->nanobind_key, TETHER_NB_INTERNALS_KEY) != 0) {
        PyErr_Format(PyExc_ImportError,
                     "%s: this module was compiled with nanobind %s (internals '%s'), but the "
                     "installed tether was built with nanobind %s (internals '%s'); the two do "
                     "not share nanobind's type registry, so this module could not see "
                     "tether.Object. Rebuild it with the nanobind tether was built with: "
                     "pip install nanobind==%s",
                     module, TETHER_NB_VERSION_STR, TETHER_NB_INTERNALS_KEY,
                     api->nanobind_version, api->nanobind_key, api->nanobind_version);
        return false;
    }
    for (int i = 0; i < TETHER_IMPORT_COUNT; ++i) {
        void *address = api->lookup(import_names[i]);
        if (!address) {
            PyErr_Format(PyExc_ImportError,
                         "%s: the installed tether runtime (%s) has no function %s; rebuild "
                         "this module against the installed tether",
                         module, api->runtime_path, import_names[i]);
            return false;
        }
        tether_import_slots[i] = address;
    }
    return true;
}

} // namespace tether::module_init
