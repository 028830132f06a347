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
/// E1 (header.h): a count was taken while the wrapper held the only one.
TETHER_API void on_share(Object *obj) noexcept;
/// E2 (header.h): the caller's reference is the last one besides the wrapper's, which the
/// header keeps. Drops the caller's reference.
TETHER_API void on_unshare(Object *obj) noexcept;
/// T9: the strong count reached zero (runtime.cpp).
TETHER_API void on_last_strong(Object *obj) noexcept;
/// The weak count reached zero: frees the block (runtime.cpp).
TETHER_API void on_last_weak(Object *obj) noexcept;
struct ObjectAccess;
} // namespace detail

/**
 * Base of every object tether can tie to a Python wrapper.
 *
 * Counts: `strong` keeps the object alive; `weak` keeps its memory (and so its header)
 * alive. All strong counts together hold one weak count, as in std::shared_ptr. The two
 * top bits of the strong count belong to the bindings (header.h: WRAPPED, SHARED).
 * Copying an Object copies none of this: a copy is a new object.
 */
class Object {
public:
    static constexpr uint32_t wrapped_bit = 0x80000000u; ///< a wrapper owns one count
    static constexpr uint32_t shared_bit = 0x40000000u;  ///< the header owns the wrapper
    static constexpr uint32_t count_mask = shared_bit - 1;

    Object() noexcept = default;
    Object(const Object &) noexcept : Object() {}
    Object &operator=(const Object &) noexcept { return *this; }
    virtual ~Object() = default;

    void inc_ref() const noexcept {
        if (m_strong.fetch_add(1, std::memory_order_relaxed) == (wrapped_bit | 1))
            detail::on_share(const_cast<Object *>(this)); // E1
    }
    void dec_ref() const noexcept {
        uint32_t c = m_strong.load(std::memory_order_relaxed);
        do {
            if (c == (wrapped_bit | shared_bit | 2)) {
                // E2: the hook drops this reference itself, once it may run Python. Dropping
                // it first would let another thread free the object under the hook.
                detail::on_unshare(const_cast<Object *>(this));
                return;
            }
        } while (!m_strong.compare_exchange_weak(c, c - 1, std::memory_order_acq_rel,
                                                 std::memory_order_relaxed));
        if (c == 1)
            detail::on_last_strong(const_cast<Object *>(this)); // T9
    }
    /// Take a strong count only if the object is still alive (for WeakRef::lock).
    bool try_inc_ref() const noexcept {
        uint32_t c = m_strong.load(std::memory_order_relaxed);
        while ((c & count_mask) != 0)
            if (m_strong.compare_exchange_weak(c, c + 1, std::memory_order_acq_rel)) {
                if (c == (wrapped_bit | 1))
                    detail::on_share(const_cast<Object *>(this)); // E1
                return true;
            }
        return false;
    }
    void inc_weak() const noexcept { m_weak.fetch_add(1, std::memory_order_relaxed); }
    void dec_weak() const noexcept {
        if (m_weak.fetch_sub(1, std::memory_order_acq_rel) == 1)
            detail::on_last_weak(const_cast<Object *>(this));
    }

    /// Strong references, the wrapper's included.
    uint32_t use_count() const noexcept {
        return m_strong.load(std::memory_order_relaxed) & count_mask;
    }
    uint32_t type_index() const noexcept { return m_info & info_type_mask; }
    /// True for objects made by make_object (the only ones tether wraps or frees).
    bool made_by_tether() const noexcept { return (m_info & info_made) != 0; }

    /// The prefix header, or nullptr for objects made without one (see alloc.h). The common
    /// distance (the Object base first, alignof(T) <= 8: the 8 bytes before this) is a
    /// constant address, so a load from the header overlaps the distance's load instead of
    /// following it (hot a.x about 0.3 ns faster on 3.11); kept as branches, which GCC does
    /// not turn into a select that would wait for the distance.
    ObjectHeader *header() const noexcept {
        char *base = const_cast<char *>(reinterpret_cast<const char *>(this));
        uint32_t d = m_header_distance;
        if (__builtin_expect(d == sizeof(ObjectHeader), 1))
            return reinterpret_cast<ObjectHeader *>(base - sizeof(ObjectHeader));
        return d == 0 ? nullptr : reinterpret_cast<ObjectHeader *>(base - d);
    }

private:
    friend struct detail::ObjectAccess;

    static constexpr uint32_t info_type_mask = 0xffff;   ///< bits 0-15: type index
    static constexpr uint32_t info_made = 1u << 16;      ///< made by make_object
    static constexpr uint32_t info_prefix_shift = 17;    ///< bits 17-20: log2(block prefix)
    static constexpr uint32_t info_class_shift = 21;     ///< bits 21-24: block size class

    mutable std::atomic<uint32_t> m_strong{0};
    mutable std::atomic<uint32_t> m_weak{1};
    /// Bytes from `this` back to the header (I6); 0 when there is no header. After the
    /// object is destroyed, while WeakRefs keep its memory: bytes back to the block.
    uint32_t m_header_distance = 0;
    uint32_t m_info = 0;
};

static_assert(sizeof(Object) == 24,
              "Object is a vptr plus two 32-bit counts plus 8 bytes of layout; growing it "
              "grows every tied object");

} // namespace tether
