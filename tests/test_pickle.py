# SPDX-License-Identifier: Apache-2.0
"""Pickle for every tether type, from declared fields: sharing, identity, leaks, processes, errors."""
import concurrent.futures
import gc
import multiprocessing
import pickle
import time
import random

import pytest

import tether
from tether import _data
from tether import testing as t

from conftest import collect, junk

pytestmark = pytest.mark.usefixtures("clean")

PROTOCOLS = range(2, pickle.HIGHEST_PROTOCOL + 1)


class Sub(t.Inner):
    """A Python subclass with a __dict__."""


class Slotted(t.Outer):
    """A Python subclass with __slots__ (one private name) and no __dict__."""

    __slots__ = ("tag", "__secret")

    def set_secret(self, v):
        self.__secret = v

    def get_secret(self):
        return self.__secret


def make_dag(n, seed=7):
    """n Outer nodes over n Inner leaves, each Outer sharing leaves with others; n Boxes
    chaining Outers so that Boxes, too, are shared."""
    rng = random.Random(seed)
    leaves = [t.Inner(i) for i in range(n)]
    nodes = []
    for i in range(n):
        o = t.Outer(rng.choice(leaves), rng.choice(leaves))
        o.items = [rng.choice(leaves) for _ in range(3)]
        nodes.append(o)
    boxes = [t.Box(nodes[i]) for i in range(n)]
    return leaves, nodes, boxes


def sharing_signature(nodes):
    """For each node, the positions of its children among all leaves seen, by identity."""
    index = {}
    sig = []
    for o in nodes:
        kids = [o.x, o.y] + o.items
        sig.append(tuple(index.setdefault(id(k), len(index)) for k in kids))
    return sig


class TestRoundTrip:
    """Every protocol from 2 to 5 restores type, field values and Python state."""

    @pytest.mark.parametrize("proto", PROTOCOLS)
    def test_bound_types(self, proto):
        i = t.Inner(41)
        o = t.Outer(i, t.Inner(2))
        o.items = [t.Inner(3), i]
        b = t.Box(o)
        b2 = pickle.loads(pickle.dumps(b, proto))
        assert type(b2) is t.Box and b2 is not b
        o2 = b2.value
        assert type(o2) is t.Outer
        assert (o2.x.value, o2.y.value, [k.value for k in o2.items]) == (41, 2, [3, 41])
        assert o2.items[1] is o2.x

    @pytest.mark.parametrize("proto", PROTOCOLS)
    def test_subclass_dict(self, proto):
        s = Sub(5)
        s.note = "hello"
        s.other = t.Inner(6)
        s2 = pickle.loads(pickle.dumps(s, proto))
        assert type(s2) is Sub
        assert (s2.value, s2.note, s2.other.value) == (5, "hello", 6)

    @pytest.mark.parametrize("proto", PROTOCOLS)
    def test_subclass_slots(self, proto):
        s = Slotted(t.Inner(1))
        s.tag = "t"
        s.set_secret([1, 2])
        s2 = pickle.loads(pickle.dumps(s, proto))
        assert type(s2) is Slotted
        assert (s2.x.value, s2.y, s2.tag, s2.get_secret()) == (1, None, "t", [1, 2])
        s3 = pickle.loads(pickle.dumps(Slotted(), proto))  # unset slots stay unset
        with pytest.raises(AttributeError):
            s3.tag

    def test_padded_aligned_untied(self):
        for cls in (t.Padded, t.Aligned32, t.Aligned64, t.Untied):
            o = pickle.loads(pickle.dumps(cls(77)))
            assert type(o) is cls and o.value == 77

    def test_none_fields(self):
        o = pickle.loads(pickle.dumps(t.Outer()))
        assert o.x is None and o.y is None and o.items == []


class TestSharing:
    """If `o.x is o.y` before, the restored object has one C++ object behind both."""

    @pytest.mark.parametrize("proto", PROTOCOLS)
    def test_shared_child(self, proto):
        o2 = pickle.loads(pickle.dumps(t.make_shared_outer(3), proto))
        assert o2.x is o2.y
        assert t.use_count(o2.x) == 3  # x, y and the live wrapper: one C++ object
        o2.x.value = 9
        assert o2.y.value == 9

    def test_shared_across_roots(self):
        i = t.Inner(1)
        a, b = t.Outer(i), t.Box(i)
        a2, b2 = pickle.loads(pickle.dumps((a, b)))
        assert a2.x is b2.value

    def test_cycle_through_box(self):
        b1, b2 = t.Box(), t.Box()
        b1.value, b2.value = b2, b1
        c1 = pickle.loads(pickle.dumps(b1))
        assert c1.value.value is c1
        c1.value.value = None  # break the C++ cycle so the clean fixture sees no leak
        b1.value = None

    @pytest.mark.parametrize("proto", PROTOCOLS)
    def test_dag_1000(self, proto):
        leaves, nodes, boxes = make_dag(1000)
        restored = pickle.loads(pickle.dumps(boxes, proto))
        nodes2 = [b.value for b in restored]
        assert sharing_signature(nodes2) == sharing_signature(nodes)
        assert [o.x.value for o in nodes2] == [o.x.value for o in nodes]
        distinct = {id(k) for o in nodes2 for k in [o.x, o.y] + o.items}
        assert len(distinct) == len({id(k) for o in nodes for k in [o.x, o.y] + o.items})
        assert not distinct & {id(k) for k in leaves}


class TestCanonical:
    """A restored object is the one wrapper of its C++ object, and revives to the same id()."""

    def test_revive_after_gc(self):
        o2 = pickle.loads(pickle.dumps(t.Outer(t.Inner(4), t.Inner(5))))
        first = id(o2.x)
        collect()
        j = junk()
        assert id(o2.x) == first and o2.x.value == 4
        del j

    def test_subclass_revives_with_dict(self):
        s = Sub(1)
        s.note = "kept"
        b2 = pickle.loads(pickle.dumps(t.Box(s)))
        first = id(b2.value)
        collect()
        j = junk(Sub)
        assert id(b2.value) == first and b2.value.note == "kept"
        del j

    def test_echo_gives_same_wrapper(self):
        o2 = pickle.loads(pickle.dumps(t.Inner(8)))
        assert t.echo(o2) is o2


class TestNoLeak:
    """200 round trips leave tether.stats() where they found it."""

    def test_200_round_trips(self):
        collect()
        before = tether.stats()
        for i in range(200):
            o = t.make_shared_outer(i)
            o.items = [o.x, t.Inner(i)]
            s = Sub(i)
            s.child = t.Box(o)
            s2 = pickle.loads(pickle.dumps(s))
            assert s2.child.value.x is s2.child.value.y
            del o, s, s2
        collect()
        assert tether.stats() == before


def _worker_bump(boxes):
    """Runs in a worker process: checks sharing there, mutates shared leaves, sends back."""
    nodes = [b.value for b in boxes]
    shared = all(o.x is o.y for o in nodes if o.x.value == o.y.value)
    for o in nodes:
        o.x.value += 1000  # a leaf shared by several nodes is bumped several times
    return boxes, shared


class TestProcesses:
    """A graph sent to a real worker process comes back with its sharing intact."""

    def test_process_pool(self):
        live_before = tether.stats()["live"]
        self.check_round_trip()
        # multiprocessing's helper threads (the call queue's feeder) may still hold the last
        # item they sent for a moment after the pool shut down: wait for them to let go.
        deadline = time.monotonic() + 30
        while tether.stats()["live"] != live_before and time.monotonic() < deadline:
            gc.collect()
            time.sleep(0.05)

    def check_round_trip(self):
        leaves, nodes, boxes = make_dag(200, seed=3)
        ctx = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
            back, shared_in_worker = pool.submit(_worker_bump, boxes).result(timeout=120)
        assert shared_in_worker
        nodes2 = [b.value for b in back]
        assert sharing_signature(nodes2) == sharing_signature(nodes)
        bumps = {}
        for o in nodes:
            bumps[id(o.x)] = bumps.get(id(o.x), 0) + 1
        for o, o2 in zip(nodes, nodes2):
            assert o2.x.value == o.x.value + 1000 * bumps[id(o.x)]


class TestRefusals:
    """What cannot be pickled says so: TypeError naming the type, ValueError when moved."""

    def test_no_default_constructor(self):
        with pytest.raises(TypeError, match="_NoDefault"):
            pickle.dumps(_data._NoDefault(1))

    def test_no_default_constructor_nested(self):
        with pytest.raises(TypeError, match="_NoDefault"):
            pickle.dumps(t.Box(_data._NoDefault(1)))

    def test_base_object_has_no_constructor(self):
        with pytest.raises(TypeError, match="Object"):
            tether._pickle.rebuild(tether.Object)

    def test_moved_from(self):
        i = t.Inner(1)
        t.consume(tether.move(i))
        with pytest.raises(ValueError, match="moved"):
            pickle.dumps(i)

    def test_copy_refuses_the_same_way(self):
        import copy
        with pytest.raises(TypeError, match="_NoDefault"):
            copy.copy(_data._NoDefault(2))


class TestBadData:
    """Truncated or corrupted pickles raise an exception; nothing crashes or leaks."""

    def test_truncated(self):
        data = pickle.dumps(make_dag(50)[2])
        for cut in range(1, len(data), max(1, len(data) // 97)):
            with pytest.raises(Exception):
                pickle.loads(data[:cut])

    def test_corrupted_bytes(self):
        # Under the address-space cap of test_misuse: a flipped byte can make the unpickler
        # grow its memo (or a bytes object) to tens of GB, which free-threaded 3.13's allocator
        # overcommits and then touches (the OOM killer) instead of raising MemoryError.
        from test_misuse import address_space_cap

        data = bytearray(pickle.dumps(t.Outer(t.Inner(1), t.Inner(2)), 2))
        rng = random.Random(11)
        for _ in range(300):
            bad = bytearray(data)
            for _ in range(3):
                bad[rng.randrange(len(bad))] = rng.randrange(256)
            try:
                with address_space_cap():
                    pickle.loads(bytes(bad))
            except Exception:
                pass
        gc.collect()

    def test_wrong_field_type_in_state(self):
        i = t.Inner.__new__(t.Inner)
        t.Inner.__init__(i)
        with pytest.raises(TypeError, match="value"):
            i.__setstate__((None, {"value": "not an int"}))
        with pytest.raises(TypeError):
            i.__setstate__(42)
        with pytest.raises(TypeError):
            i.__setstate__((None, [1, 2]))

    def test_rebuild_rejects_non_tether(self):
        with pytest.raises(TypeError):
            tether._pickle.rebuild(int)
        with pytest.raises(TypeError):
            tether._pickle.rebuild("Inner")
