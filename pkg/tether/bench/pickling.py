# SPDX-License-Identifier: Apache-2.0
"""tether.bench.pickling: pickle and deepcopy of a 1e5-node graph and of a 1e6-double field.

Two rows, each against a pure-Python peer measured in the same run:

- **graph**: a ``tether.testing.Document`` of 1000 sections x 100 paragraphs (101 001 objects),
  with sharing (``Document.index`` and ``cover`` name sections already in ``sections``, each
  section's ``anchors`` names some of its paragraphs, every 10th paragraph's ``see_also``
  names the section before its own) and weak parent links (``Paragraph.section``,
  ``Section.document``); against the same graph built from ``__slots__`` dataclasses (the
  parent links strong, there being no weak field in a dataclass). ``pickle.dumps`` and
  ``loads`` at protocol 5, the pickle's size, and ``copy.deepcopy``.
- **vector**: one ``Section`` whose ``weights`` (a ``std::vector<double>``) holds 1e6 doubles,
  against a NumPy array of the same doubles: protocol 5 with a ``buffer_callback``
  (out-of-band buffers), ``dumps`` and ``loads``; ``transport`` adds what a process boundary
  costs either way (each buffer copied once, as a socket or a pipe would). The question: does
  a numeric field travel like an array? tether's ``dumps`` hands pickle the vector's own
  memory, as NumPy does (no copy, so it should cost about what NumPy's costs); its ``loads``
  must copy the buffer into a new ``std::vector`` (which owns its memory), where NumPy makes
  a view: the ``copy floor`` row (one copy of the same bytes into fresh memory) is what that
  copy costs at least, so ``loads`` / NumPy cannot approach 1.

Times are the minimum over rounds, with the garbage collector disabled while timing (as
``timeit`` does); a vector ``dumps`` (about 10 us) is also timed as the mean of 100 calls in
a row, where a single call mostly measures cold caches after the collection each round runs.
``python -m tether.bench.pickling [--quick]`` prints the table alone; ``python -m
tether.bench`` runs it in a fresh interpreter (see measure_fresh) and prints it after the
identity benchmark, with the machine.
"""
from __future__ import annotations

import copy
import dataclasses
import gc
import pickle
import sys
import time

SECTIONS, PARAGRAPHS = 1000, 100
VECTOR = 1_000_000


# ---- the graph, both ways ------------------------------------------------------------------

@dataclasses.dataclass(slots=True, eq=False)
class Paragraph:
    text: str = ""
    section: object = None
    see_also: object = None


@dataclasses.dataclass(slots=True, eq=False)
class Section:
    title: str = ""
    paragraphs: list = dataclasses.field(default_factory=list)
    slots: list = dataclasses.field(default_factory=list)
    anchors: dict = dataclasses.field(default_factory=dict)
    weights: list = dataclasses.field(default_factory=list)
    document: object = None


@dataclasses.dataclass(slots=True, eq=False)
class Document:
    title: str = ""
    sections: list = dataclasses.field(default_factory=list)
    cover: object = None
    index: dict = dataclasses.field(default_factory=dict)


def build_tether(sections: int = SECTIONS, paragraphs: int = PARAGRAPHS):
    """The Document graph as tether.testing objects."""
    from tether import testing as t

    doc = t.Document("doc")
    secs = []
    for i in range(sections):
        s = t.Section(f"section {i}")
        ps = [t.Paragraph(f"paragraph {i}.{j}") for j in range(paragraphs)]
        s.paragraphs = ps
        s.anchors = {"first": ps[0], "last": ps[-1]}
        s.weights = [float(i), 0.5]
        s.document = doc
        for p in ps:
            p.section = s
        secs.append(s)
    for i, s in enumerate(secs[1:], 1):
        for j, p in enumerate(s.paragraphs):
            if j % 10 == 0:
                p.see_also = secs[i - 1]
    doc.sections = secs
    doc.cover = secs[0]
    doc.index = {s.title: s for s in secs}
    return doc


def build_slots(sections: int = SECTIONS, paragraphs: int = PARAGRAPHS):
    """The same graph as __slots__ dataclasses."""
    doc = Document("doc")
    secs = []
    for i in range(sections):
        s = Section(f"section {i}")
        ps = [Paragraph(f"paragraph {i}.{j}") for j in range(paragraphs)]
        s.paragraphs = ps
        s.anchors = {"first": ps[0], "last": ps[-1]}
        s.weights = [float(i), 0.5]
        s.document = doc
        for p in ps:
            p.section = s
        secs.append(s)
    for i, s in enumerate(secs[1:], 1):
        for j, p in enumerate(s.paragraphs):
            if j % 10 == 0:
                p.see_also = secs[i - 1]
    doc.sections = secs
    doc.cover = secs[0]
    doc.index = {s.title: s for s in secs}
    return doc


def check_graph(doc, sections: int = SECTIONS, paragraphs: int = PARAGRAPHS) -> None:
    """The rebuilt graph has its size, its sharing and its parent links."""
    assert len(doc.sections) == sections
    s0 = doc.sections[0]
    assert doc.cover is s0 and doc.index[s0.title] is s0
    assert len(s0.paragraphs) == paragraphs and s0.anchors["first"] is s0.paragraphs[0]
    assert s0.paragraphs[5].section is s0 and s0.document is doc
    assert doc.sections[1].paragraphs[0].see_also is s0


# ---- timing ----------------------------------------------------------------------------------

def _best(fn, rounds: int, number: int = 1) -> float:
    """Minimum over ``rounds`` of the seconds one ``fn()`` takes, each round timing
    ``number`` calls in a row (gc disabled while timing)."""
    best = float("inf")
    for _ in range(rounds):
        gc.collect()
        gc.disable()
        try:
            t0 = time.perf_counter()
            for _ in range(number - 1):
                fn()
            r = fn()
            dt = (time.perf_counter() - t0) / number
        finally:
            gc.enable()
        del r
        best = min(best, dt)
    return best


def _graph_row(build, rounds: int, deep_rounds: int, sections: int, paragraphs: int) -> dict:
    doc = build(sections, paragraphs)
    data = pickle.dumps(doc, 5)
    check_graph(pickle.loads(data), sections, paragraphs)
    check_graph(copy.deepcopy(doc), sections, paragraphs)
    return {
        "dumps_s": _best(lambda: pickle.dumps(doc, 5), rounds),
        "loads_s": _best(lambda: pickle.loads(data), rounds),
        "bytes": len(data),
        "deepcopy_s": _best(lambda: copy.deepcopy(doc), deep_rounds),
    }


def _vector_row(make, same, rounds: int) -> dict:
    obj = make()

    def dumps():
        bufs = []
        data = pickle.dumps(obj, 5, buffer_callback=bufs.append)
        return data, bufs

    data, bufs = dumps()
    wire = [bytes(b.raw()) for b in bufs]  # what arrives on the other side of a pipe

    def dumps_transport():
        data, bufs = dumps()
        return data, [bytes(b.raw()) for b in bufs]

    back = pickle.loads(data, buffers=bufs)
    assert same(back, obj)
    del back
    return {
        "buffers": len(bufs),
        "buffer_bytes": sum(b.raw().nbytes for b in bufs),
        "inband_bytes": len(data),
        "dumps_s": _best(dumps, rounds),
        "dumps_hot_s": _best(dumps, rounds, 100),
        "loads_s": _best(lambda: pickle.loads(data, buffers=bufs), rounds),
        "dumps_transport_s": _best(dumps_transport, rounds),
        "loads_transport_s": _best(lambda: pickle.loads(data, buffers=wire), rounds),
    }


def measure(quick: bool = False, log=lambda s: None) -> dict:
    """Both rows, tether and its peer in the same run. ``quick``: a small graph, few rounds."""
    sections, paragraphs = (50, 20) if quick else (SECTIONS, PARAGRAPHS)
    rounds, deep_rounds, vrounds = (2, 1, 3) if quick else (7, 3, 30)
    n = 10_000 if quick else VECTOR
    out: dict = {"graph": {}, "vector": {}, "nodes": 1 + sections * (1 + paragraphs),
                 "vector_items": n}
    for name, build in (("slots", build_slots), ("tether", build_tether)):
        log(f"pickling: graph of {out['nodes']} nodes, {name} ...")
        out["graph"][name] = _graph_row(build, rounds, deep_rounds, sections, paragraphs)
        gc.collect()

    def make_tether():
        from tether import testing as t
        s = t.Section("weights")
        s.weights = [i * 0.5 for i in range(n)]
        return s

    makers = [("tether", make_tether, lambda a, b: a.weights == b.weights)]
    try:
        import numpy

        def make_grid():
            from tether import testing as t
            g = t.Grid()  # an nb::ndarray field: holds the NumPy array's memory
            g.values = numpy.arange(n, dtype=numpy.float64) * 0.5
            return g

        makers.insert(0, ("numpy", lambda: numpy.arange(n, dtype=numpy.float64) * 0.5,
                          lambda a, b: bool((a == b).all())))
        makers.append(("tether-ndarray", make_grid,
                       lambda a, b: bool((a.values == b.values).all())))
    except ImportError:
        out["vector"]["numpy"] = None
    for name, make, same in makers:
        log(f"pickling: {n} doubles, {name} ...")
        out["vector"][name] = _vector_row(make, same, vrounds)
        gc.collect()
    wire = bytes(8 * n)
    out["copy_floor_s"] = _best(lambda: bytearray(wire), vrounds)  # one copy, fresh memory
    return out


def measure_fresh(quick: bool = False, log=lambda s: None) -> dict:
    """measure() in a fresh interpreter, as ``python -m tether.bench`` runs it: the identity
    phases before it make and free populations of 1e6 objects, and the state they leave the
    heaps in (CPython's and the C heap, which tether's objects come from and the dataclasses'
    do not) stays out of the pickling figures."""
    import json
    import os
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "pickling.json")
        cmd = [sys.executable, "-m", "tether.bench.pickling", "--json", path]
        if quick:
            cmd.append("--quick")
        log("pickling (a fresh interpreter) ...")
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        with open(path) as f:
            return json.load(f)


def _ratio(a, b) -> str:
    return f"{a / b:.2f}" if a and b else "-"


def render(res: dict) -> list:
    """Markdown lines for the report (empty if the phase did not run)."""
    p = res.get("pickling") if "pickling" in res else res
    if not p or "graph" not in p:
        return []
    g, v = p["graph"], p["vector"]
    t, s = g["tether"], g["slots"]
    lines = ["", f"## Pickle and deepcopy ({p['nodes']} nodes; protocol 5; min over rounds, "
                 "gc off while timing)", "",
             "| graph | tether | `__slots__` dataclasses | tether / dataclasses |",
             "|---|---:|---:|---:|"]
    for key, label, unit, scale in (("dumps_s", "pickle.dumps", "ms", 1e3),
                                    ("loads_s", "pickle.loads", "ms", 1e3),
                                    ("bytes", "size", "MB", 1e-6),
                                    ("deepcopy_s", "copy.deepcopy", "ms", 1e3)):
        lines.append(f"| {label} ({unit}) | {t[key] * scale:.2f} | {s[key] * scale:.2f} | "
                     f"{_ratio(t[key], s[key])} |")
    tv, nv, av = v.get("tether"), v.get("numpy"), v.get("tether-ndarray")
    lines += ["", f"| {p['vector_items']} doubles, out of band | tether `std::vector<double>` "
                  "| tether `nb::ndarray` field | NumPy | vector / NumPy | ndarray / NumPy |",
              "|---|---:|---:|---:|---:|---:|"]
    for key, label in (("buffers", "out-of-band buffers"),
                       ("buffer_bytes", "bytes in those buffers"),
                       ("inband_bytes", "pickle bytes besides the buffers"),
                       ("dumps_s", "dumps, one call (ms)"),
                       ("dumps_hot_s", "dumps, per call of 100 in a row (ms)"),
                       ("loads_s", "loads (ms)"),
                       ("dumps_transport_s", "dumps + one copy of each buffer (ms)"),
                       ("loads_transport_s", "loads from copied buffers (ms)")):
        a = tv[key] if tv else None
        c = av[key] if av else None
        b = nv[key] if nv else None
        fmt = (lambda x: f"{x * 1e3:.3f}") if key.endswith("_s") else (lambda x: f"{x}")
        timed = key.endswith("_s")
        lines.append(f"| {label} | {fmt(a) if a is not None else '-'} | "
                     f"{fmt(c) if c is not None else '-'} | "
                     f"{fmt(b) if b is not None else '-'} | "
                     f"{_ratio(a, b) if timed else ''} | {_ratio(c, b) if timed else ''} |")
    floor = p.get("copy_floor_s")
    if floor:
        lines += ["", f"Copy floor: one copy of {p['vector_items'] * 8 / 1e6:g} MB into fresh "
                      f"memory (`bytearray(bytes)`) took {floor * 1e3:.3f} ms; tether's loads "
                      "makes that copy (a `std::vector` owns its memory), NumPy's makes a view, and so "
                      "does an `nb::ndarray` field's (it holds the received array)."]
    if nv is None:
        lines.append("")
        lines.append("NumPy is not installed: no peer for the vector row.")
    return lines


def main(argv=None) -> int:
    import argparse
    import json

    ap = argparse.ArgumentParser(prog="python -m tether.bench.pickling", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a small graph: proves it runs")
    ap.add_argument("--json", metavar="PATH", help="also write the numbers here")
    args = ap.parse_args(argv)
    try:
        with open("/proc/loadavg") as f:
            load_before = f.read().split()[:3]
    except OSError:
        load_before = "?"
    res = measure(args.quick, lambda s: print(s, file=sys.stderr, flush=True))
    try:
        with open("/proc/loadavg") as f:
            load_after = f.read().split()[:3]
    except OSError:
        load_after = "?"
    import platform
    from .report import machine
    m = machine()
    print(f"Python {platform.python_version()} ({platform.python_implementation()}), "
          f"{m['cpu']} ({m.get('cpu_detail', '')}), {m['nproc']} CPUs, "
          f"load before {' '.join(load_before)}, after {' '.join(load_after)}")
    print("\n".join(render(res)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
