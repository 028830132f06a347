// SPDX-License-Identifier: Apache-2.0
// bindings/src/runtime_api_export.h: tether._core's side of tether/runtime_api.h (private)
#pragma once

#include <tether/python.h>

namespace tether::py {
/// Adds `_C_API` (the tether_runtime_api capsule) to tether._core. -1 with an exception set
/// on failure.
int export_runtime_api(PyObject *module) noexcept;
} // namespace tether::py
