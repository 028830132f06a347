// SPDX-License-Identifier: Apache-2.0
// cpp/src/runtime.cpp: libtether: the allocator, the last-count paths and process-wide state
#include "tether/tether.h"

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <string>
#include <unordered_map>

namespace tether::detail {

namespace {
Counters g_counters;
PythonHooks g_hooks;
std::atomic<void *> g_type_slots[max_types];

struct TypeNames {
    std::mutex mutex;
    std::unordered_map<std::string, uint32_t> index;
    uint32_t next = 1; // 0 is tether::Object
};
TypeNames &type_names() {
    static TypeNames *names = new TypeNames(); // never destroyed: used during static teardown
    return *names;
}

/// Destroys the payload and drops the weak count the strong counts held together.
void destroy(Object *obj) noexcept {
    obj->~Object();
    g_counters.live.fetch_sub(1, std::memory_order_relaxed);
    obj->dec_weak();
}
} // namespace

uint32_t runtime_abi_version() noexcept { return abi_version; }
Counters &counters() noexcept { return g_counters; }
void set_python_hooks(const PythonHooks &hooks) noexcept { g_hooks = hooks; }

uint32_t register_type(const char *mangled_name) noexcept {
    TypeNames &names = type_names();
    std::lock_guard<std::mutex> guard(names.mutex);
    auto [it, inserted] = names.index.try_emplace(mangled_name, names.next);
    if (inserted) {
        if (names.next + 1 >= max_types) {
            std::fprintf(stderr, "tether::detail::register_type(): more than %u types\n", max_types);
            std::abort();
        }
        names.next++;
    }
    return it->second;
}

std::atomic<void *> *type_slot(uint32_t index) noexcept {
    return index < max_types ? &g_type_slots[index] : nullptr;
}

void *allocate_block(size_t size, size_t align) {
    void *p;
    if (align <= alignof(std::max_align_t)) {
        p = std::malloc(size);
    } else {
        size = (size + align - 1) / align * align; // aligned_alloc wants a multiple
        p = std::aligned_alloc(align, size);
    }
    if (!p)
        throw std::bad_alloc();
    return p;
}

void free_block(void *block) noexcept { std::free(block); }

void on_last_strong(Object *obj) noexcept {
    ObjectHeader *h = obj->header();
    if (h) {
        uintptr_t w = h->load();
        if (ObjectHeader::state_of(w) == WrapState::Parked) {
            // T6: the wrapper's final deallocation runs in Python and destroys the object.
            if (g_hooks.release_parked && g_hooks.release_parked(obj))
                return;
            // T10: no interpreter to return the memory to.
            if (h->transition(w, nullptr, WrapState::Detached)) {
                g_counters.parked.fetch_sub(1, std::memory_order_relaxed);
                g_counters.orphaned.fetch_add(1, std::memory_order_relaxed);
            }
        }
    }
    destroy(obj);
}

void on_last_weak(Object *obj) noexcept {
    // The payload is gone; Object's trivially destructible layout fields are still in the
    // block's bytes (nothing wrote over them), which is all the free needs.
    free_block(ObjectAccess::block_of(obj));
}

} // namespace tether::detail
