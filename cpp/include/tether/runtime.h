// SPDX-License-Identifier: Apache-2.0
// cpp/include/tether/runtime.h: process-wide state of libtether (type table, counters, hooks)
//
// libtether is the one shared library every tether module and host links, so this state
// exists once per process however many extension modules bind types (issue: downstream use).
// It never includes Python: the bindings reach it through the hook table below (I5).
#pragma once

#include "object.h"

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace tether {

/// Bumped whenever the header, Object's layout or the hook table change. A module built
/// against other headers than the loaded libtether refuses to import (see check_abi()).
constexpr uint32_t abi_version = 5; // 5: allocate_block counts `bound` too, on_last_strong_unbound

/// What tether.stats() counts.
enum class Counter : int {
    live = 0,     ///< objects made by make_object and not yet destroyed
    bound = 1,    ///< objects with a wrapper (header word BOUND; from allocation for tether::init)
    shared = 2,   ///< of those, the ones C++ also holds (SHARED: the header keeps the wrapper)
    orphaned = 3, ///< wrappers left behind by a finalized interpreter (T8)
};
constexpr int counter_count = 4;

/// A snapshot of the counters.
struct Stats {
    int64_t live = 0, bound = 0, shared = 0, orphaned = 0;
};

/// What the Python side installs. Every entry may be null (no interpreter: plain C++).
struct PythonHooks {
    /// E1 (header.h), the caller owns a reference: make the SHARED bit match the count
    /// again (T4 share, or T8 orphan once the interpreter is gone). Any thread.
    void (*settle)(Object *obj) noexcept = nullptr;
    /// E2 (header.h): drop the caller's reference, the last one besides the wrapper's (T5
    /// unshare, or T8 orphan once the interpreter is gone). Any thread.
    void (*release_shared)(Object *obj) noexcept = nullptr;
};

namespace detail {
TETHER_API uint32_t runtime_abi_version() noexcept;
/// HOT: every make_object, destruction, park and revive. Counts go to a per-thread block
/// with plain (unlocked) stores; read_stats() adds up all threads. No lock-prefixed
/// instruction on the hot paths.
TETHER_API void add_count(Counter which, int64_t delta) noexcept;
TETHER_API Stats read_stats() noexcept;
TETHER_API void set_python_hooks(const PythonHooks &hooks) noexcept;

/// Process-wide index for a C++ type, keyed by its mangled name so that every module that
/// names the same type gets the same index. Index 0 is tether::Object.
TETHER_API uint32_t register_type(const char *mangled_name) noexcept;
/// One opaque slot per type index, for the bindings' Python type object.
TETHER_API std::atomic<void *> *type_slot(uint32_t index) noexcept;
constexpr uint32_t max_types = 4096;

/// Size classes of the per-thread block cache (runtime.cpp): class c holds blocks of
/// 16 * c + 8 bytes, which glibc serves from chunks of exactly 16 * (c + 1) bytes, so
/// rounding a request up to its class costs no memory there. 0: not cached (larger or
/// more aligned). The same everywhere: whether blocks are reused at all is libtether's
/// choice (not in sanitized builds, where reuse would hide a use-after-free).
constexpr uint32_t block_classes = 15; // up to 248 bytes
constexpr uint32_t block_class(size_t size, size_t align) noexcept {
    return align <= 16 && size <= 16 * block_classes + 8
               ? static_cast<uint32_t>(size <= 24 ? 1 : (size - 8 + 15) / 16)
               : 0;
}
constexpr size_t block_class_size(uint32_t c) noexcept { return 16 * (size_t) c + 8; }

/// A block for make_object, counted as one live object (Counter::live) from here on, and
/// also as bound (Counter::bound) if `bound`: its wrapper is being made (tether::init), and
/// T1 ties the two without counting again. Both counts in one per-thread access.
TETHER_API void *allocate_block(size_t size, size_t align, bool bound);
/// Frees a block (size_class: block_class(size, align) of its allocation).
TETHER_API void free_block(void *block, uint32_t size_class) noexcept;
/// The same for a block whose object was never made (its constructor threw): uncounts it
/// (`bound`: as allocate_block was told).
TETHER_API void free_block_unmade(void *block, uint32_t size_class, bool bound) noexcept;
/// T6 then T9: a wrapper died holding the object's last reference (its header word already
/// DETACHED, the count zero). Uncounts the object as bound and destroys it, with one
/// per-thread access for both counts.
TETHER_API void on_last_strong_unbound(Object *obj) noexcept;
} // namespace detail

inline Stats stats() noexcept { return detail::read_stats(); }

/// True when the headers this translation unit was built with match the loaded libtether.
inline bool check_abi() noexcept { return detail::runtime_abi_version() == abi_version; }

} // namespace tether
