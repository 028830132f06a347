// SPDX-License-Identifier: Apache-2.0
// bindings/src/deferred_edges.h: C++ threads never wait for the GIL at edge E2
//
// A thread that cannot run Python (no thread state, or it released the GIL) and crosses an
// edge of the count (header.h: E1 takes a count on an object only its wrapper holds, E2 drops
// the last count besides the wrapper's) hands the edge to a queue instead of taking the GIL:
//
//   E2  the entry owns the thread's reference; nothing changes state meanwhile (the object
//       stays WRAPPED|SHARED|2 and its header keeps the wrapper). Applied: obj->dec_ref() by
//       a thread that holds the GIL, which crosses E2 there (T5, maybe T6 and T9).
//   E1  the thread's count is taken (WRAPPED|2, SHARED off, as a caster's quiet count); the
//       entry holds a weak count. Applied: the header's word is read again under the GIL, and
//       the header takes the wrapper if the thread still holds its count (T4). While Python
//       runs normally the thread waits until its entry is applied, so that the wrapper cannot
//       die in between (identity first): E1 is the one edge that still waits for Python.
//
// Who applies the queue: a tether-owned thread (the drainer, the only thread that ever waits
// for the GIL on the queue's behalf; nothing waits for it), tether.stats() and tether.settle()
// on any Python thread, and the atexit hook.
//
// The queue's states, in the order a process meets them:
//
//   OPEN        Python runs. The drainer applies entries within one GIL hand-off.
//   FINALIZING  atexit ran (Py_FinalizeEx has begun): the drainer is stopped and joined, what
//               was queued is applied, and from then on no C++ thread waits for anything: an
//               edge is queued and applied by the finalizing thread if it reaches a drain
//               point (tether.stats(), tether.settle()), or...
//   GONE        ...orphaned (T8) once the interpreter is really gone (Py_AtExit: after
//               Py_FinalizeEx). Edges after that orphan directly, as before.
//
// A fork (os.fork) keeps the state and restarts the drainer lazily in the child.
#pragma once

#include <tether/python.h>

namespace tether::py::deferred {

enum class Outcome {
    applied,  ///< done (E1 waited until the drainer applied it)
    queued,   ///< in the queue: applied later, or orphaned once the interpreter is gone
    gone,     ///< the interpreter is gone: the caller orphans (T8) itself
    no_queue, ///< the queue could not take it (out of memory): the caller takes the GIL
};

/// E2 on a thread that cannot run Python: the queue takes over the caller's reference.
Outcome defer_release(Object *obj) noexcept;

/// E1 on a thread that cannot run Python (the caller's count is taken already).
Outcome defer_share(Object *obj) noexcept;

/// A C++ thread without the GIL that must run Python code (a trampoline calling an
/// override) asks first. True while Python runs normally: it may take the GIL, and calls
/// end_python_call() once it released it; the atexit hook waits for such calls to end before
/// Py_FinalizeEx goes on (a thread waiting for the GIL then would be ended by CPython). False
/// once finalization began: run C++ instead.
bool begin_python_call() noexcept;
void end_python_call() noexcept;

/// Applies every queued edge. The caller holds the GIL (an attached thread state).
void drain() noexcept;

/// drain(), when something is queued: one relaxed load otherwise.
void drain_if_pending() noexcept;

/// Queued entries right now (for tests and tether.settle()'s result).
size_t pending_count() noexcept;

/// Registers the atexit, Py_AtExit and fork hooks (once per process). GIL held.
int install() noexcept;

/// True once the interpreter tether was bound to has been finalized (GONE).
bool interpreter_gone() noexcept;

} // namespace tether::py::deferred
