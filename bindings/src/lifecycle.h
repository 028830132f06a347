// SPDX-License-Identifier: Apache-2.0
// bindings/src/lifecycle.h: what lifecycle.cpp and type_slots.cpp share
#pragma once

#include <tether/python.h>

namespace tether::py {

/// A fresh, uninitialized wrapper of `type` (any tether type or Python subclass of one).
/// type_slots.cpp: it is tp_new.
PyObject *alloc_wrapper(PyTypeObject *type) noexcept;

/// E2 hook (lifecycle.cpp): drop the caller's reference, the last besides the wrapper's.
void release_shared(Object *obj) noexcept;

/// T6 (lifecycle.cpp): the tp_dealloc of every bound tether type.
void tether_dealloc(PyObject *self) noexcept;

} // namespace tether::py
