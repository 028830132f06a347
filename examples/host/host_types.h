// SPDX-License-Identifier: Apache-2.0
// examples/host/host_types.h: the host's tether types, shared by main() and its built-in module
#pragma once

#include <tether/tether.h>

#include <Python.h>

#include <atomic>
#include <cstdint>
#include <vector>

namespace host {

struct Node : tether::Object {
    int64_t value;
    explicit Node(int64_t v = 0) : value(v) {}
};

/// The object graph the host builds in C++ and hands to Python.
struct Graph : tether::Object {
    std::vector<tether::Ref<Node>> nodes;
    tether::Ref<tether::Object> payload; ///< Python stores a subclass instance here
    tether::Ref<tether::Object> extra;   ///< Python stores a tether.testing.Inner here
};

/// C++ release threads still running (host_types.threads_done() reads it from Python).
extern std::atomic<int> threads_running;

} // namespace host

/// The built-in module `host_types` (registered with PyImport_AppendInittab before startup).
extern "C" PyObject *PyInit_host_types();
