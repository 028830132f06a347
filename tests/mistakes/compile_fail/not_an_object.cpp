// tether::class_ of a type that does not derive from tether::Object.
// Expected: "T must derive from tether::Object"
#include <tether/nanobind.h>
struct Plain {
    int x = 0;
};
NB_MODULE(compile_fail_not_an_object, m) {
    tether::init_module();
    tether::class_<Plain>(m, "Plain");
}
