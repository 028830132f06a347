// SPDX-License-Identifier: Apache-2.0
// bindings/src/testing_lifetime.cpp: tether.testing's types for the lifetime tests (objects not
// made by make_object, very large objects, C++ chains, releases from C++ threads)
#include <tether/nanobind.h>

#include <atomic>
#include <stdexcept>
#include <thread>
#include <vector>

namespace nb = nanobind;
using namespace nb::literals;
using tether::make_object;
using tether::Object;
using tether::Ref;

namespace tt {

struct Leaf : Object {
    int64_t value;
    explicit Leaf(int64_t v = 0) : value(v) {}
};

/// An Object embedded by value in another object: not made by make_object.
struct Holder : Object {
    Leaf leaf{7};
};

/// Larger than the old 16-bit layout allowed (64 KiB).
struct Big : Object {
    char bytes[100000] = {};
    int64_t value;
    explicit Big(int64_t v = 0) : value(v) {}
};

/// A C++ singly linked chain: each link holds the next.
struct Link : Object {
    Ref<Link> next;
    int64_t value;
    explicit Link(int64_t v = 0, Ref<Link> n = {}) : next(std::move(n)), value(v) {}
};

} // namespace tt

void bind_lifetime_types(nb::module_ &m) {
    using namespace tt;
    tether::class_<Leaf, Object>(m, "Leaf", "An Inner-like leaf, also embedded in Holder.")
        .def(tether::init<int64_t>(), "value"_a = 0)
        .def_field("value", &Leaf::value);
    tether::class_<Holder, Object>(m, "Holder", "Holds a Leaf by value (not made by make_object).")
        .def(tether::init<>())
        .def("leaf_ref", [](Holder &h) -> Leaf & { return h.leaf; }, nb::rv_policy::reference,
             "The embedded Leaf as Leaf&: refused with TypeError.")
        .def("leaf_ptr", [](Holder &h) -> Leaf * { return &h.leaf; }, nb::rv_policy::reference,
             "The embedded Leaf as Leaf*: refused with TypeError.");
    m.def("race_weak_lock",
          [](int64_t rounds) {
              // Each round: a Leaf owned by its wrapper alone, a WeakRef to it, and a
              // std::thread that locks the WeakRef (then drops it) while this thread drops
              // the wrapper (T6). Whichever wins, the object is alive while locked and freed
              // exactly once. Returns how many rounds the thread's lock won.
              int64_t won = 0;
              nb::object type = nb::module_::import_("tether.testing").attr("Leaf");
              for (int64_t i = 0; i < rounds; ++i) {
                  nb::object w = type(i);
                  tether::WeakRef<Leaf> weak(nb::cast<Leaf *>(w));
                  std::atomic<int> go{0}, ready{0};
                  int64_t seen = -1;
                  std::thread t([&] {
                      ready.store(1, std::memory_order_release);
                      while (!go.load(std::memory_order_acquire)) {
                      }
                      for (int64_t k = 0; k < (i * 7) % 64; ++k) // vary the interleaving
                          ready.fetch_add(0, std::memory_order_relaxed);
                      Ref<Leaf> r = weak.lock();
                      weak.reset(); // the weak count goes back to 1 while r holds the object
                      if (r)
                          seen = r->value;
                  }); // r's release may need the GIL (E1/E2 hooks): released below
                  while (!ready.load(std::memory_order_acquire)) {
                  }
                  go.store(1, std::memory_order_release);
                  w.reset(); // T6 (and T9 if the thread has not locked yet)
                  {
                      nb::gil_scoped_release no_gil;
                      t.join();
                  }
                  if (seen != -1) {
                      if (seen != i)
                          throw std::runtime_error("race_weak_lock: locked a wrong object");
                      ++won;
                  }
              }
              return won;
          },
          "rounds"_a);
    m.def("call_with_stack_leaf",
          [](nb::callable fn) {
              Leaf local(3);
              return fn(&local);
          },
          "fn"_a, "Call fn with a Leaf that lives on the C++ stack: refused with TypeError.");
    m.def("count_embedded",
          [] {
              // Counts taken and dropped on an object tether did not allocate never free it.
              Holder *h = new Holder();
              { Ref<Leaf> r(&h->leaf); }
              bool ok = h->leaf.use_count() == 0 && h->leaf.value == 7;
              delete h;
              return ok;
          },
          "Take and drop a Ref on an embedded Leaf; True if nothing was freed.");

    tether::class_<Big, Object>(m, "Big", "A 100,000-byte object.")
        .def(tether::init<int64_t>(), "value"_a = 0)
        .def_field("value", &Big::value)
        .def("size", [](Big &) { return sizeof(Big); });

    tether::class_<Link, Object>(m, "Link", "A link of a C++ chain (next is a Ref<Link>).")
        .def(tether::init<int64_t, Ref<Link>>(), "value"_a = 0, "next"_a.none() = nb::none())
        .def_field("next", &Link::next)
        .def_field("value", &Link::value);
    m.def("make_chain",
          [](int64_t n) {
              Ref<Link> head;
              for (int64_t i = 0; i < n; ++i)
                  head = make_object<Link>(i, std::move(head));
              return head;
          },
          "n"_a, "A chain of n Links made in C++ (no wrappers).");
    m.def("release_chain_in_thread",
          [](Ref<Link> &&head, size_t stack_bytes) {
              // Released on a std::thread whose stack is small: recursion would overflow it.
              nb::gil_scoped_release no_gil;
              pthread_attr_t attr;
              pthread_attr_init(&attr);
              pthread_attr_setstacksize(&attr, stack_bytes);
              struct Arg {
                  Ref<Link> head;
              } arg{std::move(head)};
              pthread_t t;
              auto body = [](void *p) -> void * {
                  static_cast<Arg *>(p)->head.reset();
                  return nullptr;
              };
              if (pthread_create(&t, &attr, body, &arg) != 0)
                  arg.head.reset();
              else
                  pthread_join(t, nullptr);
              pthread_attr_destroy(&attr);
          },
          "head"_a, "stack_bytes"_a = 256 * 1024,
          "Drop the chain (pass tether.move(head)) on a thread with a small stack.");
    m.def("release_in_small_stack",
          [](nb::object holder, const char *attr, size_t stack_bytes) {
              // Set holder.<attr> = None on a Python thread-free C++ thread with a small stack,
              // taking the GIL there: the release and every wrapper it frees run on that stack.
              struct Arg {
                  nb::object holder;
                  const char *attr;
              } arg{holder, attr};
              nb::gil_scoped_release no_gil;
              pthread_attr_t a;
              pthread_attr_init(&a);
              pthread_attr_setstacksize(&a, stack_bytes);
              pthread_t t;
              auto body = [](void *p) -> void * {
                  auto *arg = static_cast<Arg *>(p);
                  PyGILState_STATE g = PyGILState_Ensure();
                  if (PyObject_SetAttrString(arg->holder.ptr(), arg->attr, Py_None) != 0)
                      PyErr_Print();
                  PyGILState_Release(g);
                  return nullptr;
              };
              bool started = pthread_create(&t, &a, body, &arg) == 0;
              if (started)
                  pthread_join(t, nullptr);
              pthread_attr_destroy(&a);
              nb::gil_scoped_acquire gil;
              arg.holder.reset();
              if (!started)
                  throw std::runtime_error("pthread_create failed");
          },
          "holder"_a, "attr"_a, "stack_bytes"_a = 512 * 1024,
          "Set holder.<attr> = None on a C++ thread with a small stack (it takes the GIL).");
}
