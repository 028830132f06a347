# SPDX-License-Identifier: Apache-2.0
"""examples/host/host_script.py: the Python half of the embedding host (host.cpp calls these).

Python keeps some wrappers, drops others and stores objects in C++ fields; the host then
checks in C++ that every object comes back as the same wrapper.
"""
import gc

import host_types  # built into the host executable
from tether import testing

deleted = 0  # deaths of Tagged wrappers (never while C++ shares the object)
kept = []  # wrappers Python keeps alive until the interpreter finalizes


class Tagged(host_types.Node):
    """A Python subclass whose instances C++ stores; __del__ counts real deaths."""

    def __del__(self):
        global deleted
        deleted += 1


class Plain(host_types.Node):
    """Same size as Tagged (a __dict__), no __del__: junk for refilling freed blocks."""


def run(graph):
    """Keep nodes 0-1, drop the rest, put a Tagged and a testing.Inner into C++ fields."""
    nodes = graph.nodes
    ids = [id(n) for n in nodes]
    assert all(graph.nodes[i] is n for i, n in enumerate(nodes))
    kept.extend(nodes[:2])

    tagged = Tagged(100)
    tagged.tag = "from python"
    tagged.numbers = [1, 2, 3]
    graph.payload = tagged
    inner = testing.Inner(42)
    graph.extra = inner

    box = testing.Box(nodes[3])  # a host object inside tether.testing's Box
    assert box.value is nodes[3] and testing.echo(nodes[3]) is nodes[3]
    return {"ids": ids, "payload": id(tagged), "extra": id(inner), "graph": id(graph)}


def junk():
    """Same-size allocations, so that a freed wrapper's memory would be reused."""
    made = [host_types.Node(0) for _ in range(64)] + [Plain(0) for _ in range(64)]
    made += [testing.Inner(0) for _ in range(64)]
    gc.collect()
    return len(made)


def same_again(graph, result):
    """Second call: the wrappers are still the ones the first call saw."""
    nodes = graph.nodes
    return (
        [id(n) for n in nodes] == result["ids"]
        and nodes[0] is kept[0]
        and nodes[1] is kept[1]
        and id(graph.payload) == result["payload"]
        and graph.payload.tag == "from python"
        and graph.payload.numbers == [1, 2, 3]
        and id(graph.extra) == result["extra"]
        and id(graph) == result["graph"]
    )


def make_batch(n):
    """Tagged objects for C++ to hold and then release from its own threads."""
    batch = [Tagged(i) for i in range(n)]
    for t in batch:
        t.label = f"batch-{t.value}"
    return batch


def stress(done):
    """Keep the main thread busy in Python until the C++ threads are done."""
    rounds = 0
    while not done():
        rounds += 1
        for n in kept:
            n.value += 0
        sum(range(200))
    return rounds
