// SPDX-License-Identifier: Apache-2.0
// cpp/include/tether/object.h: tether::Object, the intrusively counted base of every tied object
#pragma once

#include "header.h"

#include <atomic>
#include <cstdint>

#if defined(_WIN32)
#  define TETHER_API __declspec(dllimport)
#else
#  define TETHER_API __attribute__((visibility("default")))
#endif

namespace tether {

class Object;

namespace detail {
/// Called by Object::dec_ref when the strong count reaches zero (runtime.cpp).
TETHER_API void on_last_strong(Object *obj) noexcept;
/// Called when the weak count reaches zero: frees the block (runtime.cpp).
TETHER_API void on_last_weak(Object *obj) noexcept;
struct ObjectAccess;
} // namespace detail

/**
 * Base of every object tether can tie to a Python wrapper.
 *
 * Counts: `strong` keeps the object alive; `weak` keeps its memory (and so its header)
 * alive. All strong counts together hold one weak count, as in std::shared_ptr. Copying an
 * Object copies none of this: a copy is a new object.
 */
class Object {
public:
    Object() noexcept = default;
    Object(const Object &) noexcept : Object() {}
    Object &operator=(const Object &) noexcept { return *this; }
    virtual ~Object() = default;

    void inc_ref() const noexcept { m_strong.fetch_add(1, std::memory_order_relaxed); }
    void dec_ref() const noexcept {
        if (m_strong.fetch_sub(1, std::memory_order_acq_rel) == 1)
            detail::on_last_strong(const_cast<Object *>(this));
    }
    /// Take a strong count only if the object is still alive (for WeakRef::lock).
    bool try_inc_ref() const noexcept {
        uint32_t c = m_strong.load(std::memory_order_relaxed);
        while (c != 0)
            if (m_strong.compare_exchange_weak(c, c + 1, std::memory_order_acq_rel))
                return true;
        return false;
    }
    void inc_weak() const noexcept { m_weak.fetch_add(1, std::memory_order_relaxed); }
    void dec_weak() const noexcept {
        if (m_weak.fetch_sub(1, std::memory_order_acq_rel) == 1)
            detail::on_last_weak(const_cast<Object *>(this));
    }

    uint32_t use_count() const noexcept { return m_strong.load(std::memory_order_relaxed); }
    uint32_t type_index() const noexcept { return m_type_index; }

    /// The prefix header, or nullptr for objects made without one (see alloc.h).
    ObjectHeader *header() const noexcept {
        return m_header_distance == 0
                   ? nullptr
                   : reinterpret_cast<ObjectHeader *>(
                         const_cast<char *>(reinterpret_cast<const char *>(this)) -
                         m_header_distance);
    }

private:
    friend struct detail::ObjectAccess;

    mutable std::atomic<uint32_t> m_strong{0};
    mutable std::atomic<uint32_t> m_weak{1};
    uint32_t m_type_index = 0;
    /// Bytes from `this` back to the header (I6); 0 when there is no header.
    uint16_t m_header_distance = 0;
    /// Bytes from `this` back to the start of the block (for the free).
    uint16_t m_block_distance = 0;
};

static_assert(sizeof(Object) == 24,
              "Object is a vptr plus two 32-bit counts plus 8 bytes of layout; growing it "
              "grows every tied object");

} // namespace tether
