// SPDX-License-Identifier: Apache-2.0
// Fields holding a type nanobind cannot convert (never bound): reading one raises TypeError
// naming the field and its C++ type, not SystemError.
#include <tether/nanobind.h>

#include <vector>

namespace nb = nanobind;

struct Opaque {
    int x = 1;
};

struct Holder : tether::Object {
    std::vector<Opaque *> items;
    Opaque value;
    int64_t n = 3;
    Holder() {
        static Opaque shared;
        items.push_back(&shared);
    }
};

NB_MODULE(mistake_unconvertible_field, m) {
    tether::init_module();
    tether::class_<Holder>(m, "Holder")
        .def(tether::init<>())
        .def_field("items", &Holder::items)
        .def_field("value", &Holder::value)
        .def_field("n", &Holder::n);
}
