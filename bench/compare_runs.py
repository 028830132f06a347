# SPDX-License-Identifier: Apache-2.0
"""Row ratios of `python -m tether.bench --json` runs of two builds, side by side.

    python bench/compare_runs.py before-1.json before-2.json -- after-1.json after-2.json

Each row is a ratio within one run (tether's time over its baseline's, measured in the same
process), so runs taken at different moments compare; the table gives every run's ratio and
the change of the medians, after / before. Used for issue 9's "no row regresses beyond 5 %".
"""
from __future__ import annotations

import json
import statistics
import sys

ROWS = [  # (row, tether case, baseline case)
    ("hot a.x / nb-intrusive", "tether.hot", "nb-intrusive.hot"),
    ("hot a.x / int.real", "tether.hot", "cpython.getset"),
    ("revive a.x / nb-ref cold", "tether.revive", "nb-ref.cold"),
    ("i.value / nb i.value", "tether.int", "nb.int"),
    ("Inner(1) / nb Plain(1)", "tether.new", "nb.new"),
    ("Inner(1) / nb Boxed(1)", "tether.new", "nb.boxed"),
    ("nb Boxed(1) / nb Plain(1)", "nb.boxed", "nb.new"),
    ("echo(x) / nb echo", "tether.echo", "nb.echo"),
    ("echo(x) Ref<T> / nb::ref<T> echo", "tether.echo", "nb-intrusive.echo"),
    ("Inner(1) / nb IntrInner(1)", "tether.new", "nb-intrusive.new"),
    ("echo_inner / nb echo", "tether.echo_inner", "nb.echo"),
    ("untied read / nb-ref cold", "untied.read", "nb-ref.cold"),
    ("untied new / nb Plain(1)", "untied.new", "nb.new"),
]


def ratios(path: str) -> dict[str, float]:
    d = json.load(open(path))
    t = {k: v["min_ns"] for k, v in d["times"].items()}
    out = {}
    for name, a, b in ROWS:
        if a in t and b in t:
            out[name] = t[a] / t[b]
    s = d.get("scaling", {})
    s = {k: v["min_ns"] for k, v in s.items()}
    if "tether.hot@1000000" in s and "tether.hot@1000" in s:
        out["scaling hot 1e6 / 1e3"] = s["tether.hot@1000000"] / s["tether.hot@1000"]
    m = d.get("memory", {})
    if "tether" in m and "nb-ref" in m:
        get = lambda v: v["total"] if isinstance(v, dict) and "total" in v else v  # noqa: E731
        try:
            out["bytes / nb-ref"] = float(get(m["tether"])) / float(get(m["nb-ref"]))
        except (TypeError, ValueError):
            pass
    return out


def main(argv: list[str]) -> None:
    cut = argv.index("--")
    before = [ratios(p) for p in argv[:cut]]
    after = [ratios(p) for p in argv[cut + 1:]]
    print("| row | before (each run) | after (each run) | after / before (medians) |")
    print("|---|---|---|---:|")
    for name in before[0]:
        b = [r[name] for r in before if name in r]
        a = [r[name] for r in after if name in r]
        if not a:
            continue
        change = statistics.median(a) / statistics.median(b)
        print(f"| {name} | {' '.join(f'{x:.3f}' for x in b)} | {' '.join(f'{x:.3f}' for x in a)} "
              f"| {change:.3f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
