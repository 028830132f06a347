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

// ---- per-thread state: the counters and the block cache ----------------------------------

/// Small blocks kept for reuse by the thread that freed them (a LIFO list per size class,
/// linked through each free block's first word), in front of malloc: make_object and the
/// last release of a small object cost a pop and a push instead of a malloc/free pair.
/// Bounded (BlockCache::depth blocks per class); emptied when the thread exits.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#  define TETHER_REUSE_BLOCKS 0 // every block goes back to the sanitizer's malloc
#else
#  define TETHER_REUSE_BLOCKS 1
#endif
struct BlockCache {
    static constexpr uint32_t depth = 32;
    void *head[block_classes + 1] = {};
    uint32_t count[block_classes + 1] = {};

    void flush() noexcept {
        for (uint32_t c = 1; c <= block_classes; ++c) {
            while (void *p = head[c]) {
                head[c] = *static_cast<void **>(p);
                std::free(p);
            }
            count[c] = 0;
        }
    }
};

/// Each thread writes only its own counters (relaxed load + store, no lock prefix); readers
/// sum every thread's plus what exited threads left behind.
struct ThreadState {
    std::atomic<int64_t> value[counter_count] = {};
    BlockCache cache;
    ThreadState *next = nullptr;
};

__attribute__((tls_model("initial-exec"))) thread_local ThreadState *t_state = nullptr;

struct CountRegistry {
    std::mutex mutex;
    ThreadState *threads = nullptr;
    int64_t retired[counter_count] = {};
    pthread_key_t key;
    CountRegistry() { pthread_key_create(&key, &retire); }

    /// Thread exit: keep the thread's counts, free its cached blocks. A tether object
    /// released later on this thread (another key's destructor) registers it again.
    static void retire(void *p) {
        auto *mine = static_cast<ThreadState *>(p);
        t_state = nullptr;
        CountRegistry &r = registry();
        {
            std::lock_guard<std::mutex> guard(r.mutex);
            for (int i = 0; i < counter_count; ++i)
                r.retired[i] += mine->value[i].load(std::memory_order_relaxed);
            for (ThreadState **q = &r.threads; *q; q = &(*q)->next)
                if (*q == mine) {
                    *q = mine->next;
                    break;
                }
        }
        mine->cache.flush();
        delete mine;
    }
    static CountRegistry &registry() {
        static CountRegistry *r = new CountRegistry(); // never destroyed: threads outlive statics
        return *r;
    }
};

NOINLINE_COLD ThreadState *register_thread() noexcept {
    CountRegistry &r = CountRegistry::registry();
    auto *mine = new ThreadState();
    {
        std::lock_guard<std::mutex> guard(r.mutex);
        mine->next = r.threads;
        r.threads = mine;
    }
    pthread_setspecific(r.key, mine);
    t_state = mine;
    return mine;
}

inline ThreadState &this_thread() noexcept {
    ThreadState *mine = t_state;
    return mine ? *mine : *register_thread();
}

inline void add_to(ThreadState &mine, Counter which, int64_t delta) noexcept {
    std::atomic<int64_t> &v = mine.value[static_cast<int>(which)];
    v.store(v.load(std::memory_order_relaxed) + delta, std::memory_order_relaxed);
}

/// Destroys the payload and drops the weak count the strong counts held together.
__attribute__((always_inline)) inline void destroy(Object *obj) noexcept {
    void *block = ObjectAccess::block_of(obj); // before ~T: it reads the vtable
    uint32_t size_class = ObjectAccess::block_class_of(obj);
    // With no WeakRef left (weak == 1, the strong counts' own), none can appear any more:
    // free the block without another atomic read-modify-write.
    bool sole = ObjectAccess::weak_count(obj) == 1;
    obj->~Object();
    add_to(this_thread(), Counter::live, -1);
    if (sole) {
        free_block(block, size_class);
    } else {
        ObjectAccess::remember_block(obj, block);
        obj->dec_weak();
    }
}

// ---- the trashcan: destructions started inside a destructor wait their turn ----------------
//
// ~Box releases its Ref, which may destroy the next Box, whose destructor releases the
// next... Run naively that recursion is as deep as the chain. Instead the outermost
// destruction on a thread drains a per-thread queue of objects whose count reached zero
// while it ran, so the C stack stays flat whatever the chain's length (CPython's own
// trashcan does the same for its containers).
struct Trashcan {
    Object **items;
    size_t size, capacity;
    bool draining;
};
__attribute__((tls_model("initial-exec"))) thread_local Trashcan t_trash = {nullptr, 0, 0, false};

/// Queue `obj` behind the destruction under way; false if no memory (destroy it now).
bool defer(Object *obj) noexcept {
    Trashcan &t = t_trash;
    if (t.size == t.capacity) {
        size_t cap = t.capacity ? t.capacity * 2 : 64;
        void *grown = std::realloc(t.items, cap * sizeof(Object *));
        if (!grown)
            return false;
        t.items = static_cast<Object **>(grown);
        t.capacity = cap;
    }
    t.items[t.size++] = obj;
    return true;
}

/// Destroy what destructions queued while the outermost one ran (t.draining is set).
NOINLINE_COLD void drain(Trashcan &t) noexcept {
    while (t.size > 0)
        destroy(t.items[--t.size]);
    std::free(t.items); // nothing stays allocated between destructions (no per-thread leak)
    t.items = nullptr;
    t.capacity = 0;
}
} // namespace

void add_count(Counter which, int64_t delta) noexcept { add_to(this_thread(), which, delta); }

Stats read_stats() noexcept {
    CountRegistry &r = CountRegistry::registry();
    int64_t sum[counter_count];
    std::lock_guard<std::mutex> guard(r.mutex);
    for (int i = 0; i < counter_count; ++i)
        sum[i] = r.retired[i];
    for (ThreadState *t = r.threads; t; t = t->next)
        for (int i = 0; i < counter_count; ++i)
            sum[i] += t->value[i].load(std::memory_order_relaxed);
    Stats s;
    s.live = sum[0];
    s.bound = sum[1];
    s.shared = sum[2];
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

/// The counts of an object made in a block: live, and bound if made for a wrapper (T1's
/// count, taken here by tether::init). +1 by allocate_block, -1 when it is never made.
static inline void count_made(ThreadState &mine, int64_t delta, bool bound) noexcept {
    add_to(mine, Counter::live, delta);
    if (bound)
        add_to(mine, Counter::bound, delta);
}

void *allocate_block(size_t size, size_t align, bool bound) {
    ThreadState &mine = this_thread();
    count_made(mine, 1, bound); // undone by free_block_unmade
    if (uint32_t c = block_class(size, align)) {
        BlockCache &cache = mine.cache;
        if (void *p = cache.head[c]) { // HOT: a block this thread freed before
            cache.head[c] = *static_cast<void **>(p);
            cache.count[c]--;
            return p;
        }
        size = block_class_size(c); // every block of a class has the class's size
    }
    void *p;
    if (align <= alignof(std::max_align_t)) {
        p = std::malloc(size);
    } else {
        size = (size + align - 1) / align * align; // aligned_alloc wants a multiple
        p = std::aligned_alloc(align, size);
    }
    if (!p) {
        count_made(mine, -1, bound);
        throw std::bad_alloc();
    }
    return p;
}

void free_block_unmade(void *block, uint32_t size_class, bool bound) noexcept {
    count_made(this_thread(), -1, bound);
    free_block(block, size_class);
}

void free_block(void *block, uint32_t size_class) noexcept {
    if (TETHER_REUSE_BLOCKS && size_class != 0) {
        // Not t_state's first use: a thread that never made an object frees to malloc.
        if (ThreadState *mine = t_state) {
            BlockCache &cache = mine->cache;
            if (cache.count[size_class] < BlockCache::depth) { // HOT
                *static_cast<void **>(block) = cache.head[size_class];
                cache.head[size_class] = block;
                cache.count[size_class]++;
                return;
            }
        }
    }
    std::free(block);
}

void on_share(Object *obj) noexcept {
    if (g_hooks.settle)
        g_hooks.settle(obj);
}

void on_unshare(Object *obj) noexcept {
    if (g_hooks.release_shared) {
        g_hooks.release_shared(obj);
        return;
    }
    // No bindings loaded (the bits are only ever set by them): a plain release.
    if (ObjectAccess::strong_word(obj).fetch_sub(1, std::memory_order_acq_rel) == 1)
        on_last_strong(obj);
}

/// T9: on_last_strong's body, also inlined into on_last_strong_unbound.
static __attribute__((always_inline)) inline void last_strong(Object *obj) noexcept {
    // Counts on an object tether did not allocate (a member of another object, a stack
    // object) never free it: its owner does.
    if (!obj->made_by_tether())
        return;
    TETHER_ASSERT(!obj->header() || obj->header()->load() == 0,
                  "T9: an object is destroyed while its header still names a wrapper");
    Trashcan &t = t_trash;
    if (t.draining) { // inside another destruction on this thread: wait its turn
        if (!defer(obj))
            destroy(obj); // out of memory for the queue: recurse rather than leak
        return;
    }
    t.draining = true;
    destroy(obj);
    if (t.size > 0)
        drain(t);
    t.draining = false;
}

void on_last_strong(Object *obj) noexcept { last_strong(obj); }

void on_last_strong_unbound(Object *obj) noexcept {
    add_to(this_thread(), Counter::bound, -1); // the wrapper that held the last reference
    last_strong(obj);
}

void on_last_weak(Object *obj) noexcept {
    // The payload is gone; destroy() left the block's distance in the dead object's bytes.
    free_block(ObjectAccess::remembered_block(obj), ObjectAccess::block_class_of(obj));
}

} // namespace tether::detail
