# SPDX-License-Identifier: Apache-2.0
"""Benchmarks: pickle and deepcopy of the Document graph (tether.bench.pickling) next to the
same graph as ``__slots__`` dataclasses, and a 1e6-double field next to a NumPy array.

With ``--benchmark-disable`` (the normal test suite) each body runs once on a small graph, as
a smoke test; ``pytest bench/test_bench_pickle.py --benchmark-enable`` times the full sizes
(101 001 objects; 1e6 doubles). Compare within one group: tether and its peer ran in the same
session. No assertion here is about time.
"""
import copy
import pickle

import pytest

from tether.bench import pickling

BUILDERS = {"tether": pickling.build_tether, "slots": pickling.build_slots}


def sizes(benchmark):
    if benchmark.disabled:
        return 20, 10, 1000
    return pickling.SECTIONS, pickling.PARAGRAPHS, pickling.VECTOR


@pytest.mark.parametrize("kind", ["tether", "slots"])
class TestGraph:
    def test_dumps(self, benchmark, kind):
        sections, paragraphs, _ = sizes(benchmark)
        doc = BUILDERS[kind](sections, paragraphs)
        benchmark.group = "pickle.dumps, Document graph"
        benchmark(pickle.dumps, doc, 5)

    def test_loads(self, benchmark, kind):
        sections, paragraphs, _ = sizes(benchmark)
        data = pickle.dumps(BUILDERS[kind](sections, paragraphs), 5)
        benchmark.group = "pickle.loads, Document graph"
        benchmark.extra_info["bytes"] = len(data)
        doc = benchmark(pickle.loads, data)
        pickling.check_graph(doc, sections, paragraphs)

    def test_deepcopy(self, benchmark, kind):
        sections, paragraphs, _ = sizes(benchmark)
        doc = BUILDERS[kind](sections, paragraphs)
        benchmark.group = "copy.deepcopy, Document graph"
        pickling.check_graph(benchmark(copy.deepcopy, doc), sections, paragraphs)


def make_vector(kind, n):
    if kind == "numpy":
        numpy = pytest.importorskip("numpy")
        return numpy.arange(n, dtype=numpy.float64) * 0.5
    from tether import testing as t
    s = t.Section("weights")
    s.weights = [i * 0.5 for i in range(n)]
    return s


@pytest.mark.parametrize("kind", ["tether", "numpy"])
class TestVector:
    def test_dumps_out_of_band(self, benchmark, kind):
        obj = make_vector(kind, sizes(benchmark)[2])
        benchmark.group = "pickle.dumps, 1e6 doubles, protocol 5 + buffer_callback"

        def dumps():
            bufs = []
            return pickle.dumps(obj, 5, buffer_callback=bufs.append), bufs

        data, bufs = benchmark(dumps)
        assert len(bufs) == 1

    def test_loads_out_of_band(self, benchmark, kind):
        obj = make_vector(kind, sizes(benchmark)[2])
        bufs = []
        data = pickle.dumps(obj, 5, buffer_callback=bufs.append)
        benchmark.group = "pickle.loads, 1e6 doubles, out-of-band buffer"
        assert len(bufs) == 1
        benchmark(pickle.loads, data, buffers=bufs)


def test_loads_copy_floor(benchmark):
    """What tether's loads cannot go below: one copy of the buffer into fresh memory (a
    std::vector owns its memory; NumPy's loads makes a view instead)."""
    wire = bytes(8 * sizes(benchmark)[2])
    benchmark.group = "pickle.loads, 1e6 doubles, out-of-band buffer"
    benchmark(bytearray, wire)
