// SPDX-License-Identifier: Apache-2.0
// tether::init_module() left out: ImportError at the first tether::class_, naming the fix.
#include <tether/nanobind.h>

struct Thing : tether::Object {
    int64_t n = 0;
};

NB_MODULE(mistake_no_init_module, m) {
    tether::class_<Thing>(m, "Thing").def(tether::init<>()).def_field("n", &Thing::n);
}
