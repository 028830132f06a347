// A tether object returned by value.
// Expected: "tether objects cannot be returned to Python by value"
#include <tether/nanobind.h>
struct T : tether::Object {
    int x = 0;
};
NB_MODULE(compile_fail_return_by_value, m) {
    tether::init_module();
    tether::class_<T>(m, "T");
    m.def("make", [] { return T(); });
}
