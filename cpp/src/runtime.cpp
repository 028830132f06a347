// SPDX-License-Identifier: Apache-2.0
// cpp/src/runtime.cpp: libtether: the allocator, the last-count paths and process-wide state
#include "tether/tether.h"

#include <pthread.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <string>
#include <unordered_map>

#define NOINLINE_COLD __attribute__((noinline, cold))

namespace tether::detail {

namespace {
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

// ---- counters: one block per thread, summed on read ---------------------------------------

/// Each thread writes only its own block (relaxed load + store, no lock prefix); readers
/// sum every block plus what exited threads left behind.
struct ThreadCounts {
    std::atomic<int64_t> value[counter_count] = {};
    ThreadCounts *next = nullptr;
};

struct CountRegistry {
    std::mutex mutex;
    ThreadCounts *threads = nullptr;
    int64_t retired[counter_count] = {};
    pthread_key_t key;
    CountRegistry() { pthread_key_create(&key, &retire); }

    static void retire(void *p) {
        auto *mine = static_cast<ThreadCounts *>(p);
        CountRegistry &r = registry();
        std::lock_guard<std::mutex> guard(r.mutex);
        for (int i = 0; i < counter_count; ++i)
            r.retired[i] += mine->value[i].load(std::memory_order_relaxed);
        for (ThreadCounts **q = &r.threads; *q; q = &(*q)->next)
            if (*q == mine) {
                *q = mine->next;
                break;
            }
        delete mine;
    }
    static CountRegistry &registry() {
        static CountRegistry *r = new CountRegistry(); // never destroyed: threads outlive statics
        return *r;
    }
};

__attribute__((tls_model("initial-exec"))) thread_local ThreadCounts *t_counts = nullptr;

NOINLINE_COLD ThreadCounts *register_thread() noexcept {
    CountRegistry &r = CountRegistry::registry();
    auto *mine = new ThreadCounts();
    {
        std::lock_guard<std::mutex> guard(r.mutex);
        mine->next = r.threads;
        r.threads = mine;
    }
    pthread_setspecific(r.key, mine);
    t_counts = mine;
    return mine;
}

/// Destroys the payload and drops the weak count the strong counts held together.
void destroy(Object *obj) noexcept {
    // With no WeakRef left (weak == 1, the strong counts' own), none can appear any more:
    // free the block without another atomic read-modify-write.
    bool sole = ObjectAccess::weak_count(obj) == 1;
    void *block = ObjectAccess::block_of(obj);
    obj->~Object();
    add_count(Counter::live, -1);
    if (sole)
        free_block(block);
    else
        obj->dec_weak();
}
} // namespace

void add_count(Counter which, int64_t delta) noexcept {
    ThreadCounts *mine = t_counts;
    if (!mine)
        mine = register_thread();
    std::atomic<int64_t> &v = mine->value[static_cast<int>(which)];
    v.store(v.load(std::memory_order_relaxed) + delta, std::memory_order_relaxed);
}

Stats read_stats() noexcept {
    CountRegistry &r = CountRegistry::registry();
    int64_t sum[counter_count];
    std::lock_guard<std::mutex> guard(r.mutex);
    for (int i = 0; i < counter_count; ++i)
        sum[i] = r.retired[i];
    for (ThreadCounts *t = r.threads; t; t = t->next)
        for (int i = 0; i < counter_count; ++i)
            sum[i] += t->value[i].load(std::memory_order_relaxed);
    Stats s;
    s.live = sum[0];
    s.bound = sum[1];
    s.parked = sum[2];
    s.orphaned = sum[3];
    return s;
}

uint32_t runtime_abi_version() noexcept { return abi_version; }
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
                add_count(Counter::parked, -1);
                add_count(Counter::orphaned, 1);
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
