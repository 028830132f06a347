// SPDX-License-Identifier: Apache-2.0
// bindings/src/runtime_guard.h: one tether runtime per process (private to libtether_python)
#pragma once

#include <Python.h>

namespace tether::py {
/// Why tether refuses a subinterpreter (runtime_guard.cpp says more).
inline constexpr const char *subinterpreter_refused =
    "tether: cannot be imported in a subinterpreter (subinterpreters are not supported): a "
    "tether object has one wrapper, which lives in the main interpreter, and C++ threads enter "
    "Python through PyGILState_Ensure, which serves the main interpreter only. Import tether in "
    "the main interpreter.";

/// True when the calling thread runs a subinterpreter, which tether refuses. Inline:
/// tether._core checks it before anything else (also once the main interpreter claimed the
/// runtime), and claim_runtime() checks it too.
inline bool in_subinterpreter() noexcept {
    return PyInterpreterState_Get() != PyInterpreterState_Main();
}

/// Registers this copy of libtether_python as the process's tether runtime, or raises
/// ImportError (and returns -1) if another copy already is, or if the calling thread runs a
/// subinterpreter. Called first by initialize().
int claim_runtime() noexcept;
} // namespace tether::py
