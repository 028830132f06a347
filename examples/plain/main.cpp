// SPDX-License-Identifier: Apache-2.0
// examples/plain/main.cpp: tether's C++ core in a program that never starts Python
//
// Objects made with make_object<T> carry the 8-byte header even here; it simply stays
// DETACHED because no wrapper is ever made. Counts, weak references and threads work as in
// any intrusive-pointer library.
#include <tether/tether.h>

#include <cstdio>
#include <thread>
#include <vector>

struct Point : tether::Object {
    double x, y;
    Point(double x_, double y_) : x(x_), y(y_) {}
};

struct Polygon : tether::Object {
    std::vector<tether::Ref<Point>> corners;
};

int main() {
    tether::Ref<Polygon> poly = tether::make_object<Polygon>();
    for (int i = 0; i < 4; ++i)
        poly->corners.push_back(tether::make_object<Point>(i, i * i));
    tether::WeakRef<Point> corner(poly->corners[1]);

    // Four threads share the polygon and drop their references concurrently.
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t)
        threads.emplace_back([copy = poly]() mutable { copy.reset(); });
    for (std::thread &t : threads)
        t.join();

    bool ok = poly.use_count() == 1 && !corner.expired() && corner.lock()->y == 1.0 &&
              tether::stats().live == 5 && tether::header_size<Point>() == 8;
    poly.reset(); // destroys the polygon and its corners
    ok = ok && corner.expired() && tether::stats().live == 0;
    std::printf("plain C++: header %zu bytes, %s\n", tether::header_size<Point>(),
                ok ? "ok" : "FAILED");
    return ok ? 0 : 1;
}
