// SPDX-License-Identifier: Apache-2.0
// bindings/src/testing_vectors.cpp: tether.testing.Samples, one numeric vector field per type
//
// Every item type a numeric vector field may have (fields.h, numeric_vector), for pickle's
// buffer path (reduce.cpp, vector_fields.cpp; tests/test_pickle_fast.py). The layout trap: a
// base class before Object, so the object's address is not the Object's, and the fields sit
// at offsets of Samples, not of Object. `tail` has an allocator of its own: not a numeric
// vector, so it travels as a list.
#include <tether/nanobind.h>
#include <nanobind/ndarray.h>

#include <cstdint>
#include <memory>
#include <vector>

namespace nb = nanobind;
using namespace nb::literals;
using tether::Object;

namespace tt {

struct SamplesPad {
    virtual ~SamplesPad() = default;
    double pad[3] = {1.0, 2.0, 3.0};
};

/// The standard allocator under another name: a vector with its own allocator type.
template <typename U> struct OwnAllocator : std::allocator<U> {
    template <typename V> struct rebind { using other = OwnAllocator<V>; };
    OwnAllocator() = default;
    template <typename V> OwnAllocator(const OwnAllocator<V> &) noexcept {}
};

struct Samples : SamplesPad, Object {
    std::vector<float> f32;
    std::vector<double> f64;
    std::vector<int8_t> i8;
    std::vector<int16_t> i16;
    std::vector<int32_t> i32;
    std::vector<int64_t> i64;
    std::vector<uint8_t> u8;
    std::vector<uint16_t> u16;
    std::vector<uint32_t> u32;
    std::vector<uint64_t> u64;
    std::vector<double, OwnAllocator<double>> tail;
    std::vector<double> fixed; // read-only from Python
};

/// A field that holds a NumPy array's memory instead of owning a copy: pickle hands the array
/// to NumPy, whose loads makes a view of the received buffer (no copy either way).
struct Grid : Object {
    nb::ndarray<nb::numpy, const double, nb::ndim<1>, nb::c_contig, nb::device::cpu> values;
};

} // namespace tt

void bind_vector_types(nb::module_ &m) {
    using namespace tt;
    tether::class_<Samples, Object>(m, "Samples",
                                    "One std::vector field per number type (pickle's buffers).")
        .def(tether::init<>())
        .def_field("f32", &Samples::f32)
        .def_field("f64", &Samples::f64)
        .def_field("i8", &Samples::i8)
        .def_field("i16", &Samples::i16)
        .def_field("i32", &Samples::i32)
        .def_field("i64", &Samples::i64)
        .def_field("u8", &Samples::u8)
        .def_field("u16", &Samples::u16)
        .def_field("u32", &Samples::u32)
        .def_field("u64", &Samples::u64)
        .def_field("tail", &Samples::tail, "A std::vector with its own allocator type.")
        .def_field_ro("fixed", &Samples::fixed, "Read-only: set by fill_fixed().")
        .def("fill_fixed", [](Samples &s, size_t n) { s.fixed.assign(n, 0.5); }, "n"_a,
             "Make `fixed` hold n items of 0.5 (C++).")
        .def("resize_f64", [](Samples &s, size_t n) { s.f64.resize(n); }, "n"_a,
             "Resize f64 from C++ (which nothing stops while a buffer of it is exported).")
        .def("f64_sum", [](const Samples &s) {
                 double t = 0;
                 for (double x : s.f64)
                     t += x;
                 return t;
             },
             "The sum of f64, read in C++.");

    tether::class_<Grid, Object>(m, "Grid",
                                 "An nb::ndarray field: a view of NumPy memory (pickle's "
                                 "zero-copy path both ways).")
        .def(tether::init<>())
        .def_field("values", &Grid::values, "1-d float64 C-contiguous NumPy array, or None.")
        .def("total", [](const Grid &g) {
                 double t = 0;
                 const double *p = g.values.data();
                 for (size_t i = 0; p && i < g.values.shape(0); ++i)
                     t += p[i];
                 return t;
             },
             "The sum of values, read in C++.");
}
