// A std::function field without <nanobind/stl/function.h>.
// Expected: "#include <nanobind/stl/function.h>"
#include <tether/nanobind.h>
#include <functional>
struct T : tether::Object {
    std::function<void()> callback;
};
NB_MODULE(compile_fail_missing_caster, m) {
    tether::init_module();
    tether::class_<T>(m, "T").def_field("callback", &T::callback);
}
