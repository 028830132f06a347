// SPDX-License-Identifier: Apache-2.0
// cpp/include/tether/ref.h: Ref<T> (strong) and WeakRef<T> smart pointers for tether::Object
#pragma once

#include "object.h"

#include <cstddef>
#include <type_traits>
#include <utility>

namespace tether {

template <typename T> class Ref {
public:
    Ref() noexcept = default;
    Ref(std::nullptr_t) noexcept {}
    /// Takes a new strong count on `p`.
    explicit Ref(T *p) noexcept : m_ptr(p) {
        if (m_ptr)
            m_ptr->inc_ref();
    }
    Ref(const Ref &o) noexcept : Ref(o.m_ptr) {}
    Ref(Ref &&o) noexcept : m_ptr(o.m_ptr) { o.m_ptr = nullptr; }
    template <typename U, typename = std::enable_if_t<std::is_convertible_v<U *, T *>>>
    Ref(const Ref<U> &o) noexcept : Ref(static_cast<T *>(o.get())) {}
    template <typename U, typename = std::enable_if_t<std::is_convertible_v<U *, T *>>>
    Ref(Ref<U> &&o) noexcept : m_ptr(static_cast<T *>(o.release())) {}
    ~Ref() {
        // Checked here, not in the class body, so that `struct Node : Object { Ref<Node> next; }`
        // compiles while Node is still incomplete.
        static_assert(std::is_base_of_v<Object, T>, "Ref<T> needs T derived from tether::Object");
        if (m_ptr)
            m_ptr->dec_ref();
    }

    Ref &operator=(Ref o) noexcept {
        std::swap(m_ptr, o.m_ptr);
        return *this;
    }

    /// Adopts a strong count that the caller already owns.
    static Ref adopt(T *p) noexcept {
        Ref r;
        r.m_ptr = p;
        return r;
    }
    /// Gives up ownership of the count without releasing it.
    T *release() noexcept {
        T *p = m_ptr;
        m_ptr = nullptr;
        return p;
    }
    void reset() noexcept { Ref().swap(*this); }
    void swap(Ref &o) noexcept { std::swap(m_ptr, o.m_ptr); }

    T *get() const noexcept { return m_ptr; }
    T *operator->() const noexcept { return m_ptr; }
    T &operator*() const noexcept { return *m_ptr; }
    explicit operator bool() const noexcept { return m_ptr != nullptr; }
    uint32_t use_count() const noexcept { return m_ptr ? m_ptr->use_count() : 0; }

    friend bool operator==(const Ref &a, const Ref &b) noexcept { return a.m_ptr == b.m_ptr; }
    friend bool operator!=(const Ref &a, const Ref &b) noexcept { return a.m_ptr != b.m_ptr; }

private:
    T *m_ptr = nullptr;
};

/// Does not keep the object alive, only its memory; lock() gives a Ref while it lives.
template <typename T> class WeakRef {
public:
    WeakRef() noexcept = default;
    WeakRef(std::nullptr_t) noexcept {}
    /// A weak link to `p` (which must be alive: take it from a Ref or a live object).
    explicit WeakRef(T *p) noexcept : m_ptr(p) {
        if (m_ptr)
            m_ptr->inc_weak();
    }
    WeakRef(const Ref<T> &r) noexcept : WeakRef(r.get()) {}
    template <typename U, typename = std::enable_if_t<std::is_convertible_v<U *, T *>>>
    WeakRef(const Ref<U> &r) noexcept : WeakRef(static_cast<T *>(r.get())) {}
    WeakRef(const WeakRef &o) noexcept : m_ptr(o.m_ptr) {
        if (m_ptr)
            m_ptr->inc_weak();
    }
    WeakRef &operator=(WeakRef o) noexcept {
        std::swap(m_ptr, o.m_ptr);
        return *this;
    }
    ~WeakRef() {
        if (m_ptr)
            m_ptr->dec_weak();
    }

    Ref<T> lock() const noexcept {
        if (m_ptr && m_ptr->try_inc_ref())
            return Ref<T>::adopt(m_ptr);
        return Ref<T>();
    }
    bool expired() const noexcept { return !m_ptr || m_ptr->use_count() == 0; }
    void reset() noexcept { WeakRef().swap(*this); }
    void swap(WeakRef &o) noexcept { std::swap(m_ptr, o.m_ptr); }

private:
    T *m_ptr = nullptr;
};

} // namespace tether
