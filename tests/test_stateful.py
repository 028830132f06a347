# SPDX-License-Identifier: Apache-2.0
"""tests/test_stateful.py: hypothesis state machine over create/assign/read/drop/gc/pickle/move.

A model tracks every object the machine made: which containers hold it in C++, whether Python
holds its wrapper, and the id() its wrapper must keep. After every step the invariants compare
the model with tether.stats() and use_count().

Size: a fixed, fast run by default. ``TETHER_STRESS=nightly`` runs many more examples and
longer programs, with a random seed (see README, "Reliability"); TETHER_STRESS_EXAMPLES
overrides the number of programs.
"""
import gc
import os
import pickle
import itertools

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import tether
from tether import testing as t

NIGHTLY = os.environ.get("TETHER_STRESS") == "nightly"
EXAMPLES = int(os.environ.get("TETHER_STRESS_EXAMPLES", 1000 if NIGHTLY else 60))
STEPS = 100 if NIGHTLY else 40

#: __del__ calls per wrapper tag (SubDel instances): must be 0 while alive or parked, 1 after.
DELS = {}
_tags = itertools.count()


class SubInner(t.Inner):
    """A Python subclass: its __dict__ (tag) must survive parking."""


class SubDel(t.Inner):
    """A Python subclass with __del__: runs exactly once, when the wrapper really dies."""

    def __del__(self):
        DELS[self.tag] = DELS.get(self.tag, 0) + 1


def _pickle_works():
    try:
        return pickle.loads(pickle.dumps(t.Inner(7))).value == 7
    except Exception:
        return False


class Node:
    """Model of one C++ object."""

    def __init__(self, kind, value=0, cls=None):
        self.kind = kind          # "inner", "outer" or "box"
        self.value = value        # Inner payload
        self.x = self.y = None    # Outer children (Node) / Box child in x
        self.items = []           # Outer.items
        self.wrapper_id = None    # id() of its one wrapper, once it has one
        self.cls = cls            # Python type of that wrapper
        self.tag = None           # __dict__ content of subclass wrappers

    def children(self):
        return [c for c in (self.x, self.y, *self.items) if c is not None]


class TetherMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        gc.collect()
        self.base = tether.stats()
        self.nodes = []   # every Node still alive
        self.held = []    # [(Node, wrapper)]: Python references the machine holds
        self.shells = []  # moved-from wrappers
        self.pickle_ok = _pickle_works()
        self.counter = itertools.count(1)

    # ---- model helpers -------------------------------------------------------------------

    def _new(self, kind, value=0, cls=None):
        n = Node(kind, value, cls)
        self.nodes.append(n)
        return n

    def _hold(self, node, w):
        if node.wrapper_id is None:
            node.wrapper_id, node.cls = id(w), type(w)
        self.held.append((node, w))

    def _refs(self, node):
        """C++ strong counts held by live containers."""
        return sum(c is node for p in self.nodes for c in (p.x, p.y, *p.items))

    def _prune(self):
        """Objects unreachable from Python-held wrappers are dead (no C++ cycles exist)."""
        alive, todo = set(), [n for n, _ in self.held]
        while todo:
            n = todo.pop()
            if id(n) not in alive:
                alive.add(id(n))
                todo.extend(n.children())
        for n in self.nodes:
            if id(n) not in alive and n.tag is not None and n.cls is SubDel:
                assert DELS.get(n.tag) == 1, "__del__ must run once when the object dies"
        self.nodes = [n for n in self.nodes if id(n) in alive]

    def _check_read(self, node, w):
        """`w` was just read for `node`: it must be node's one wrapper, with node's content."""
        if node is None:
            assert w is None
            return
        assert w is not None
        if node.wrapper_id is not None:
            assert id(w) == node.wrapper_id, "a second wrapper for one object"
            assert type(w) is node.cls
        else:
            node.wrapper_id, node.cls = id(w), type(w)
        if node.tag is not None:
            assert w.tag == node.tag, "parking lost the wrapper's __dict__"
            assert DELS.get(node.tag, 0) == 0, "__del__ ran on a wrapper that is still alive"
        if node.kind == "inner":
            assert w.value == node.value

    def _pick(self, data, kinds):
        # Draw an index, never the wrapper: hypothesis keeps what it draws for its report,
        # and a reference kept there would stop the wrapper from parking.
        choices = [(n, w) for n, w in self.held if n.kind in kinds]
        if not choices:
            return None, None
        return choices[data.draw(st.integers(0, len(choices) - 1), label=f"held {kinds}")]

    # ---- rules ---------------------------------------------------------------------------

    @rule(kind=st.sampled_from(["inner", "sub", "subdel", "outer", "box", "shared_outer",
                                "cpp_inner"]))
    def create(self, kind):
        v = next(self.counter)
        if kind == "inner":
            self._hold(self._new("inner", v), t.Inner(v))
        elif kind in ("sub", "subdel"):
            cls = SubInner if kind == "sub" else SubDel
            w = cls(v)
            w.tag = next(_tags)
            node = self._new("inner", v)
            self._hold(node, w)
            node.tag = w.tag
        elif kind == "outer":
            self._hold(self._new("outer"), t.Outer())
        elif kind == "box":
            self._hold(self._new("box"), t.Box())
        elif kind == "shared_outer":
            o = self._new("outer")
            o.x = o.y = self._new("inner", v)  # made in C++: no wrapper until read
            self._hold(o, t.make_shared_outer(v))
        else:
            self._hold(self._new("inner", v), t.make_inner(v))

    @rule(data=st.data(), field=st.sampled_from(["x", "y", "items", "none"]))
    def assign(self, data, field):
        outer, ow = self._pick(data, ("outer",))
        if outer is None:
            return
        if field == "none":
            outer.x = None
            ow.x = None
            return
        if field == "items":
            k = data.draw(st.integers(0, 3), label="items")
            inners = [p for p in self.held if p[0].kind == "inner"]
            picked = [inners[data.draw(st.integers(0, len(inners) - 1))]
                      for _ in range(k)] if inners else []
            ow.items = [w for _, w in picked]
            outer.items = [n for n, _ in picked]
            return
        inner, iw = self._pick(data, ("inner",))
        if inner is None:
            return
        setattr(ow, field, iw)
        setattr(outer, field, inner)

    @rule(data=st.data(), move=st.booleans())
    def box_assign(self, data, move):
        """box.value = w, optionally as tether.move(w) (the box takes w's own count)."""
        box, bw = self._pick(data, ("box",))
        node, w = self._pick(data, ("inner", "outer"))
        if box is None or node is None:
            return
        if move:
            self._moved(node, w)
            bw.value = tether.move(w)
        else:
            bw.value = w
        box.x = node

    @rule(data=st.data(), keep=st.booleans(), field=st.sampled_from(["x", "y", "items", "value"]))
    def read(self, data, keep, field):
        """Read a field twice: both reads are the same wrapper, the model's one."""
        kinds = ("box",) if field == "value" else ("outer",)
        parent, pw = self._pick(data, kinds)
        if parent is None:
            return
        if field == "items":
            got = pw.items
            assert len(got) == len(parent.items)
            for n, w in zip(parent.items, got):
                self._check_read(n, w)
            assert all(a is b for a, b in zip(got, pw.items))
            if keep:
                for n, w in zip(parent.items, got):
                    self.held.append((n, w))
            return
        node = parent.x if field in ("x", "value") else parent.y
        w = getattr(pw, field)
        assert getattr(pw, field) is w
        self._check_read(node, w)
        if keep and node is not None:
            self.held.append((node, w))

    @rule(data=st.data())
    def drop(self, data):
        if self.held:
            i = data.draw(st.integers(0, len(self.held) - 1), label="drop")
            del self.held[i]
            self._prune()

    @rule(data=st.data())
    def echo(self, data):
        node, w = self._pick(data, ("inner", "outer", "box"))
        if node is not None:
            assert t.echo(w) is w
            if node.kind == "inner":
                assert t.echo_inner(w) is w

    @rule()
    def collect(self):
        gc.collect()

    @precondition(lambda self: self.pickle_ok)
    @rule(data=st.data())
    def pickle_round_trip(self, data):
        node, w = self._pick(data, ("inner", "outer"))
        if node is None or (node.kind == "inner" and type(w) is not t.Inner):
            return
        if node.kind == "outer" and any(c.kind != "inner" or c.cls not in (None, t.Inner)
                                        for c in node.children()):
            return
        if node.kind == "outer":  # pickling reads the children: record their wrappers
            for c, cw in zip((node.x, node.y, *node.items), (w.x, w.y, *w.items)):
                self._check_read(c, cw)
        copy = pickle.loads(pickle.dumps(w))
        assert copy is not w and type(copy) is type(w)
        new = self._new(node.kind, node.value)
        if node.kind == "outer":
            made = {}  # id(wrapper in the copy) -> Node: shared children stay shared
            def twin(c, cw):
                if c is None:
                    assert cw is None
                    return None
                assert cw.value == c.value and cw is not None
                n = made.setdefault(id(cw), None) or self._new("inner", c.value)
                made[id(cw)] = n
                self._check_read(n, cw)
                return n
            new.x, new.y = twin(node.x, copy.x), twin(node.y, copy.y)
            items = copy.items
            assert len(items) == len(node.items)
            new.items = [twin(c, cw) for c, cw in zip(node.items, items)]
            if node.x is not None and node.y is not None:
                assert (node.x is node.y) == (new.x is new.y), "pickle lost shared identity"
        self._hold(new, copy)
        self._prune()

    def _moved(self, node, w):
        """w's count goes into C++: w becomes a shell; the next read makes a new wrapper."""
        self.held = [(n, x) for n, x in self.held if x is not w]
        self.shells.append(w)
        node.wrapper_id = node.cls = node.tag = None

    @rule(data=st.data())
    def move(self, data):
        node, w = self._pick(data, ("inner", "outer", "box"))
        if node is None:
            return
        expected = self._refs(node) + 1
        self._moved(node, w)
        assert t.consume(tether.move(w)) == expected
        with pytest.raises(ValueError, match="moved into C\\+\\+"):
            tether.move(w)
        self._prune()

    @rule(data=st.data())
    def release_in_thread(self, data):
        """The box's C++ reference goes on a std::thread without the GIL (maybe the last)."""
        box, bw = self._pick(data, ("box",))
        if box is None:
            return
        t.release_in_thread(bw)
        box.x = None
        assert bw.value is None
        self._prune()

    @rule(n=st.integers(0, 50))
    def make_in_thread(self, n):
        t.make_in_thread(n)

    # ---- invariants ----------------------------------------------------------------------

    @invariant()
    def counts_match_model(self):
        self._prune()
        s = tether.stats()
        held = {id(n): n for n, _ in self.held}
        parked = [n for n in self.nodes if id(n) not in held and n.wrapper_id is not None]
        assert s["live"] - self.base["live"] == len(self.nodes)
        assert s["bound"] - self.base["bound"] == len(held)
        assert s["parked"] - self.base["parked"] == len(parked)

    @invariant()
    def one_wrapper_and_counts_per_object(self):
        for n, w in self.held:
            assert id(w) == n.wrapper_id
            assert t.use_count(w) == self._refs(n) + 1

    @invariant()
    def shells_stay_unusable(self):
        for w in self.shells[-3:]:
            with pytest.raises(ValueError):
                w.value if isinstance(w, (t.Inner, t.Box)) else w.x

    def teardown(self):
        self.held.clear()
        self.shells.clear()
        self.nodes.clear()
        gc.collect()
        s = tether.stats()
        assert (s["live"], s["bound"], s["parked"]) == (
            self.base["live"], self.base["bound"], self.base["parked"]), (self.base, s)


TetherMachine.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=STEPS,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=not NIGHTLY,
)


class TestStateMachine(TetherMachine.TestCase):
    """Property: random programs keep one wrapper per object, exact counters, and no leak."""
