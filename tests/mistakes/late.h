// SPDX-License-Identifier: Apache-2.0
// A type bound by mistake_late_type and named by fields of mistake_late_field, which may be
// imported first.
#pragma once
#include <tether/nanobind.h>

struct Late : tether::Object {
    int64_t v = 0;
    explicit Late(int64_t x = 0) : v(x) {}
};
