// SPDX-License-Identifier: Apache-2.0
// cpp/tests/test_core.cpp: C++ unit tests of the core (allocator, counts, header) without Python
//
// This program never starts an interpreter and does not link libpython: it is also the proof
// that libtether works in plain C++ (see docs/embedding.md, "Plain C++"). Layout facts come
// from the banner in cpp/include/tether/header.h (I2, I3, I6, E1/E2, T8, T9 are cited below).
#include <tether/tether.h>

#include <pthread.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <set>
#include <thread>
#include <vector>

using tether::make_object;
using tether::Object;
using tether::ObjectHeader;
using tether::Ref;
using tether::WeakRef;
using tether::WrapState;
using tether::detail::ObjectAccess;

constexpr uint32_t WRAPPED = Object::wrapped_bit;
constexpr uint32_t SHARED = Object::shared_bit;

// ---- a tiny test harness ----------------------------------------------------------------

static int g_passed = 0, g_failed = 0;

static void check(bool ok, const char *expr, const char *file, int line) {
    if (ok) {
        ++g_passed;
    } else {
        ++g_failed;
        std::fprintf(stderr, "FAILED %s:%d: %s\n", file, line, expr);
    }
}
#define CHECK(cond) check(static_cast<bool>(cond), #cond, __FILE__, __LINE__)

static int64_t live() { return tether::stats().live; }

static const char *bytes(const void *p) { return static_cast<const char *>(p); }

// ---- fixture types ------------------------------------------------------------------------

static std::atomic<int> g_destroyed{0};

struct Counted : Object {
    int64_t value;
    explicit Counted(int64_t v = 0) : value(v) {}
    ~Counted() override { g_destroyed.fetch_add(1); }
};

/// Layout trap: a polymorphic base before Object, so that (Object*) != (Padded*).
struct PadBase {
    virtual ~PadBase() = default;
    int64_t pad = 0x7e7e7e7e;
};
struct Padded : PadBase, Object {
    int64_t value;
    explicit Padded(int64_t v) : value(v) {}
    ~Padded() override { g_destroyed.fetch_add(1); }
};

struct alignas(32) Aligned32 : Object {
    int64_t value = 32;
};
struct alignas(64) Aligned64 : Object {
    int64_t value = 64;
};

/// Opted out of the header: no header bytes, no identity.
struct Untied : Object {
    static constexpr bool tether_header = false;
    int64_t value = 7;
    ~Untied() override { g_destroyed.fetch_add(1); }
};

/// Its constructor throws after a member that needs destruction was built.
struct Throws : Object {
    Ref<Counted> member = make_object<Counted>(1);
    explicit Throws(bool do_throw) {
        if (do_throw)
            throw std::runtime_error("Throws: constructor failed");
    }
};

// ---- header layout (header.h: memory layout, I6) -------------------------------------------

static void test_layout() {
    Ref<Counted> r = make_object<Counted>(5);
    ObjectHeader *h = r->header();
    CHECK(h != nullptr);
    CHECK(bytes(h) == bytes(r.get()) - 8); // header = T* - 8
    CHECK(reinterpret_cast<uintptr_t>(h) % alignof(ObjectHeader) == 0);
    CHECK(ObjectHeader::state_of(h->load()) == WrapState::Detached);
    CHECK(ObjectHeader::wrapper_of(h->load()) == nullptr);
    CHECK(tether::header_size<Counted>() == 8);
    CHECK(sizeof(ObjectHeader) == 8);
    CHECK(r->value == 5);

    // One index per C++ type, process-wide; tether::Object is index 0.
    Ref<Counted> r2 = make_object<Counted>(6);
    Ref<Object> plain = make_object<Object>();
    CHECK(r->type_index() == r2->type_index());
    CHECK(r->type_index() != 0);
    CHECK(plain->type_index() == 0);
    CHECK(r->type_index() != make_object<Padded>(0)->type_index());
    CHECK(tether::detail::register_type(typeid(Counted).name()) == r->type_index());

    // The word's encoding round-trips a pointer and every state without touching the
    // pointer (I5). Only bindings/src/lifecycle.cpp writes a header's word: here we only
    // encode and decode values.
    alignas(8) static int64_t fake_wrapper = 0;
    for (WrapState st : {WrapState::Detached, WrapState::Bound, WrapState::Dying}) {
        uintptr_t w = ObjectHeader::encode(&fake_wrapper, st);
        CHECK(ObjectHeader::wrapper_of(w) == &fake_wrapper);
        CHECK(ObjectHeader::state_of(w) == st);
    }
    CHECK(ObjectHeader::encode(nullptr, WrapState::Detached) == 0); // DETACHED is word 0
    CHECK(h->load() == 0);
    CHECK(fake_wrapper == 0);

    // The count's two top bits belong to the bindings; the rest is the count (header.h).
    CHECK((WRAPPED & SHARED) == 0);
    CHECK(Object::count_mask == SHARED - 1);
    CHECK(((WRAPPED | SHARED) & Object::count_mask) == 0);
    CHECK(sizeof(Object) == 24);
}

// ---- made_by_tether, embedded and stack objects, the 32-bit header distance (I6) --------------

/// A member object: constructed in place by its owner, never by make_object.
struct HasMember : Object {
    Counted member{11};
};

/// A base before Object larger than 16 bits can measure: Object sits past offset 65535.
struct HugeBase {
    virtual ~HugeBase() = default;
    char bytes[100000] = {};
};
struct HugePadded : HugeBase, Object {
    int64_t value;
    explicit HugePadded(int64_t v) : value(v) {}
    ~HugePadded() override { g_destroyed.fetch_add(1); }
};

static void test_made_by_tether() {
    int64_t live0 = live();
    int destroyed0 = g_destroyed.load();
    {
        Ref<Counted> r = make_object<Counted>(1);
        CHECK(r->made_by_tether());

        Ref<HasMember> owner = make_object<HasMember>();
        CHECK(owner->made_by_tether());
        CHECK(!owner->member.made_by_tether()); // embedded: tether never frees or wraps it
        CHECK(owner->member.header() == nullptr);
        CHECK(owner->member.type_index() == 0);
        CHECK(live() == live0 + 2);

        // Counts on an object tether did not allocate never free it: its owner does.
        Counted on_stack(5);
        CHECK(!on_stack.made_by_tether() && on_stack.header() == nullptr);
        CHECK(on_stack.use_count() == 0);
        {
            Ref<Counted> borrowed(&on_stack); // 0 -> 1
            CHECK(on_stack.use_count() == 1);
        } // 1 -> 0: on_last_strong ignores it
        CHECK(on_stack.use_count() == 0 && on_stack.value == 5);
        CHECK(g_destroyed.load() == destroyed0);
        {
            Ref<Counted> m(&owner->member);
            CHECK(owner->member.use_count() == 1);
        }
        CHECK(owner->member.value == 11 && g_destroyed.load() == destroyed0);
        CHECK(live() == live0 + 2); // the live counter counts make_object only
    } // on_stack, then owner (with its member), then r: three destructions
    CHECK(g_destroyed.load() == destroyed0 + 3);
    CHECK(live() == live0);

    // Object more than 64 KiB into T: the distance needs the 32 bits it has now.
    Ref<HugePadded> big = make_object<HugePadded>(77);
    Object *o = big.get();
    CHECK(bytes(o) - bytes(big.get()) > 65535);
    CHECK(bytes(o->header()) == bytes(big.get()) - 8); // the header precedes T, not Object
    CHECK(o->made_by_tether() && big->value == 77);
    CHECK(o->header()->load() == 0);
    Ref<Object> as_base = big;
    big.reset();
    as_base.reset(); // block_of() finds the block from the base pointer
    CHECK(g_destroyed.load() == destroyed0 + 4);
    CHECK(live() == live0);
}

// ---- the count's bits and the E1/E2 edges (header.h) -------------------------------------------

/// A stand-in for the bindings' settle hook: records each call and, like lifecycle.cpp's
/// T4/T5, makes SHARED match the count (it never sees a real wrapper).
static std::atomic<int> g_settles{0};
static std::atomic<Object *> g_settled{nullptr};
static void fake_settle(Object *obj) noexcept {
    g_settles.fetch_add(1);
    g_settled.store(obj);
    std::atomic<uint32_t> &word = ObjectAccess::strong_word(obj);
    uint32_t c = word.load();
    for (;;) {
        if (!(c & WRAPPED))
            return;
        uint32_t n = c & Object::count_mask;
        uint32_t next = n >= 2 ? (c | SHARED) : (c & ~SHARED);
        if (next == c || word.compare_exchange_weak(c, next))
            return;
    }
}

/// A stand-in for the bindings' E2 hook: drops the caller's reference (the hook owns that
/// step, so that the object stays alive until Python may run), then settles.
static void fake_release_shared(Object *obj) noexcept {
    std::atomic<uint32_t> &word = ObjectAccess::strong_word(obj);
    uint32_t old = word.fetch_sub(1);
    fake_settle(obj);
    if ((old & Object::count_mask) == 1)
        tether::detail::on_last_strong(obj);
}

static void test_count_bits_and_edges() {
    int64_t live0 = live();
    int destroyed0 = g_destroyed.load();
    tether::PythonHooks hooks;
    hooks.settle = &fake_settle;
    hooks.release_shared = &fake_release_shared;
    tether::detail::set_python_hooks(hooks);
    {
        Ref<Counted> r = make_object<Counted>(1);
        std::atomic<uint32_t> &word = ObjectAccess::strong_word(r.get());
        CHECK(word.load() == 1); // T0: n = 1, no bits

        // No wrapper: counts going up and down are plain adds; the hook is never called.
        {
            Ref<Counted> a = r, b = r;
            CHECK(r.use_count() == 3);
        }
        CHECK(g_settles.load() == 0 && word.load() == 1);

        // Pretend a wrapper owns the one count (T1). use_count() masks the bits.
        word.fetch_or(WRAPPED);
        CHECK(r.use_count() == 1);

        // E1: 1 -> 2 with WRAPPED and no SHARED calls the hook once, for this object.
        Ref<Counted> c = r;
        CHECK(g_settles.load() == 1 && g_settled.load() == r.get());
        CHECK(word.load() == (WRAPPED | SHARED | 2) && r.use_count() == 2);
        // Further counts are plain adds (no edge).
        Ref<Counted> d = r;
        CHECK(g_settles.load() == 1 && r.use_count() == 3);
        d.reset(); // 3 -> 2 with SHARED: no edge
        CHECK(g_settles.load() == 1 && word.load() == (WRAPPED | SHARED | 2));

        // E2: 2 -> 1 with WRAPPED|SHARED calls the hook, which drops the reference, then
        // SHARED (T5).
        c.reset();
        CHECK(g_settles.load() == 2 && word.load() == (WRAPPED | 1));

        // try_inc_ref (WeakRef::lock) from WRAPPED|1 is an E1 too.
        WeakRef<Counted> weak(r);
        {
            Ref<Counted> locked = weak.lock();
            CHECK(locked && g_settles.load() == 3);
            CHECK(word.load() == (WRAPPED | SHARED | 2));
        } // E2
        CHECK(g_settles.load() == 4 && word.load() == (WRAPPED | 1));

        // A count at 2 without SHARED (the casters take theirs quietly, then settle): its
        // dec is no edge, and nothing is called.
        word.fetch_add(1); // WRAPPED | 2, as a caster leaves it
        r->dec_ref();
        CHECK(g_settles.load() == 4 && word.load() == (WRAPPED | 1));

        // use_count() never shows the bits, whatever the count.
        word.fetch_or(SHARED);
        CHECK(r.use_count() == 1);
        word.fetch_and(~(WRAPPED | SHARED)); // T6: the wrapper goes; r owns the count again
        CHECK(word.load() == 1 && r.use_count() == 1);
        CHECK(g_destroyed.load() == destroyed0);
    }
    CHECK(g_destroyed.load() == destroyed0 + 1); // exactly once, on the last plain count
    CHECK(live() == live0);
    tether::detail::set_python_hooks(tether::PythonHooks{});
    g_settles.store(0);
}

// ---- counts ---------------------------------------------------------------------------------

static void test_counts() {
    int64_t live0 = live();
    int destroyed0 = g_destroyed.load();
    {
        Ref<Counted> a = make_object<Counted>(1);
        CHECK(live() == live0 + 1);
        CHECK(a.use_count() == 1);
        Ref<Counted> b = a;
        CHECK(a.use_count() == 2 && b == a);
        Ref<Object> base = a; // converting copy
        CHECK(a.use_count() == 3 && base.get() == static_cast<Object *>(a.get()));
        Ref<Object> moved = std::move(base);
        CHECK(!base && a.use_count() == 3);
        a->inc_ref();
        CHECK(a.use_count() == 4);
        a->dec_ref();
        b.reset();
        moved.reset();
        CHECK(a.use_count() == 1);
        Counted *raw = a.release();
        CHECK(!a && raw->use_count() == 1);
        Ref<Counted> back = Ref<Counted>::adopt(raw);
        CHECK(back.use_count() == 1);
        CHECK(g_destroyed.load() == destroyed0);
    }
    CHECK(g_destroyed.load() == destroyed0 + 1); // exactly once
    CHECK(live() == live0);
}

static void test_weak_ref() {
    int destroyed0 = g_destroyed.load();
    Ref<Counted> r = make_object<Counted>(3);
    ObjectHeader *h = r->header();
    WeakRef<Counted> w(r);
    WeakRef<Counted> w2 = w;
    CHECK(!w.expired());
    {
        Ref<Counted> locked = w.lock();
        CHECK(locked == r && r.use_count() == 2);
    }
    r.reset();
    CHECK(g_destroyed.load() == destroyed0 + 1); // weak refs do not keep the object
    CHECK(w.expired() && w2.expired());
    CHECK(!w.lock());
    // The block (and so the header) lives until the last weak ref goes: reading it is
    // defined here, and a sanitizer build (TETHER_TEST_SANITIZE=address) checks the free.
    CHECK(ObjectHeader::state_of(h->load()) == WrapState::Detached);
    w = WeakRef<Counted>();
    CHECK(w2.expired());
}

// ---- alignment and padded bases (I6) --------------------------------------------------------

template <typename T> static void check_aligned(size_t align) {
    std::vector<Ref<T>> keep;
    for (int i = 0; i < 64; ++i) {
        keep.push_back(make_object<T>());
        T *p = keep.back().get();
        CHECK(reinterpret_cast<uintptr_t>(p) % align == 0);
        CHECK(bytes(p->header()) == bytes(p) - 8);
        CHECK(p->value == static_cast<int64_t>(align));
    }
    CHECK(tether::header_size<T>() == align);
}

static void test_alignment() {
    int64_t live0 = live();
    check_aligned<Aligned32>(32);
    check_aligned<Aligned64>(64);
    CHECK(live() == live0);
}

static void test_padded_base() {
    int destroyed0 = g_destroyed.load();
    Ref<Padded> r = make_object<Padded>(9);
    Padded *p = r.get();
    Object *o = p;
    CHECK(static_cast<void *>(o) != static_cast<void *>(p)); // Object is not at offset 0
    CHECK(bytes(o->header()) == bytes(p) - 8);               // the header precedes T, not Object
    CHECK(p->pad == 0x7e7e7e7e && p->value == 9);
    Ref<Object> as_base = r; // the last count may go through the base
    r.reset();
    as_base.reset();
    CHECK(g_destroyed.load() == destroyed0 + 1);
}

// ---- the header opt-out ----------------------------------------------------------------------

static void test_opt_out() {
    int destroyed0 = g_destroyed.load();
    int64_t live0 = live();
    static_assert(!tether::wants_header<Untied>::value, "Untied opts out");
    Ref<Untied> r = make_object<Untied>();
    CHECK(r->header() == nullptr);
    CHECK(tether::header_size<Untied>() == 0);
    CHECK(r->value == 7 && live() == live0 + 1);
    Ref<Untied> copy = r;
    CHECK(r.use_count() == 2);
    r.reset();
    copy.reset();
    CHECK(g_destroyed.load() == destroyed0 + 1 && live() == live0);
}

// ---- exceptions in constructors --------------------------------------------------------------

static void test_constructor_throws() {
    int64_t live0 = live();
    int destroyed0 = g_destroyed.load();
    bool caught = false;
    try {
        make_object<Throws>(true);
    } catch (const std::runtime_error &) {
        caught = true;
    }
    CHECK(caught);
    CHECK(live() == live0);                      // the failed object was never counted
    CHECK(g_destroyed.load() == destroyed0 + 1); // its finished member was destroyed
    Ref<Throws> ok = make_object<Throws>(false);
    CHECK(live() == live0 + 2);
    ok.reset();
    CHECK(live() == live0);
}

// ---- the block cache (runtime.h: block_class) ----------------------------------------------

struct Big : Object {
    char payload[4096];
};

static void test_block_cache() {
    using tether::detail::block_class;
    using tether::detail::block_class_size;
    // Classes: the smallest class whose size (16c + 8: a whole glibc chunk) holds the block.
    CHECK(block_class(1, 8) == 1 && block_class(24, 8) == 1 && block_class(25, 8) == 2);
    CHECK(block_class(40, 8) == 2 && block_class(41, 8) == 3 && block_class(248, 8) == 15);
    CHECK(block_class(249, 8) == 0); // too big: malloc
    CHECK(block_class(40, 32) == 0); // over-aligned: aligned_alloc
    for (uint32_t c = 1; c <= 15; ++c) {
        CHECK(block_class(block_class_size(c), 8) == c);
        CHECK(block_class(block_class_size(c) + 1, 8) == (c < 15 ? c + 1 : 0));
    }
#if !defined(__SANITIZE_ADDRESS__)
    // A block this thread freed is the next one of its class it allocates.
    const void *first;
    {
        Ref<Counted> a = make_object<Counted>(1);
        first = a->header();
    }
    {
        Ref<Counted> b = make_object<Counted>(2);
        CHECK(b->header() == first);
        CHECK(b->value == 2);
        CHECK(ObjectHeader::state_of(b->header()->load()) == WrapState::Detached); // fresh header
    }
    // Another class does not take it.
    Ref<Padded> p = make_object<Padded>(3);
    CHECK(static_cast<const void *>(p->header()) != first);
#endif
    // Many objects of many classes, freed in another order, and from another thread: every
    // count comes back, nothing is reused while alive.
    int64_t live0 = live();
    {
        std::vector<Ref<Object>> keep;
        for (int i = 0; i < 1000; ++i) {
            if (i % 3 == 0)
                keep.push_back(make_object<Counted>(i));
            else if (i % 3 == 1)
                keep.push_back(make_object<Padded>(i));
            else
                keep.push_back(make_object<Big>());
        }
        CHECK(live() == live0 + 1000);
        std::set<const void *> seen;
        for (auto &r : keep)
            seen.insert(r.get());
        CHECK(seen.size() == 1000);
        std::thread([&] { keep.clear(); }).join(); // the freeing thread caches, then exits
        CHECK(live() == live0);
    }
    // A constructor that throws gives its block back uncounted (constructor_throws checks
    // the count); the block is reused.
    for (int i = 0; i < 100; ++i) {
        try {
            make_object<Throws>(true);
        } catch (const std::runtime_error &) {
        }
    }
    CHECK(live() == live0);
}

// ---- threads ----------------------------------------------------------------------------------

/// Starts `n` threads running body(i) together (spinning on a shared counter) and joins them.
template <typename F> static void run_together(int n, F body) {
    std::atomic<int> ready{0};
    std::vector<std::thread> threads;
    for (int i = 0; i < n; ++i)
        threads.emplace_back([&, i] {
            ready.fetch_add(1);
            while (ready.load() < n)
                std::this_thread::yield();
            body(i);
        });
    for (std::thread &t : threads)
        t.join();
}

static void test_concurrent_release() {
    constexpr int n_threads = 8, n_objects = 2000;
    int64_t live0 = live();
    int destroyed0 = g_destroyed.load();
    std::vector<std::vector<Ref<Counted>>> per_thread(n_threads);
    {
        std::vector<Ref<Counted>> objects;
        for (int i = 0; i < n_objects; ++i)
            objects.push_back(make_object<Counted>(i));
        for (auto &v : per_thread)
            v = objects; // every object now has n_threads + 1 strong counts
    }                    // main's counts go here; the threads hold the rest
    std::vector<WeakRef<Counted>> weak;
    for (const Ref<Counted> &r : per_thread[0])
        weak.emplace_back(r);
    std::atomic<int> bad_locks{0};

    run_together(n_threads + 1, [&](int i) {
        if (i == n_threads) { // one thread races lock() against the releases
            for (const WeakRef<Counted> &w : weak)
                if (Ref<Counted> r = w.lock())
                    if (r.use_count() < 1 || r->value < 0)
                        bad_locks.fetch_add(1);
            return;
        }
        std::vector<Ref<Counted>> &mine = per_thread[static_cast<size_t>(i)];
        for (size_t k = 0; k < mine.size(); ++k) // each thread starts at another place
            mine[(k + static_cast<size_t>(i) * 251) % mine.size()].reset();
    });

    CHECK(bad_locks.load() == 0);
    CHECK(g_destroyed.load() == destroyed0 + n_objects); // each destroyed exactly once
    CHECK(live() == live0);
    bool all_expired = true;
    for (const WeakRef<Counted> &w : weak)
        all_expired = all_expired && w.expired();
    CHECK(all_expired);
}

static void test_concurrent_make() {
    int64_t live0 = live();
    int destroyed0 = g_destroyed.load();
    run_together(4, [](int i) {
        std::vector<Ref<Counted>> mine;
        for (int k = 0; k < 1000; ++k)
            mine.push_back(make_object<Counted>(i));
    });
    CHECK(g_destroyed.load() == destroyed0 + 4000);
    CHECK(live() == live0);
}

// ---- no interpreter: the hook table is empty ---------------------------------------------------

/// Without Python (no hooks, or after Py_FinalizeEx() in a host, where T8 orphans the
/// wrapper), the E1/E2 edges reach detail::on_share/on_unshare with an empty hook table:
/// nothing is dereferenced (I5), the counts stay exact and the object is destroyed once.
static void test_edges_without_python() {
    tether::detail::set_python_hooks(tether::PythonHooks{});
    tether::Stats s0 = tether::stats();
    int destroyed0 = g_destroyed.load();
    {
        Ref<Counted> r = make_object<Counted>(1);
        std::atomic<uint32_t> &word = ObjectAccess::strong_word(r.get());
        word.fetch_or(WRAPPED);
        Ref<Counted> c = r; // E1, no hook: SHARED stays off
        CHECK(word.load() == (WRAPPED | 2));
        word.fetch_or(SHARED);
        c.reset(); // E2, no hook
        CHECK(word.load() == (WRAPPED | SHARED | 1));
        word.fetch_and(~(WRAPPED | SHARED)); // what T8 leaves: r's plain count
        CHECK(r.use_count() == 1);
    }
    tether::Stats s1 = tether::stats();
    CHECK(g_destroyed.load() == destroyed0 + 1);
    CHECK(s1.live == s0.live && s1.bound == s0.bound && s1.shared == s0.shared);
    CHECK(s1.orphaned == s0.orphaned); // only the bindings' T8 counts orphans
}

// ---- the trashcan (T9): long destruction chains use constant C stack --------------------------

struct Link : Object {
    Ref<Link> next;
    int64_t value;
    explicit Link(int64_t v = 0) : value(v) {}
    ~Link() override { g_links_destroyed.fetch_add(1, std::memory_order_relaxed); }
    static std::atomic<int64_t> g_links_destroyed;
};
std::atomic<int64_t> Link::g_links_destroyed{0};

/// A destructor that makes and drops objects, and releases a chain of its own.
struct Busy : Object {
    Ref<Link> chain;
    ~Busy() override {
        Ref<Counted> temp = make_object<Counted>(-1); // destroyed while the queue drains
        (void) temp;
    }
};

static Ref<Link> make_chain(int64_t n) {
    Ref<Link> head;
    for (int64_t i = 0; i < n; ++i) {
        Ref<Link> node = make_object<Link>(i);
        node->next = std::move(head);
        head = std::move(node);
    }
    return head;
}

/// Runs fn on a pthread with a `stack_bytes` stack and joins it.
template <typename F> static bool run_on_small_stack(size_t stack_bytes, F fn) {
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, stack_bytes);
    pthread_t th;
    auto *heap_fn = new F(std::move(fn));
    int rc = pthread_create(
        &th, &attr,
        [](void *p) -> void * {
            F *f = static_cast<F *>(p);
            (*f)();
            delete f;
            return nullptr;
        },
        heap_fn);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        delete heap_fn;
        return false;
    }
    pthread_join(th, nullptr);
    return true;
}

static void test_trashcan() {
    constexpr int64_t n = 1000000;
    constexpr size_t small_stack = 128 * 1024; // a naive recursion needs ~100 bytes a link
    int64_t live0 = live();
    int64_t links0 = Link::g_links_destroyed.load();

    // One chain of a million Ref-linked objects, released by its head on a small stack.
    Ref<Link> head = make_chain(n);
    CHECK(live() == live0 + n);
    WeakRef<Link> weak_head(head), weak_tail;
    {
        Link *p = head.get();
        while (p->next)
            p = p->next.get();
        weak_tail = WeakRef<Link>(Ref<Link>(p));
    }
    CHECK(run_on_small_stack(small_stack, [h = std::move(head)]() mutable { h.reset(); }));
    CHECK(Link::g_links_destroyed.load() == links0 + n); // each exactly once
    CHECK(live() == live0);
    CHECK(weak_head.expired() && weak_tail.expired()); // blocks kept by WeakRefs are fine
    weak_head = WeakRef<Link>();
    weak_tail = WeakRef<Link>();

    // Two chains on two small-stack threads at once: the queue is per thread.
    links0 = Link::g_links_destroyed.load();
    Ref<Link> a = make_chain(n / 2), b = make_chain(n / 2);
    std::atomic<int> started{0};
    auto release = [&started](Ref<Link> r) {
        return [&started, r = std::move(r)]() mutable {
            started.fetch_add(1);
            while (started.load() < 2)
                std::this_thread::yield();
            r.reset();
        };
    };
    bool ran_a = false, ran_b = false;
    std::thread ta([&] { ran_a = run_on_small_stack(small_stack, release(std::move(a))); });
    std::thread tb([&] { ran_b = run_on_small_stack(small_stack, release(std::move(b))); });
    ta.join();
    tb.join();
    CHECK(ran_a && ran_b);
    CHECK(Link::g_links_destroyed.load() == links0 + n);
    CHECK(live() == live0);

    // Destructors that make and drop objects while the queue drains, holding chains.
    int destroyed0 = g_destroyed.load();
    links0 = Link::g_links_destroyed.load();
    std::vector<Ref<Busy>> busy;
    for (int i = 0; i < 100; ++i) {
        busy.push_back(make_object<Busy>());
        busy.back()->chain = make_chain(1000);
    }
    Ref<Link> outer = make_chain(1);
    CHECK(run_on_small_stack(small_stack, [v = std::move(busy)]() mutable { v.clear(); }));
    CHECK(g_destroyed.load() == destroyed0 + 100); // every temporary destroyed once
    CHECK(Link::g_links_destroyed.load() == links0 + 100 * 1000);
    outer.reset();
    CHECK(live() == live0);
}

static void test_abi() {
    CHECK(tether::check_abi());
    CHECK(tether::detail::runtime_abi_version() == tether::abi_version);
}

// ---- main ----------------------------------------------------------------------------------

int main() {
    struct Case {
        const char *name;
        void (*fn)();
    };
    const Case cases[] = {
        {"layout", test_layout},
        {"counts", test_counts},
        {"weak_ref", test_weak_ref},
        {"alignment", test_alignment},
        {"padded_base", test_padded_base},
        {"opt_out", test_opt_out},
        {"constructor_throws", test_constructor_throws},
        {"block_cache", test_block_cache},
        {"concurrent_release", test_concurrent_release},
        {"concurrent_make", test_concurrent_make},
        {"made_by_tether", test_made_by_tether},
        {"count_bits_and_edges", test_count_bits_and_edges},
        {"edges_without_python", test_edges_without_python},
        {"trashcan", test_trashcan},
        {"abi", test_abi},
    };
    int64_t live0 = live();
    for (const Case &c : cases) {
        int failed_before = g_failed;
        c.fn();
        std::printf("%-24s %s\n", c.name, g_failed == failed_before ? "ok" : "FAILED");
    }
    CHECK(live() == live0); // nothing leaked across the whole run
    std::printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed == 0 ? 0 : 1;
}
