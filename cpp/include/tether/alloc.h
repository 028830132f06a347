// SPDX-License-Identifier: Apache-2.0
// cpp/include/tether/alloc.h: make_object<T>: one block holding the prefix header and T
//
// See the layout picture in header.h. A type can opt out of the header by declaring
//     static constexpr bool tether_header = false;
// It then pays no header bytes, and gives up identity: every trip to Python makes a fresh
// wrapper (the wrapper still owns a strong count, so nothing dangles).
#pragma once

#include "ref.h"
#include "runtime.h"

#include <new>
#include <type_traits>
#include <typeinfo>
#include <utility>

namespace tether {

template <typename T, typename = void> struct wants_header : std::true_type {};
template <typename T>
struct wants_header<T, std::void_t<decltype(T::tether_header)>>
    : std::bool_constant<T::tether_header> {};

namespace detail {

struct ObjectAccess {
    /// After T's constructor: layout, type, "made", and the first strong reference. A
    /// constructor that already took references to `this` keeps them (they are added to).
    /// `wrapped`: the reference belongs to a wrapper being made for it (T1, header.h).
    /// `size_class`: the block's class in the block cache (runtime.h), for free_block.
    static void init(Object *o, uint32_t type_index, size_t header_distance, size_t prefix,
                     uint32_t size_class, bool wrapped) noexcept {
        uint32_t log2_prefix = 0;
        while (prefix > 1) {
            prefix >>= 1;
            ++log2_prefix;
        }
        o->m_info = type_index | Object::info_made | (log2_prefix << Object::info_prefix_shift) |
                    (size_class << Object::info_class_shift);
        o->m_header_distance = static_cast<uint32_t>(header_distance);
        uint32_t taken = o->m_strong.load(std::memory_order_relaxed);
        o->m_strong.store((taken + 1) | (wrapped ? Object::wrapped_bit : 0),
                          std::memory_order_relaxed);
    }
    /// Start of the block make_object allocated. Only before the destructor runs (it reads
    /// the most-derived object through the vtable).
    static void *block_of(const Object *o) noexcept {
        uint32_t log2_prefix = (o->m_info >> Object::info_prefix_shift) & 15;
        size_t prefix = log2_prefix ? (size_t) 1 << log2_prefix : 0;
        return static_cast<char *>(const_cast<void *>(dynamic_cast<const void *>(o))) - prefix;
    }
    /// The block's size class (runtime.h). Still readable after the destructor.
    static uint32_t block_class_of(const Object *o) noexcept {
        return (o->m_info >> Object::info_class_shift) & 15;
    }
    /// After the destructor: remember the block in the dead object's bytes for on_last_weak.
    static void remember_block(Object *o, void *block) noexcept {
        o->m_header_distance =
            static_cast<uint32_t>(reinterpret_cast<char *>(o) - static_cast<char *>(block));
    }
    /// I6's distance; 0 for an object without a header.
    static uint32_t header_distance(const Object *o) noexcept { return o->m_header_distance; }
    static void *remembered_block(Object *o) noexcept {
        return reinterpret_cast<char *>(o) - o->m_header_distance;
    }
    static uint32_t weak_count(const Object *o) noexcept {
        return o->m_weak.load(std::memory_order_acquire);
    }
    /// The whole strong word (count and the bindings' bits, header.h).
    static std::atomic<uint32_t> &strong_word(const Object *o) noexcept { return o->m_strong; }
};

template <typename T> uint32_t type_index_of() noexcept {
    static const uint32_t index =
        std::is_same_v<T, Object> ? 0 : register_type(typeid(T).name());
    return index;
}

} // namespace detail

namespace detail {
/// T0 (header.h): allocates T with its header in one block and returns the first strong
/// reference; `for_wrapper`: that reference is the wrapper's (WRAPPED set), for tether::init.
template <typename T, typename... Args> Ref<T> make_object_impl(bool for_wrapper, Args &&...args) {
    static_assert(std::is_base_of_v<Object, T>, "make_object<T>: T must derive from tether::Object");
    static_assert(!std::is_abstract_v<T>, "make_object<T>: T is abstract");
    static_assert(alignof(T) <= 4096, "make_object<T>: alignment above a page is not supported");

    constexpr bool with_header = wants_header<T>::value;
    constexpr size_t prefix = with_header ? block_prefix(alignof(T)) : 0;
    static_assert(sizeof(T) < ((size_t) 1 << 31),
                  "make_object<T>: T is too large for the 32-bit header distance in Object");

    constexpr uint32_t size_class = block_class(prefix + sizeof(T), alignof(T));
    static_assert(size_class <= 15, "the size class must fit Object's 4 bits");
    // Made for a wrapper: allocate_block counts it bound now, and T1 does not (header.h).
    const bool wrapped = with_header && for_wrapper;
    char *block = static_cast<char *>(
        detail::allocate_block(prefix + sizeof(T), alignof(T), wrapped));
    char *storage = block + prefix;
    if constexpr (with_header)
        new (storage - sizeof(ObjectHeader)) ObjectHeader();

    T *p;
    try {
        p = new (storage) T(std::forward<Args>(args)...);
    } catch (...) {
        detail::free_block_unmade(block, size_class, wrapped);
        throw;
    }
    Object *o = static_cast<Object *>(p);
    const char *ob = reinterpret_cast<const char *>(o);
    detail::ObjectAccess::init(
        o, detail::type_index_of<T>(),
        with_header ? static_cast<size_t>(ob - (storage - sizeof(ObjectHeader))) : 0, prefix,
        size_class, wrapped);
    return Ref<T>::adopt(p); // allocate_block counted it live (and bound if wrapped)
}
} // namespace detail

/// Allocates T with its header in one block and returns the first strong reference.
template <typename T, typename... Args> Ref<T> make_object(Args &&...args) {
    return detail::make_object_impl<T>(false, std::forward<Args>(args)...);
}

/// Bytes the header adds in front of an object of type T.
template <typename T> constexpr size_t header_size() noexcept {
    return wants_header<T>::value ? block_prefix(alignof(T)) : 0;
}

} // namespace tether
