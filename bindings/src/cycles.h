// SPDX-License-Identifier: Apache-2.0
// bindings/src/cycles.h: what type_slots.cpp needs from cycles.cpp (the GC half of tether types)
#pragma once

#include <tether/python.h>

namespace tether::py::cycles {

/// install_type: records `type` as the Python type of C++ type `type_index`, linked to the
/// traced fields of its nearest bound base (which a derived bound type inherits).
void on_install_type(PyTypeObject *type, uint32_t type_index) noexcept;

/// True if `type`'s instances are traversed by tether (a bound type with traced fields, or
/// one deriving from such a type): its wrappers are GC-tracked, and laid out as any other.
bool traced(PyTypeObject *type) noexcept;

} // namespace tether::py::cycles
