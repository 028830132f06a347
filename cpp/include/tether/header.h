// SPDX-License-Identifier: Apache-2.0
// cpp/include/tether/header.h: the 8-byte prefix header and its state machine
//
// This banner is the one description of the design. Other files cite it (I3, T4, ...).
//
// Memory layout (make_object<T>, alignof(T) <= 8)
// -----------------------------------------------
//
//     block (malloc)
//     +----------------------+--------------------------------------+
//     | ObjectHeader (8 B)   | T                                    |
//     |   atomic<uintptr_t>  |   Object { vptr, strong, weak,       |
//     |   word               |            type_index, layout }      |
//     +----------------------+--------------------------------------+
//                            ^ T*   (header = T* - 8)
//
// For alignof(T) = A > 8 the block starts A bytes before T and the first A - 8 bytes are
// padding, so T stays aligned and the header still sits immediately before it. Object stores
// the distance from itself to the header, so `Object* -> header` is one load and a subtract,
// even when Object is not the first base of T (I6).
//
// The word
// --------
//     word = (uintptr_t) wrapper | state          wrapper: a PyObject*, 8-byte aligned
//     state (low 2 bits)                           never dereferenced by cpp/
//
// | state    | bits | wrapper          | meaning                                                |
// |----------|------|------------------|--------------------------------------------------------|
// | DETACHED | 0    | null             | no Python wrapper exists                               |
// | BOUND    | 1    | alive            | Python holds the wrapper; it owns one strong count     |
// | PARKED   | 2    | alive, 1 ref is  | no Python reference is left but the header's own; the  |
// |          |      | the header's     | wrapper owns no count; memory, type, __dict__, slots   |
// |          |      |                  | and weakrefs are untouched                             |
// | DYING    | 3    | being freed      | the wrapper is inside its final deallocation           |
//
// Parking keeps the wrapper a normal live object: its last reference moves to the header
// instead of being freed, before anything of it is cleared. The GC sees an external
// reference, weakrefs stay valid, and reviving is handing that reference back.
//
// Transitions (who makes them; under the GIL on GIL builds)
// ---------------------------------------------------------
//   T1 wrap      DETACHED -> BOUND(w)   first trip to Python (getter, return, __init__):
//                                        a new wrapper w takes one strong count.
//   T2 hit       BOUND(w) -> BOUND(w)   Py_INCREF(w). The hot path: one load, one compare.
//   T3 park      BOUND(w) -> PARKED(w)  w's refcount reached 0 while other strong counts
//                                        remain: tp_dealloc (bound types) or tp_finalize
//                                        (Python subclasses, before CPython clears anything)
//                                        keeps one reference for the header and releases
//                                        w's strong count.
//   T4 revive    PARKED(w) -> BOUND(w)  next trip to Python: take a strong count again and
//                                        hand the header's reference to the caller.
//                                        Same address, type and __dict__.
//   T5 last      BOUND(w) -> DYING(w)   w's refcount reached 0 and w owns the last count:
//                                        the wrapper is freed (T7), then the object.
//   T6 release   PARKED(w) -> DYING(w)  the last strong count went in C++ (any thread):
//                                        Object::dec_ref -> on_last_strong -> hook. The hook
//                                        takes the GIL, gives w the count back and drops the
//                                        header's reference, so w dies normally (__del__
//                                        runs once). If Python still reaches w (a weakref
//                                        was called), w keeps the count: BOUND(w) instead.
//   T7 freed     DYING(w) -> DETACHED   the final tp_dealloc frees w, then releases its count
//                                        (which destroys the object).
//   T8 resurrect DYING(w) -> BOUND(w)   a __del__ stored `self` somewhere: w lives on and
//                                        keeps its count.
//   T9 move      BOUND(w) -> DETACHED   tether.move(w) hands w's count to a C++ Ref<T>&&;
//                                        w becomes a moved-from shell.
//   T10 orphan   PARKED(w) -> DETACHED  the last count went after Python finalized: w's
//                                        memory belongs to a dead interpreter and is not
//                                        touched (leaked, by contract).
//
// Invariants
// ----------
//   I1. An object has at most one wrapper, and only the word names it.
//   I2. strong >= 1 while BOUND: the live wrapper owns one count.
//   I3. A PARKED wrapper owns no count, so it never keeps the object alive.
//   I4. A PARKED wrapper is freed exactly once: by T6 + T7, or never after finalization (T10).
//   I5. cpp/ never dereferences the wrapper pointer; everything Python is behind the hook
//       table in runtime.h.
//   I6. header(obj) = (char*) obj - obj->header_distance, constant per object.
//
// Free-threaded builds: each transition is a compare-exchange on the word, so two threads
// can never both move it out of the same state (one wrapper, one free). The bindings add
// the per-state locking described in bindings/src/wrapper.cpp.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace tether {

enum class WrapState : uintptr_t {
    Detached = 0,
    Bound = 1,
    Parked = 2,
    Dying = 3,
};

/// The prefix header. One word: the wrapper pointer plus a WrapState in the low bits.
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
    void store(void *wrapper, WrapState s) noexcept {
        word.store(encode(wrapper, s), std::memory_order_release);
    }
    /// Move from exactly `expected` to (wrapper, s); false if another thread got there first.
    bool transition(uintptr_t expected, void *wrapper, WrapState s) noexcept {
        return word.compare_exchange_strong(expected, encode(wrapper, s),
                                            std::memory_order_acq_rel,
                                            std::memory_order_acquire);
    }
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
