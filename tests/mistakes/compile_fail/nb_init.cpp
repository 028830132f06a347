// nanobind's nb::init on a tether::class_. Expected: "write .def(tether::init<...>()) instead"
#include <tether/nanobind.h>
namespace nb = nanobind;
struct T : tether::Object {
    explicit T(int) {}
};
NB_MODULE(compile_fail_nb_init, m) {
    tether::init_module();
    tether::class_<T>(m, "T").def(nb::init<int>());
}
