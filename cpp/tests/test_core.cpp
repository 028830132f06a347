// SPDX-License-Identifier: Apache-2.0
// cpp/tests/test_core.cpp: C++ unit tests of the core (allocator, counts, header) without Python
//
// This program never starts an interpreter and does not link libpython: it is also the proof
// that libtether works in plain C++ (see README, "Plain C++ (no Python)"). Layout facts come
// from the banner in cpp/include/tether/header.h (I3, I4, I6, T10 are cited below).
#include <tether/tether.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <thread>
#include <vector>

using tether::make_object;
using tether::Object;
using tether::ObjectHeader;
using tether::Ref;
using tether::WeakRef;
using tether::WrapState;

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

    // The word round-trips a pointer and a state without touching the pointer (I5).
    alignas(8) static int64_t fake_wrapper = 0;
    uintptr_t w = ObjectHeader::encode(&fake_wrapper, WrapState::Parked);
    CHECK(ObjectHeader::wrapper_of(w) == &fake_wrapper);
    CHECK(ObjectHeader::state_of(w) == WrapState::Parked);
    CHECK(h->transition(h->load(), &fake_wrapper, WrapState::Bound));
    CHECK(!h->transition(0, nullptr, WrapState::Detached)); // stale expectation loses
    h->store(nullptr, WrapState::Detached);
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

/// T10 without Python: a PARKED word whose object loses its last count while no hook is
/// installed is orphaned (the wrapper pointer is never dereferenced, I5) and the object is
/// destroyed exactly once. This is what happens to objects released after Py_FinalizeEx().
static void test_orphan_without_python() {
    using tether::Counter;
    tether::Stats s0 = tether::stats();
    int destroyed0 = g_destroyed.load();
    alignas(8) static int64_t never_touched = 0x5a5a;

    Ref<Counted> r = make_object<Counted>(1);
    r->header()->store(&never_touched, WrapState::Parked);
    tether::detail::add_count(Counter::parked, 1); // what the bindings' T3 would have counted
    r.reset();
    tether::Stats s1 = tether::stats();
    CHECK(s1.orphaned == s0.orphaned + 1);
    CHECK(s1.parked == s0.parked);
    CHECK(g_destroyed.load() == destroyed0 + 1 && s1.live == s0.live);
    CHECK(never_touched == 0x5a5a);
    tether::detail::add_count(Counter::orphaned, -1); // leave the counters as we found them
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
        {"concurrent_release", test_concurrent_release},
        {"concurrent_make", test_concurrent_make},
        {"orphan_without_python", test_orphan_without_python},
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
