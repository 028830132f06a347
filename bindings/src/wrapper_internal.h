// SPDX-License-Identifier: Apache-2.0
// bindings/src/wrapper_internal.h: declarations shared by wrapper.cpp and type_slots.cpp
#pragma once

#include <tether/python.h>

#include <cstring>

namespace tether::py {

inline void count(Counter which, int64_t delta) noexcept { detail::add_count(which, delta); }

/// Moves the header word from `expected` to (wrapper, s); false if another thread moved it
/// first. On GIL builds every writer of a tied word holds the GIL (T6 takes it first; T10
/// runs only after finalization), and `expected` was read under it, so a plain store is
/// enough. Free-threaded builds need the compare-exchange.
inline bool publish(ObjectHeader *h, uintptr_t expected, void *wrapper, WrapState s) noexcept {
#if defined(Py_GIL_DISABLED)
    return h->transition(expected, wrapper, s);
#else
    (void) expected;
    h->store(wrapper, s);
    return true;
#endif
}

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
