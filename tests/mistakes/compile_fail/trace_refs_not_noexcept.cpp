// A trace_refs hook that may throw. Expected: "declare the hook noexcept"
#include <tether/nanobind.h>
#include <vector>
namespace nb = nanobind;
struct Graph : tether::Object {
    std::vector<tether::Ref<tether::Object>> nodes;
};
NB_MODULE(compile_fail_trace_refs_not_noexcept, m) {
    tether::init_module();
    tether::class_<Graph>(m, "Graph").trace_refs([](Graph &g, tether::RefTracer &refs) {
        refs(g.nodes);
    });
}
