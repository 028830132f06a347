// tether::class_<T, Base> whose Base is not a tether type.
// Expected: "Base must be a tether type"
#include <tether/nanobind.h>
struct Mixin {
    virtual ~Mixin() = default;
};
struct T : Mixin, tether::Object {};
NB_MODULE(compile_fail_base_not_an_object, m) {
    tether::init_module();
    tether::class_<T, Mixin>(m, "T");
}
