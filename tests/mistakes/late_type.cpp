// SPDX-License-Identifier: Apache-2.0
// Binds the type mistake_late_field's fields name.
#include "late.h"

using namespace nanobind::literals;

NB_MODULE(mistake_late_type, m) {
    tether::init_module();
    tether::class_<Late>(m, "Late").def(tether::init<int64_t>(), "v"_a = 0).def_field("v", &Late::v);
}
