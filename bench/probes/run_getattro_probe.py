# SPDX-License-Identifier: Apache-2.0
"""bench/probes/run_getattro_probe.py: times getattro_probe.{Getset,Fast} next to __slots__.

Same method as python -m tether.bench: timeit, statements unrolled x10, short samples,
round-robin rounds, minimum. Prints ns per `o.x`, `o.value` and `o.m()`.
"""
import timeit

import getattro_probe


class Slots:
    __slots__ = ("x", "value")

    def __init__(self, x, value):
        self.x, self.value = x, value

    def m(self):
        return self


def main(rounds: int = 300) -> None:
    held = object()
    objs = {"slots": Slots(held, 1), "getset": getattro_probe.Getset(held, 1),
            "fast": getattro_probe.Fast(held, 1)}
    timers = [(f"{name}: o.{expr}", timeit.Timer("\n".join([f"o.{expr}"] * 10), globals={"o": o}))
              for name, o in objs.items() for expr in ("x", "value", "m()")]
    best = {k: float("inf") for k, _ in timers}
    for _ in range(rounds):
        for k, t in timers:
            best[k] = min(best[k], t.timeit(2000) / 20000 * 1e9)
    for k, v in best.items():
        print(f"{k:18s} {v:6.1f} ns")


if __name__ == "__main__":
    main()
