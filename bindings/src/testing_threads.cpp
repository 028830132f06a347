// SPDX-License-Identifier: Apache-2.0
// bindings/src/testing_threads.cpp: tether.testing's C++ threads at the count's edges
//
// For tests/test_gil_free_edges.py: std::threads that drop or take counts while the calling
// thread keeps the GIL, while Python runs, and while the interpreter finalizes.
#include <tether/nanobind.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

namespace nb = nanobind;
using namespace nb::literals;
using tether::make_object;
using tether::Object;
using tether::Ref;
using tether::WeakRef;

namespace tt {

std::atomic<int64_t> g_probes_destroyed{0};
std::atomic<Object *> g_held_raw{nullptr};
std::atomic<bool> g_destroyed_while_held{false};

/// Counts its destructions, and notices being destroyed while a C++ thread holds it.
struct Probe : Object {
    int64_t value;
    explicit Probe(int64_t v = 0) : value(v) {}
    ~Probe() override {
        g_probes_destroyed.fetch_add(1);
        if (g_held_raw.load() == this)
            g_destroyed_while_held.store(true);
    }
};

/// A C++-only holder (never wrapped): dropping it drops what it holds from its destructor.
struct Keeper : Object {
    Ref<Object> kept;
    explicit Keeper(Ref<Object> k) : kept(std::move(k)) {}
};

WeakRef<Object> *g_weak = new WeakRef<Object>(); // never destroyed: threads outlive Python
Ref<Object> *g_held = new Ref<Object>();
std::atomic<int64_t> g_drop_ns{0};
std::atomic<bool> g_storm_stop{false};

int64_t now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

/// At process exit (after Py_FinalizeEx): was the object a thread held destroyed under it?
void report_held_at_exit() {
    if (!g_held_raw.load())
        return;
    std::printf("held at exit: %s\n", g_destroyed_while_held.load() ? "DESTROYED" : "ok");
    std::fflush(stdout);
}

} // namespace tt

void bind_thread_types(nb::module_ &m) {
    using namespace tt;
    tether::class_<Probe>(m, "Probe", "Inner-like; counts its destructions (probes_destroyed()).")
        .def(tether::init<int64_t>(), "value"_a = 0)
        .def_field("value", &Probe::value);

    m.def("probes_destroyed", [] { return g_probes_destroyed.load(); },
          "How many Probe objects C++ has destroyed.");
    m.def("join_release_holding_gil",
          [](nb::handle box) {
              // box.value's reference, taken here and dropped by a std::thread that this
              // thread joins without releasing the GIL (E2 on a thread that cannot run Python).
              Ref<Object> taken = nb::cast<Ref<Object>>(box.attr("value"));
              box.attr("value") = nb::none();
              std::thread t([r = std::move(taken)]() mutable { r.reset(); });
              t.join(); // the GIL stays held: a thread that waited for it would never return
          },
          "box"_a,
          "Drop box.value's reference on a std::thread joined while holding the GIL.");
    m.def("join_cascade_holding_gil",
          [](nb::handle box) {
              // A C++-only Keeper takes box.value's reference; a thread drops the Keeper, whose
              // destructor drops the object's last reference besides its wrapper's (E2 inside
              // a destructor), joined without releasing the GIL.
              Ref<Keeper> keeper = make_object<Keeper>(nb::cast<Ref<Object>>(box.attr("value")));
              box.attr("value") = nb::none();
              std::thread t([k = std::move(keeper)]() mutable { k.reset(); });
              t.join();
          },
          "box"_a, "Drop box.value through a C++-only holder's destructor on a std::thread "
                   "joined while holding the GIL.");
    m.def("release_later_in_thread",
          [](nb::handle box, int64_t delay_us) {
              Ref<Object> taken = nb::cast<Ref<Object>>(box.attr("value"));
              box.attr("value") = nb::none();
              std::thread([r = std::move(taken), delay_us]() mutable {
                  std::this_thread::sleep_for(std::chrono::microseconds(delay_us));
                  g_drop_ns.store(now_ns());
                  r.reset();
              }).detach();
          },
          "box"_a, "delay_us"_a,
          "Drop box.value's reference on a detached std::thread after delay_us; "
          "last_drop_ns() says when (time.monotonic_ns() clock).");
    m.def("last_drop_ns", [] { return g_drop_ns.load(); });
    m.def("keep_weak_object", [](Object *o) { *g_weak = WeakRef<Object>(o); }, "obj"_a.none(),
          "Keep a weak link to obj in C++ (lock_weak_in_thread() locks it on a thread).");
    m.def("lock_weak_in_thread",
          [] {
              // E1 on a std::thread (joined with the GIL released): the Ref it gets is kept in
              // C++ until the process exits, which reports whether the object survived.
              static bool registered = (std::atexit(&report_held_at_exit), true);
              (void) registered;
              nb::gil_scoped_release no_gil;
              std::thread([] {
                  Ref<Object> r = g_weak->lock();
                  g_held_raw.store(r.get());
                  *g_held = std::move(r);
              }).join();
          },
          "Lock the kept weak link on a std::thread and keep the Ref in C++ until exit.");
    m.def("release_in_thread_unjoined",
          [](nb::handle box) {
              Ref<Object> taken = nb::cast<Ref<Object>>(box.attr("value"));
              box.attr("value") = nb::none();
              nb::gil_scoped_release no_gil;
              std::thread([r = std::move(taken)]() mutable { r.reset(); }).join();
          },
          "box"_a, "Drop box.value's reference on a std::thread (joined with the GIL released).");
    m.def("start_weak_storm",
          [](Object *target, int threads, int64_t millis) {
              // Threads that lock and drop a weak link to `target` in a loop (E1 and E2 each
              // time while only its wrapper holds it) for `millis` ms, never joined: the
              // script may end (and the interpreter finalize) while they run.
              g_storm_stop.store(false);
              auto *weak = new WeakRef<Object>(target); // leaked: the threads outlive Python
              for (int i = 0; i < threads; ++i)
                  std::thread([weak, millis] {
                      int64_t end = now_ns() + millis * 1000000;
                      while (now_ns() < end && !g_storm_stop.load()) {
                          Ref<Object> r = weak->lock();
                          if (!r)
                              break;
                      }
                  }).detach();
          },
          "target"_a, "threads"_a, "millis"_a,
          "Detached std::threads locking and dropping a weak link to target for millis ms.");
}
