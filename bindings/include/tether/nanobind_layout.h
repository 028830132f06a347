// SPDX-License-Identifier: Apache-2.0
// bindings/include/tether/nanobind_layout.h: compile-time proof that nanobind reads tether wrappers as tether writes them
//
// tether allocates and fills nanobind's instance record itself (tether/python.h, struct
// Wrapper): PyObject_HEAD, the 32-bit offset, the 32-bit nb_inst_state and then the object
// pointer, which nanobind follows in its indirect mode. That is only right if nanobind's own
// `nb_inst` has the same fields at the same places. This header checks it against
// nanobind's private header src/nb_internals.h with static_assert, so a module cannot be
// compiled against a nanobind whose layout differs.
//
// Include it in exactly the translation units that have nanobind's src/ and
// ext/robin_map/include on their include path: tether._core's runtime_api.cpp, and the
// init file tether_add_module() adds to every downstream module (tether/module_init.h).
// It also names the nanobind internals key of the translation unit
// (TETHER_NB_INTERNALS_KEY); modules whose key differs from tether._core's do not share
// nanobind's type registry with tether, and the import-time check refuses them.
#pragma once

#include <nanobind/nanobind.h>
#include <nb_internals.h> // nanobind/src: needs NB_DIR/src and NB_DIR/ext/robin_map/include
#include <tether/python.h>

#include <cstddef>
#include <cstdint>

// ---- verified versions ------------------------------------------------------------------
// Each version below was built against and passed tether's tests (docs/shipping.md, "nanobind
// versions"). To add one: build tether with it, let the asserts below pass, run the suite.
#define TETHER_NB_VERSION_VERIFIED                                                          \
    (NB_VERSION_MAJOR == 3 && (NB_VERSION_MINOR == 0 || NB_VERSION_MINOR == 1))
static_assert(TETHER_NB_VERSION_VERIFIED,
              "tether: this nanobind version's instance layout has not been verified against "
              "tether's Wrapper (tether/python.h); use nanobind 3.0.x or 3.1.x "
              "(pip install 'nanobind>=3.0.1,<3.2')");

#if NB_VERSION_MAJOR >= 3 || (NB_VERSION_MAJOR == 2 && NB_VERSION_MINOR >= 13)
namespace tether::nb_layout {

using NbInst = nanobind::detail::nb_inst;
using NbState = nanobind::detail::nb_inst_state;
using py::InstState;
using py::Wrapper;

// ---- the record ---------------------------------------------------------------------------
static_assert(offsetof(NbInst, offset) == offsetof(Wrapper, offset),
              "tether writes nb_inst::offset at Wrapper::offset");
static_assert(offsetof(NbInst, state) == offsetof(Wrapper, state),
              "tether writes nb_inst::state at Wrapper::state");
static_assert(sizeof(NbInst) == offsetof(Wrapper, object),
              "the object pointer must follow nb_inst directly: tether sets offset to it and "
              "direct = 0, so nanobind dereferences self + offset");
static_assert(sizeof(NbState) == sizeof(InstState) && sizeof(NbState) == 4,
              "tether writes the state word as one 32-bit InstState");

// ---- the state word: every field at the same bits, the same state values ----------------
template <typename S> constexpr uint32_t bits_of(const S &s) {
    return __builtin_bit_cast(uint32_t, s);
}
#define TETHER_NB_SAME_FIELD(field, value)                                                  \
    static_assert(bits_of([] { NbState s{}; s.field = value; return s; }()) ==               \
                      bits_of([] { InstState s{}; s.field = value; return s; }()),           \
                  "nb_inst_state::" #field " (= " #value ") is not where tether writes it")
TETHER_NB_SAME_FIELD(state, NbState::state_uninitialized);
TETHER_NB_SAME_FIELD(state, NbState::state_relinquished);
TETHER_NB_SAME_FIELD(state, NbState::state_ready);
TETHER_NB_SAME_FIELD(direct, 1);
TETHER_NB_SAME_FIELD(internal, 1);
TETHER_NB_SAME_FIELD(destruct, 1);
TETHER_NB_SAME_FIELD(cpp_delete, 1);
TETHER_NB_SAME_FIELD(intrusive, 1);
TETHER_NB_SAME_FIELD(clear_keep_alive, 1);
#undef TETHER_NB_SAME_FIELD
static_assert(NbState::state_uninitialized == py::state_uninitialized &&
                  NbState::state_relinquished == py::state_relinquished &&
                  NbState::state_ready == py::state_ready,
              "tether's state values must be nanobind's");
static_assert(bits_of(InstState{}) == 0 && bits_of(NbState{}) == 0,
              "InstState{} is nanobind's 'external, indirect, not destructed, not deleted'");

} // namespace tether::nb_layout
#endif

#define TETHER_NB_VERSION_STR                                                               \
    NB_TOSTRING(NB_VERSION_MAJOR) "." NB_TOSTRING(NB_VERSION_MINOR) "." NB_TOSTRING(          \
        NB_VERSION_PATCH)

// ---- the internals key --------------------------------------------------------------------
// nanobind keeps one type registry per key (and domain) in the interpreter; a module sees
// tether.Object only if it uses the registry tether._core registered it in.
#if defined(NB_INTERNALS_KEY)
#  define TETHER_NB_KEY_BASE NB_INTERNALS_KEY
#else // not a verified version (refused above): any key that differs from tether's
#  define TETHER_NB_KEY_BASE "nanobind-" TETHER_NB_VERSION_STR
#endif
#define TETHER_NB_INTERNALS_KEY TETHER_NB_KEY_BASE "/domain=" NB_DOMAIN_STR
