// SPDX-License-Identifier: Apache-2.0
// bindings/include/tether/weak_ref_caster.h: tether::WeakRef<T> as argument, result and field
//
// Included by tether/nanobind.h after the T* caster. A WeakRef reaches Python as the object's
// one wrapper while the object lives, and as None once it died (or for an empty WeakRef). From
// Python, an object (or None) converts to a weak link to it: nothing keeps the object alive
// through it, which is what a parent back-pointer needs to avoid a cycle through C++.
#pragma once

NAMESPACE_BEGIN(NB_NAMESPACE)
NAMESPACE_BEGIN(detail)

template <typename T> struct type_caster<tether::WeakRef<T>> {
    using Value = tether::WeakRef<T>;
    static constexpr auto Name = make_caster<T>::Name + const_name(" | None");
    template <typename T_> using Cast = movable_cast_t<T_>;

    Value value;
    PyObject *unusable = nullptr; ///< a moved-from or uninitialized wrapper that was passed

    bool from_python(handle src, uint32_t flags, cleanup_list *cleanup) noexcept {
        if (src.is_none()) {
            value.reset();
            return true;
        }
        make_caster<T> inner;
        if (!inner.from_python(src, flags & ~(uint32_t) cast_flags::none_disallowed, cleanup))
            return false;
        if (inner.unusable)
            unusable = inner.unusable; // raised precisely by the cast operator
        else
            value = Value(inner.value);
        return true;
    }

    static handle from_cpp(const Value &v, rv_policy, cleanup_list *) noexcept {
        tether::Ref<T> strong = v.lock(); // a count of its own while the wrapper is made
        return tether::wrap(strong.get());
    }

    template <typename T_> bool can_cast() const noexcept { return !unusable; }

    void ensure_usable() {
        if (unusable) {
            tether::py::raise_unusable(unusable);
            throw python_error();
        }
    }
    explicit operator Value *() {
        ensure_usable();
        return &value;
    }
    explicit operator Value &() {
        ensure_usable();
        return value;
    }
    explicit operator Value &&() {
        ensure_usable();
        return (Value &&) value;
    }
};

NAMESPACE_END(detail)
NAMESPACE_END(NB_NAMESPACE)
