// SPDX-License-Identifier: Apache-2.0
// bindings/src/wrapper_internal.h: declarations shared by wrapper.cpp and type_slots.cpp
#pragma once

#include <tether/python.h>

#include <cstring>

namespace tether::py {

inline Counters &counters() noexcept { return detail::counters(); }

/// A fresh, uninitialized wrapper of `type` (any tether type or Python subclass of one).
PyObject *alloc_wrapper(PyTypeObject *type) noexcept;
/// Installs tether_finalize on a Python subclass the first time one of its instances is made.
void adopt_python_subclass(PyTypeObject *type) noexcept;
/// Runs a Python subclass's __del__, if it defines one.
void call_user_finalizer(PyObject *self) noexcept;
void clear_finalized(PyObject *self) noexcept;

void tether_dealloc(PyObject *self) noexcept;
void tether_finalize(PyObject *self) noexcept;
bool release_parked(Object *obj) noexcept;

} // namespace tether::py
