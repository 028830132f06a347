// SPDX-License-Identifier: Apache-2.0
// bindings/src/testing_cycles.cpp: tether.testing's types and threads for tests/test_cycles.py
//
// Knot holds other objects through every traced field kind (Ref, std::optional<Ref>,
// std::vector<Ref>); a C++ global holds objects like a C++ cache would; std::threads walk
// Refs into a cycle, or copy a field through a raw pointer, while Python collects.
#include <tether/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <stdexcept>
#include <mutex>
#include <optional>
#include <random>
#include <thread>
#include <vector>

namespace nb = nanobind;
using namespace nb::literals;
using tether::make_object;
using tether::Object;
using tether::Ref;
using tether::WeakRef;

namespace tt_cycles {

/// One owning field of each traced kind, and a weak one (never traced).
struct Knot : Object {
    Ref<Object> next;
    std::optional<Ref<Object>> maybe;
    std::vector<Ref<Object>> many;
    WeakRef<Object> weak;
    explicit Knot(Ref<Object> n) : next(std::move(n)) {}
};

/// Keeps its references in members no field exposes (a registry keyed by name, a spare):
/// the collector sees them through the type's trace_refs hook.
struct Registry : Object {
    std::map<std::string, Ref<Object>> by_name;
    std::optional<Ref<Object>> spare;
};

/// Objects C++ holds (a cache, a registry): GIL held while it changes.
std::vector<Ref<Object>> *g_cycle_globals = new std::vector<Ref<Object>>();

struct CycleThreads {
    std::vector<std::thread> threads;
    std::atomic<bool> stop{false};
    std::atomic<int64_t> violations{0};
    std::atomic<int64_t> steps{0};
};
CycleThreads *g_cycle_threads = nullptr;

void spin(std::minstd_rand &rng, unsigned max) {
    unsigned n = rng() % max;
    for (volatile unsigned i = 0; i < n; i = i + 1) {
    }
}

/// Walks start -> next -> next ... owning a count at every instant (copy the next, then drop
/// the current), sometimes holding an extra copy for a while; a Knot whose `next` is empty
/// while the thread holds a count on it was cleared by a collection: a wrong collection.
/// Holds what it reached last until stopped.
void walker(CycleThreads *ct, Ref<Object> cur, unsigned seed) {
    std::minstd_rand rng(seed);
    while (!ct->stop.load(std::memory_order_relaxed)) {
        auto *l = dynamic_cast<Knot *>(cur.get());
        if (!l) { // the end of the walk: hold it
            std::this_thread::yield();
            continue;
        }
        Ref<Object> nxt = l->next;
        if (!nxt) {
            ct->violations.fetch_add(1);
            break;
        }
        if (rng() & 1) {
            Ref<Object> extra = nxt; // copied and dropped again
            spin(rng, 2000);
        }
        spin(rng, 4000);
        cur = std::move(nxt); // drops the previous one (an E2, queued, when it is the last)
        ct->steps.fetch_add(1, std::memory_order_relaxed);
    }
    // Hold until stopped, then drop on this thread (without the GIL: queued).
    while (!ct->stop.load(std::memory_order_relaxed))
        std::this_thread::yield();
}

/// Copies and drops `raw->next` through a raw pointer, as long as Python keeps `raw` alive.
void copier(CycleThreads *ct, Knot *raw, unsigned seed) {
    std::minstd_rand rng(seed);
    while (!ct->stop.load(std::memory_order_relaxed)) {
        Ref<Object> c = raw->next;
        if (!c) {
            ct->violations.fetch_add(1);
            break;
        }
        spin(rng, 3000);
        ct->steps.fetch_add(1, std::memory_order_relaxed);
    }
}

void start(std::function<void(CycleThreads *, unsigned)> body, int n) {
    if (g_cycle_threads)
        throw std::runtime_error("cycle threads already running");
    auto *ct = new CycleThreads();
    g_cycle_threads = ct;
    static std::atomic<unsigned> seeds{1};
    for (int i = 0; i < n; ++i)
        ct->threads.emplace_back(body, ct, seeds.fetch_add(7919));
}

} // namespace tt_cycles

void bind_cycle_types(nb::module_ &m) {
    using namespace tt_cycles;
    tether::class_<Knot, Object>(m, "Knot",
                                 "Holds objects through every traced field kind (cycles tests).")
        .def(tether::init<Ref<Object>>(), "next"_a.none() = nb::none())
        .def_field("next", &Knot::next, "An owning link (Ref<Object>).")
        .def_field("maybe", &Knot::maybe, "An owning optional link.")
        .def_field("many", &Knot::many, "Owning links (std::vector<Ref<Object>>).")
        .def_field("weak", &Knot::weak, "A weak link (never part of a cycle).");

    tether::class_<Registry, Object>(m, "Registry",
                                     "Keeps objects in C++ members that are not fields; its "
                                     "trace_refs hook reports them to the collector.")
        .def(tether::init<>())
        .def("put", [](Registry &r, const std::string &name, Ref<Object> o) {
                r.by_name[name] = std::move(o);
            }, "name"_a, "obj"_a)
        .def("get", [](Registry &r, const std::string &name) -> Ref<Object> {
                auto it = r.by_name.find(name);
                return it == r.by_name.end() ? Ref<Object>() : it->second;
            }, "name"_a)
        .def("set_spare", [](Registry &r, Ref<Object> o) { r.spare = std::move(o); }, "obj"_a)
        .def("__len__", [](Registry &r) { return r.by_name.size() + (r.spare ? 1 : 0); })
        .trace_refs([](Registry &r, tether::RefTracer &refs) noexcept {
            for (auto &entry : r.by_name)
                refs(entry.second);
            refs(r.spare);
            if (refs.clearing())
                r.by_name.clear();
        });

    m.def("link_through_cpp", [](Ref<Object> target, int n) {
            // n Knots that Python never sees (no wrapper), the last holding target.
            Ref<Object> cur = std::move(target);
            for (int i = 0; i < n; ++i)
                cur = make_object<Knot>(std::move(cur));
            return make_object<Knot>(std::move(cur));
        }, "target"_a, "n"_a = 1,
        "A Knot whose next is a chain of n Knots only C++ holds, ending at target.");
    m.def("hold_globally", [](Ref<Object> o) { g_cycle_globals->push_back(std::move(o)); },
          "obj"_a, "A C++ global keeps obj (release_globals() lets go).");
    m.def("release_globals", [] {
            std::vector<Ref<Object>> drop;
            drop.swap(*g_cycle_globals);
        }, "Let go of every object hold_globally() kept.");
    m.def("cycle_calibration", [] { return tether::py::cycle_calibration(); },
          "How many visitor functions tether found subtract references (0: uncalibrated).");
    m.def("start_cycle_walkers", [](Ref<Object> start, int n) {
            tt_cycles::start([start](CycleThreads *ct, unsigned seed) { walker(ct, start, seed); }, n);
        }, "start"_a, "n"_a,
        "n std::threads each walk start.next.next... owning a count at every instant, then "
        "hold the end until stop_cycle_threads().");
    m.def("start_cycle_copiers", [](Knot &raw, int n) {
            Knot *p = &raw;
            tt_cycles::start([p](CycleThreads *ct, unsigned seed) { copier(ct, p, seed); }, n);
        }, "link"_a, "n"_a,
        "n std::threads copy and drop link.next through a raw pointer (Python keeps link "
        "alive until stop_cycle_threads()).");
    m.def("cycle_thread_steps", [] {
            return g_cycle_threads ? g_cycle_threads->steps.load() : int64_t(0);
        }, "Steps the running threads took so far.");
    m.def("stop_cycle_threads", [] {
            CycleThreads *ct = g_cycle_threads;
            if (!ct)
                return std::make_tuple(int64_t(0), int64_t(0));
            ct->stop.store(true);
            {
                nb::gil_scoped_release release; // they drop references as they end
                for (auto &t : ct->threads)
                    t.join();
            }
            auto r = std::make_tuple(ct->violations.load(), ct->steps.load());
            g_cycle_threads = nullptr;
            delete ct;
            return r;
        }, "Stop and join the threads: (wrong collections seen, steps taken).");
}
