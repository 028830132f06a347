// SPDX-License-Identifier: Apache-2.0
// examples/host/host.cpp: a C++ program embedding CPython that checks tether objects it shares
//
//     tether_host [path/to/host_script.py]
//
// 1. builds a graph in C++ and gives it to host_script.run(); Python keeps some wrappers,
//    drops others and stores a Python subclass instance and a tether.testing.Inner in C++
//    fields;
// 2. checks in C++ that each object comes back as the same wrapper (same id) with its
//    attributes, and again on a second call into Python;
// 3. releases 200 objects whose wrappers only C++ keeps alive (the header's reference, while
//    C++ shares them) from 4 C++ threads while Python runs on the main thread: no thread
//    waits for the GIL (tether queues the releases and applies them), and every __del__ runs
//    once;
// 4. calls Py_FinalizeEx() while C++ still shares objects with their wrappers, then releases
//    them: the wrappers are orphaned (tether.stats()["orphaned"], T8), never touched;
// 5. starts Python again: importing tether there fails with an ImportError that says why
//    (the objects C++ kept name the first interpreter's wrappers and types).
// Prints "N passed, M failed" and exits non-zero on any failure.
#include "host_types.h"

#include <tether/nanobind.h>

#include <cstdio>
#include <string>
#include <thread>

namespace nb = nanobind;
using host::Graph;
using host::Node;
using tether::make_object;
using tether::Object;
using tether::Ref;

#ifndef HOST_PYTHONPATH
#  define HOST_PYTHONPATH ""
#endif
#ifndef HOST_SCRIPT_DIR
#  define HOST_SCRIPT_DIR "."
#endif

static int g_passed = 0, g_failed = 0;

static void check(bool ok, const char *expr, int line) {
    ok ? ++g_passed : ++g_failed;
    if (!ok)
        std::fprintf(stderr, "FAILED host.cpp:%d: %s\n", line, expr);
}
#define CHECK(cond) check(static_cast<bool>(cond), #cond, __LINE__)

static int64_t shared() { return tether::stats().shared; }
static int64_t bound() { return tether::stats().bound; }

static Ref<Graph> build_graph(int n) {
    Ref<Graph> g = make_object<Graph>();
    for (int i = 0; i < n; ++i)
        g->nodes.push_back(make_object<Node>(i));
    return g;
}

static uintptr_t id_of(nb::handle h) { return reinterpret_cast<uintptr_t>(h.ptr()); }

/// Steps 1 and 2: the graph goes to Python and comes back with the same wrappers.
static void round_trip(nb::module_ &script, const Ref<Graph> &graph) {
    int64_t shared0 = shared(), bound0 = bound();
    nb::dict result = nb::borrow<nb::dict>(script.attr("run")(graph));
    // The graph, its 6 nodes, the Tagged and the Inner got wrappers, and C++ holds each of
    // them besides its wrapper: every one is shared, so its header keeps the wrapper alive
    // whether Python kept it (nodes 0-1) or dropped it (the rest).
    CHECK(bound() == bound0 + 9);
    CHECK(shared() == shared0 + 9);
    script.attr("junk")();

    nb::list ids = nb::borrow<nb::list>(result["ids"]);
    for (size_t i = 0; i < graph->nodes.size(); ++i) {
        nb::object w = nb::cast(graph->nodes[i]);
        CHECK(id_of(w) == nb::cast<uintptr_t>(ids[i]));
        CHECK(nb::cast<int64_t>(w.attr("value")) == static_cast<int64_t>(i));
    }
    nb::object payload = nb::cast(graph->payload);
    CHECK(id_of(payload) == nb::cast<uintptr_t>(result["payload"]));
    CHECK(nb::cast<std::string>(payload.type().attr("__name__")) == "Tagged");
    CHECK(nb::cast<std::string>(payload.attr("tag")) == "from python");
    nb::object extra = nb::cast(graph->extra);
    CHECK(id_of(extra) == nb::cast<uintptr_t>(result["extra"]));
    CHECK(nb::isinstance(extra, nb::module_::import_("tether.testing").attr("Inner")));
    CHECK(nb::cast<int64_t>(extra.attr("value")) == 42);
    CHECK(nb::cast<bool>(script.attr("same_again")(graph, result)));
}

/// Step 3: Python-made objects, held only by C++, released on C++ threads (none waits for the
/// GIL: tether queues the releases and applies them) while the main thread runs Python code.
static void release_from_threads(nb::module_ &script, nb::module_ &types) {
    constexpr int n_threads = 4, per_thread = 50;
    std::vector<std::vector<Ref<Object>>> held(n_threads);
    {
        nb::list batch = nb::borrow<nb::list>(script.attr("make_batch")(n_threads * per_thread));
        for (size_t i = 0; i < batch.size(); ++i)
            held[i % n_threads].push_back(nb::cast<Ref<Object>>(batch[i]));
    }
    // The batch list is gone: the 200 wrappers live only through their headers.
    int64_t shared0 = shared(), bound0 = bound(), live0 = tether::stats().live;
    int deleted0 = nb::cast<int>(script.attr("deleted"));

    std::atomic<bool> go{false};
    host::threads_running.store(n_threads);
    std::vector<std::thread> threads;
    for (int t = 0; t < n_threads; ++t)
        threads.emplace_back([&, t] {
            while (!go.load())
                std::this_thread::yield();
            for (Ref<Object> &r : held[static_cast<size_t>(t)])
                r.reset(); // E2 -> T5: the hook takes the GIL, the wrapper dies (T6, T9)
            host::threads_running.fetch_sub(1);
        });
    go.store(true);
    int rounds = nb::cast<int>(script.attr("stress")(types.attr("threads_done")));
    {
        nb::gil_scoped_release no_gil; // the threads are done; join without blocking Python
        for (std::thread &th : threads)
            th.join();
    }
    std::printf("threads: released %d objects while Python ran %d rounds\n",
                n_threads * per_thread, rounds);
    // The threads never waited for the GIL: each handed its release to tether's queue, which
    // its drainer applies within about one GIL switch interval. Apply what is left now.
    tether::py::apply_deferred();
    // Free-threaded builds: a wrapper released on another thread (the drainer) is freed by the
    // thread that owns it, at its next eval-breaker check (biased reference counting); a
    // collection merges such pending objects now.
    nb::module_::import_("gc").attr("collect")();
    CHECK(nb::cast<int>(script.attr("deleted")) == deleted0 + n_threads * per_thread);
    CHECK(shared() == shared0 - n_threads * per_thread);
    CHECK(bound() == bound0 - n_threads * per_thread);
    CHECK(tether::stats().live == live0 - n_threads * per_thread);
}

static bool prepend_sys_path(const char *dir) {
    PyObject *path = PySys_GetObject("path"); // borrowed
    PyObject *entry = PyUnicode_FromString(dir);
    bool ok = path && entry && PyList_Insert(path, 0, entry) == 0;
    Py_XDECREF(entry);
    if (!ok)
        PyErr_Print();
    return ok;
}

/// Runs steps 1-3, and leaves `graph` holding objects whose wrappers their headers keep.
static bool run_python(const char *script_dir, const Ref<Graph> &graph) {
    // Plain C API first: the host's copy of nanobind is set up by importing host_types
    // (its NB_MODULE), and that import needs tether on sys.path.
    if (!prepend_sys_path(script_dir) || (HOST_PYTHONPATH[0] && !prepend_sys_path(HOST_PYTHONPATH)))
        return false;
    try {
        nb::module_ types = nb::module_::import_("host_types");
        nb::module_ script = nb::module_::import_("host_script");
        round_trip(script, graph);
        release_from_threads(script, types);
        return true;
    } catch (const std::exception &e) {
        std::fprintf(stderr, "host: Python raised: %s\n", e.what());
        return false;
    }
}

/// Step 4: after Py_FinalizeEx(), releasing objects whose wrappers C++ keeps orphans them.
static void release_after_finalize(Ref<Graph> &graph) {
    tether::Stats before = tether::stats();
    // The graph, its 6 nodes, the Tagged payload and the Inner all have wrappers, and C++
    // shares each of them: the header's reference is external to the interpreter, so no
    // finalization step freed them (nodes 0-1 lost host_script.kept's references only).
    CHECK(before.bound == 9);
    CHECK(before.shared == 9);
    int64_t live_before = before.live;
    graph.reset(); // E2 on each: T8, destroyed, wrapper memory never touched
    tether::Stats after = tether::stats();
    CHECK(after.orphaned == before.orphaned + 9);
    CHECK(after.bound == 0 && after.shared == 0);
    CHECK(after.live == live_before - 9);
    std::printf("after finalize: %lld shared wrappers orphaned, %lld objects still alive\n",
                static_cast<long long>(after.orphaned - before.orphaned),
                static_cast<long long>(after.live));
}

/// Step 5: a second interpreter in the same process cannot import tether: ImportError.
static void restart_python() {
    Py_InitializeEx(0);
    if (HOST_PYTHONPATH[0])
        prepend_sys_path(HOST_PYTHONPATH);
    PyObject *mod = PyImport_ImportModule("host_types"); // imports tether._core first
    CHECK(mod == nullptr);
    bool refused = false;
    if (!mod && PyErr_Occurred()) {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        // The module's own ImportError says "Encountered an error while initializing the
        // extension"; tether's reason is its cause (the ImportError of `import tether._core`).
        PyObject *e = value;
        while (e && !refused) {
            PyObject *text = PyObject_Str(e);
            const char *msg = text ? PyUnicode_AsUTF8(text) : nullptr;
            if (msg && std::string(msg).find("Python was finalized and started again") !=
                           std::string::npos) {
                refused = true;
                std::printf("second interpreter: %s\n", msg);
            }
            Py_XDECREF(text);
            PyObject *cause = PyException_GetCause(e); // new reference or null
            if (e != value)
                Py_DECREF(e);
            e = cause;
        }
        if (e && e != value)
            Py_DECREF(e);
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(tb);
    }
    Py_XDECREF(mod);
    CHECK(refused);
    CHECK(Py_FinalizeEx() == 0);
}

int main(int argc, char **argv) {
    std::string script_dir = argc > 1 ? argv[1] : HOST_SCRIPT_DIR;
    if (PyImport_AppendInittab("host_types", PyInit_host_types) != 0)
        return 2;
    Py_InitializeEx(0);

    Ref<Graph> graph = build_graph(6);
    CHECK(run_python(script_dir.c_str(), graph));

    CHECK(Py_FinalizeEx() == 0);
    release_after_finalize(graph);
    restart_python();

    std::printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed == 0 ? 0 : 1;
}
