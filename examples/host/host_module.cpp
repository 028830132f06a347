// SPDX-License-Identifier: Apache-2.0
// examples/host/host_module.cpp: host_types, the host's own tether types bound as a built-in module
#include "host_types.h"

#include <tether/nanobind.h>

namespace nb = nanobind;
using namespace nb::literals;
using tether::Object;
using tether::Ref;

std::atomic<int> host::threads_running{0};

NB_MODULE(host_types, m) {
    using namespace host;
    m.doc() = "Types of the embedding host example (examples/host)";
    tether::init_module();
    // Wrappers C++ still shares at Py_FinalizeEx() keep their types alive on purpose (they
    // are orphaned, see docs/embedding.md); nanobind would report them as leaks.
    nb::set_leak_warnings(false);

    tether::class_<Node, Object>(m, "Node", "A node of the host's graph.")
        .def(tether::init<int64_t>(), "value"_a = 0)
        .def_field("value", &Node::value);

    tether::class_<Graph, Object>(m, "Graph", "The graph the host hands to Python.")
        .def(tether::init<>())
        .def_field("nodes", &Graph::nodes)
        .def_field("payload", &Graph::payload)
        .def_field("extra", &Graph::extra);

    m.def("threads_done", [] { return threads_running.load() == 0; },
          "True once every C++ release thread has finished.");
}
