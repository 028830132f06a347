// SPDX-License-Identifier: Apache-2.0
// cpp/include/tether/header.h: the 8-byte prefix header, the count bits, and the lifecycle
//
// This banner is the one description of the design. The transitions it lists are made in
// exactly one place each: bindings/src/lifecycle.cpp (everything Python) and
// cpp/src/runtime.cpp (the last count and the free). docs/lifecycle.md says why.
//
// Memory layout (make_object<T>)
// ------------------------------
//
//     block (malloc)
//     +-------------+----------------------+--------------------------------------+
//     | padding     | ObjectHeader (8 B)   | T                                    |
//     | (alignof(T) |   atomic<uintptr_t>  |   ... Object { vptr, count, weak,    |
//     |  > 8 only)  |   word               |               header_distance, info }|
//     +-------------+----------------------+--------------------------------------+
//                                          ^ T*   (header = Object* - header_distance)
//
// Object stores the distance from itself to the header (32 bits: any size of T), so
// `Object* -> header` is one load and a subtract even when Object is not the first base.
// Objects not made by make_object (embedded in another object, on the stack) have no
// header and no "made" bit: tether never wraps them and never frees them.
//
// Two words describe an object's tie to Python
// ---------------------------------------------
//   the header word  = (uintptr_t) wrapper | state       state: DETACHED, BOUND, DYING
//   the strong count = WRAPPED bit | SHARED bit | n      n: strong references
//
//   WRAPPED: a wrapper exists and owns one of the n references.
//   SHARED:  n >= 2 was seen, so the header owns one Python reference to the wrapper:
//            while anything besides the wrapper holds the object, the wrapper cannot die.
//            (PyTorch's 2025 "PyObject preservation" rework, nanobind's intrusive_counter.)
//
// | header word | count bits      | meaning                                                |
// |-------------|-----------------|--------------------------------------------------------|
// | DETACHED    | n               | no wrapper; C++ alone holds the object                 |
// | BOUND(w)    | WRAPPED, n = 1  | Python alone holds the object, through w               |
// | BOUND(w)    | WRAPPED|SHARED  | C++ shares it (n >= 2): the header keeps w alive, so   |
// |             |   n >= 2        | w keeps its id(), type, __dict__, slots and weakrefs   |
// | DYING(w)    | WRAPPED, n >= 1 | w's refcount reached zero; its dealloc is under way    |
//
// The edges of the count are where C++ starts and stops sharing (Object::inc_ref/dec_ref):
//   E1 inc from WRAPPED|1 (no SHARED)    -> detail::on_share    -> T4 share
//   E2 dec from WRAPPED|SHARED|2         -> detail::on_unshare  -> T5 unshare
// Everything else is a plain atomic add. The argument casters take their count quietly
// (no E1) and settle the bits when the call returns, while the caller still holds w.
//
// Transitions (one function each in bindings/src/lifecycle.cpp, in this order)
// -----------------------------------------------------------------------------
//   T0 make      -> DETACHED            make_object<T> (alloc.h): block, header, n = 1.
//   T1 bind      DETACHED -> BOUND(w)   Python constructed T: `w` is the wrapper its type
//                                        call allocated; w owns make_object's reference.
//                                        (Counted bound by allocate_block already when
//                                        made by tether::init: one per-thread access.)
//   T2 wrap      DETACHED -> BOUND(w)   first trip to Python of an object C++ holds: a new
//                                        wrapper takes a reference, and SHARED (n >= 2).
//   T3 hit       BOUND(w) -> BOUND(w)   every later trip: Py_INCREF(w). The hot path: one
//                                        load, one compare, one increment.
//   T4 share     SHARED off -> on       E1, or settle() after a call: n >= 2, so the header
//                                        takes a reference to w.
//   T5 unshare   SHARED on -> off       E2, or settle(): n fell to 1, so the header drops its
//                                        reference (w may then die: T6).
//   T6 die       BOUND(w) -> DYING(w)   w's refcount reached zero (never while SHARED).
//                -> DETACHED             DYING while w's teardown runs Python code (weakref
//                                        callbacks, its __dict__): what reaches the object
//                                        through C++ then gets no wrapper and makes none.
//                                        Then WRAPPED and w's reference are dropped with the
//                                        word (T9 may follow); a count taken meanwhile keeps
//                                        the object, without a wrapper. When w holds the only
//                                        count and no WeakRef exists, nothing can race it: no
//                                        lock, no compare-exchange, and T9 uncounts it as
//                                        bound (on_last_strong_unbound).
//   T7 move      BOUND(w) -> DETACHED   tether.move(w): w's reference becomes the C++
//                                        callee's; w becomes a moved-from shell. Free-threaded
//                                        builds: under w's critical section (which field
//                                        reads and writes hold), and the shell keeps a weak
//                                        count of its former object until it dies, so a
//                                        thread that read w's object pointer just before can
//                                        still test the count (Ref arguments: take_quiet).
//   T8 orphan    BOUND(w) -> DETACHED   an edge after the interpreter finalized: w belongs to
//                                        a dead interpreter; it is leaked, never touched, and
//                                        its reference released.
//   T9 destroy   n = 0                  detail::on_last_strong (runtime.cpp): ~T, then the
//                                        block is freed (or when the last WeakRef goes),
//                                        small blocks into the thread's block cache.
//                                        Destructions started inside a destructor are queued
//                                        and run one after another (a trashcan): releasing a
//                                        chain of a million objects uses constant C stack.
//   DYING        BOUND(w) -> DYING(w)   T6's first step, or T4 found w's refcount at zero
//                                        (a C++ count taken while a Python subclass's
//                                        teardown ran): w is not handed out again.
//
// Invariants (checked by TETHER_ASSERT in debug builds, -DTETHER_DEBUG=ON)
// ------------------------------------------------------------------------
//   I1. An object has at most one wrapper, and only the header word names it.
//   I2. WRAPPED is set exactly while the word names a wrapper; that wrapper owns one of n.
//   I3. SHARED implies WRAPPED, and the header owns exactly one reference to the wrapper.
//   I4. A wrapper's refcount reaches zero only while SHARED is off.
//   I5. cpp/ never dereferences the wrapper pointer; everything Python is behind the hook
//       table in runtime.h.
//   I6. header(obj) = (char*) obj - obj->header_distance, constant per object.
//
// Threads. GIL builds: T1-T8 run under the GIL (a C++ thread's E1/E2 takes it); counts
// change from any thread. Free-threaded builds: the word and the count's bits change under
// the header's stripe lock and by compare-exchange, so two threads never both make the
// same transition. Two transitions need neither, because no other thread can reach the
// header: T1 while the object has its one count, T6 while w holds the only count and no
// WeakRef exists (a new count needs a Ref, a WeakRef or the wrapper).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#if defined(TETHER_DEBUG)
#  include <cstdio>
#  include <cstdlib>
#  define TETHER_ASSERT(cond, what)                                                          \
      do {                                                                                   \
          if (!(cond)) {                                                                     \
              std::fprintf(stderr, "tether: invariant violated: %s (%s) at %s:%d\n", what,   \
                           #cond, __FILE__, __LINE__);                                       \
              std::abort();                                                                  \
          }                                                                                  \
      } while (0)
#else
#  define TETHER_ASSERT(cond, what) ((void) 0)
#endif

namespace tether {

enum class WrapState : uintptr_t {
    Detached = 0,
    Bound = 1,
    Dying = 3,
};

/// The prefix header. One word: the wrapper pointer plus a WrapState in the low bits.
/// Only bindings/src/lifecycle.cpp writes it.
struct ObjectHeader {
    static constexpr uintptr_t state_mask = 3;

    std::atomic<uintptr_t> word{0};

    static uintptr_t encode(void *wrapper, WrapState s) noexcept {
        return reinterpret_cast<uintptr_t>(wrapper) | static_cast<uintptr_t>(s);
    }
    static WrapState state_of(uintptr_t w) noexcept {
        return static_cast<WrapState>(w & state_mask);
    }
    static void *wrapper_of(uintptr_t w) noexcept {
        return reinterpret_cast<void *>(w & ~state_mask);
    }

    uintptr_t load() const noexcept { return word.load(std::memory_order_acquire); }
};

static_assert(sizeof(ObjectHeader) == 8,
              "the header is one tagged word: 8 bytes before every object with alignof <= 8");
static_assert(alignof(ObjectHeader) <= 8,
              "an 8-aligned T placed 8 bytes into a malloc block must leave the header aligned");
static_assert(std::atomic<uintptr_t>::is_always_lock_free,
              "the word is read by the hot path and written under contention: it must be lock-free");

/// Bytes in front of T in its block: the header, plus padding for over-aligned T.
constexpr size_t block_prefix(size_t align) noexcept {
    return align > sizeof(ObjectHeader) ? align : sizeof(ObjectHeader);
}

} // namespace tether
