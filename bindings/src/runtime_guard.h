// SPDX-License-Identifier: Apache-2.0
// bindings/src/runtime_guard.h: one tether runtime per process (private to libtether_python)
#pragma once

namespace tether::py {
/// Registers this copy of libtether_python as the process's tether runtime, or raises
/// ImportError (and returns -1) if another copy already is. Called first by initialize().
int claim_runtime() noexcept;
} // namespace tether::py
