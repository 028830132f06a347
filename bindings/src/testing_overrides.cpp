// SPDX-License-Identifier: Apache-2.0
// bindings/src/testing_overrides.cpp: tether.testing's trampoline probes (tests/test_overrides.py,
// tests/test_out_of_memory.py)
//
// Greeter has one virtual, greet(who), and C++ functions that call it the ways a real program
// does: once, twice in a row from C++ (a re-entrant call when the override itself calls
// them), and on a std::thread. The thread one keeps a Python thread state for the thread's
// whole life, made before `arm` runs: a failing allocation armed there (by
// _testcapi.set_nomemory) then hits the trampoline's own work, not the allocation of a
// thread state in PyGILState_Ensure, which CPython 3.11 does not survive (it dereferences
// the null thread state).
#include <tether/nanobind.h>

#include <exception>
#include <string>
#include <thread>
#include <vector>

namespace nb = nanobind;
using namespace nb::literals;
using tether::Object;
using tether::Ref;

namespace to {

struct Greeter : Object {
    std::string name;
    explicit Greeter(std::string n = "") : name(std::move(n)) {}
    virtual std::string greet(const std::string &who) const { return name + " greets " + who; }
};
struct PyGreeter : Greeter {
    TETHER_TRAMPOLINE(Greeter);
    std::string greet(const std::string &who) const override { TETHER_OVERRIDE(greet, who); }
};

/// greet(who) on a std::thread holding a Python thread state of its own (see the top of
/// this file): `arm()` runs first, with the GIL; then the calls, `times` of them, without the
/// GIL (each dispatch takes it); then `disarm()`. Exceptions are rethrown on the caller.
std::vector<std::string> greet_on_attached_thread(Ref<Greeter> g, const std::string &who,
                                                  int64_t times, nb::object arm,
                                                  nb::object disarm) {
    std::vector<std::string> out;
    std::exception_ptr error;
    {
        nb::gil_scoped_release no_gil;
        std::thread t([&] {
            PyGILState_STATE state = PyGILState_Ensure();
            try {
                arm();
            } catch (...) {
                error = std::current_exception();
            }
            if (!error) {
                PyThreadState *ts = PyEval_SaveThread();
                try {
                    for (int64_t i = 0; i < times; ++i)
                        out.push_back(g->greet(who));
                } catch (...) {
                    error = std::current_exception();
                }
                PyEval_RestoreThread(ts);
            }
            try {
                disarm();
            } catch (nb::python_error &) { // (a failure armed for later): the caller disarms
            }
            PyGILState_Release(state);
        });
        t.join();
    }
    if (error)
        std::rethrow_exception(error);
    return out;
}

} // namespace to

void bind_override_types(nb::module_ &m) {
    using namespace to;
    tether::class_<Greeter, Object, PyGreeter>(
        m, "Greeter", "One virtual, greet(who), for the override tests (testing_overrides.cpp).")
        .def(tether::init<std::string>(), "name"_a = "")
        .def("greet", &Greeter::greet, "who"_a, "The virtual: '<name> greets <who>' in C++.")
        .def_field_ro("name", &Greeter::name);
    m.def("greeter_greet", [](const Greeter &g, const std::string &who) { return g.greet(who); },
          "greeter"_a, "who"_a, "greeter.greet(who), called from C++ through the vtable.");
    m.def("greet_on_attached_thread", &greet_on_attached_thread, "greeter"_a, "who"_a,
          "times"_a, "arm"_a, "disarm"_a,
          "greeter.greet(who) `times` times on a std::thread that keeps one Python thread "
          "state: arm() first (with the GIL), disarm() last.");
}
