// SPDX-License-Identifier: Apache-2.0
// Fields naming a type another module binds (mistake_late_type), imported after this one.
#include "late.h"

#include <nanobind/stl/optional.h>

#include <optional>
#include <vector>

struct Owner : tether::Object {
    tether::Ref<Late> late;
    std::vector<tether::Ref<Late>> lates;
    std::optional<tether::Ref<Late>> maybe;
};

NB_MODULE(mistake_late_field, m) {
    tether::init_module();
    tether::class_<Owner>(m, "Owner")
        .def(tether::init<>())
        .def_field("late", &Owner::late)
        .def_field("lates", &Owner::lates)
        .def_field("maybe", &Owner::maybe);
}
