// SPDX-License-Identifier: Apache-2.0
// A tether type bound with nanobind's nb::class_ (a habit): ImportError at import, naming it.
#include <tether/nanobind.h>

namespace nb = nanobind;

struct Counter : tether::Object {
    int64_t n = 0;
    explicit Counter(int64_t v = 0) : n(v) {}
};

NB_MODULE(mistake_plain_nb_class, m) {
    tether::init_module();
    nb::class_<Counter>(m, "Counter").def(nb::init<int64_t>()).def_rw("n", &Counter::n);
}
