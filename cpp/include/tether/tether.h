// SPDX-License-Identifier: Apache-2.0
// cpp/include/tether/tether.h: umbrella header of the C++ core (no Python)
#pragma once

#include "header.h"
#include "object.h"
#include "ref.h"
#include "runtime.h"
#include "alloc.h"
