// A std::vector<std::optional<double>> field without <nanobind/stl/optional.h>.
// Expected: "#include <nanobind/stl/optional.h>"
#include <tether/nanobind.h>
#include <optional>
#include <vector>
struct T : tether::Object {
    std::vector<std::optional<double>> values;
};
NB_MODULE(compile_fail_nested_missing_caster, m) {
    tether::init_module();
    tether::class_<T>(m, "T").def_field("values", &T::values);
}
