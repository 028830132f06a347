# SPDX-License-Identifier: Apache-2.0
"""tests/test_stateful.py: hypothesis state machine over create/assign/read/drop/gc/pickle/move,
moves of wrappers reached through weakrefs and gc.get_objects(), __class__ assignment, __del__
added and removed on a live class, a __del__ that stores self into C++, and cycles.

A model tracks every object the machine made: which containers hold it in C++, whether Python
holds its wrapper, and the id() its wrapper must keep. While C++ holds an object its wrapper
lives (the header owns a reference: "shared"); it dies with the last of both. After every step
the invariants compare the model with tether.stats() (live, bound, shared), use_count(), and
every weak reference the machine made (alive while the model says the wrapper is, callback
called exactly once after).

Size: a fixed, fast run by default. ``TETHER_STRESS=nightly`` runs many more examples and
longer programs, with a random seed (see README, "Reliability"); TETHER_STRESS_EXAMPLES
overrides the number of programs.
"""
import gc
import os
import pickle
import itertools
import weakref

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant, precondition,
                                 rule)

import tether
from tether import testing as t

NIGHTLY = os.environ.get("TETHER_STRESS") == "nightly"
EXAMPLES = int(os.environ.get("TETHER_STRESS_EXAMPLES", 1000 if NIGHTLY else 100))
STEPS = 100 if NIGHTLY else 50

#: __del__ calls per wrapper tag (SubDel, Toggle and Phoenix instances): 0 while the wrapper
#: lives (also while only C++ holds the object), 1 after it died.
DELS = {}
#: Phoenix tag -> the Box its __del__ stored it in (the machine takes it over).
PHOENIX = {}
_tags = itertools.count()


class SubInner(t.Inner):
    """A Python subclass: its __dict__ (tag) must survive while only C++ holds the object."""


class NeverMade(t.Inner):
    """Never instantiated: wrappers only get this type by __class__ assignment."""


class SubDel(t.Inner):
    """A Python subclass with __del__: runs exactly once, when the wrapper really dies."""

    def __del__(self):
        DELS[self.tag] = DELS.get(self.tag, 0) + 1


class Toggle(t.Inner):
    """The machine adds and removes __del__ on this class while instances live."""


def _toggle_del(self):
    DELS[self.tag] = DELS.get(self.tag, 0) + 1


class Phoenix(t.Inner):
    """__del__ stores self into a new Box (a C++ field): CPython resurrects the wrapper, with
    its __dict__; when it dies again __del__ does not run (PEP 442)."""

    def __del__(self):
        DELS[self.tag] = DELS.get(self.tag, 0) + 1
        try:
            PHOENIX[self.tag] = t.Box(self)
        except ValueError:  # a moved-from shell: nothing to store
            pass


SUBCLASSES = (SubInner, NeverMade, SubDel, Toggle, Phoenix)
KINDS = ["inner", "sub", "subdel", "toggle", "phoenix", "outer", "box", "shared_outer",
         "cpp_inner"]


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
        self.toggle_dels = None   # Toggle: __del__ calls expected at its death
        self.resurrected = False  # Phoenix: __del__ ran and stored it in a box

    def children(self):
        return [c for c in (self.x, self.y, *self.items) if c is not None]


def holds(*kinds):
    """Precondition: the machine holds a wrapper of one of `kinds` (so the rule does work)."""
    return lambda self: any(n.kind in kinds for n, _ in self.held)


def _bound_of(kind):
    return {"inner": t.Inner, "outer": t.Outer, "box": t.Box}[kind]


def holds_cls(*classes):
    return lambda self: any(n.cls in classes for n, _ in self.held)


class WeakEntry:
    """weakref.ref(w, callback) for a node's wrapper w, and the callback's calls."""

    def __init__(self, node, w):
        self.node, self.wid, self.shell, self.calls = node, id(w), False, []
        calls = self.calls
        self.ref = weakref.ref(w, lambda r: calls.append(1))

    def done(self):
        return self.ref() is None


class TetherMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        gc.collect()
        # Everything older than this program (hypothesis' own data, mostly) is out of the
        # GC's sight until teardown: the many gc.collect() calls below then scan only what
        # the program made, which keeps the default run short.
        gc.freeze()
        self.base = tether.stats()
        self.nodes = []   # every Node still alive
        self.held = []    # [(Node, wrapper)]: Python references the machine holds
        self.shells = []  # moved-from wrappers
        self.pickle_ok = _pickle_works()
        self.counter = itertools.count(1)
        self.weaks = []   # [WeakEntry]: weakrefs with callbacks, checked after every step
        self.dict_cycles = set()  # id(Node) whose wrapper's __dict__ holds a cycle to itself
        if "__del__" in Toggle.__dict__:
            del Toggle.__del__
        self.toggle_on = False
        PHOENIX.clear()

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

    def _alive(self):
        alive, todo = set(), [n for n, _ in self.held]
        while todo:
            n = todo.pop()
            if id(n) not in alive:
                alive.add(id(n))
                todo.extend(n.children())
        return alive

    def _prune(self):
        """Objects unreachable from Python-held wrappers are dead (no C++ cycles exist), except
        a Phoenix dying for the first time: its __del__ stored it into a box we now hold."""
        if self.dict_cycles and not self.dict_cycles <= self._alive():
            gc.collect()  # wrappers in __dict__ cycles die only when the GC runs
        while True:
            alive = self._alive()
            revived = False
            for n in self.nodes:
                if id(n) in alive or n.cls is not Phoenix or n.resurrected:
                    continue
                box = PHOENIX.pop(n.tag, None)
                assert box is not None, "Phoenix.__del__ did not run when its wrapper died"
                assert DELS.get(n.tag) == 1, "__del__ must run once"
                assert box.value.tag == n.tag and id(box.value) == n.wrapper_id, \
                    "a resurrected wrapper must keep its id() and __dict__"
                n.resurrected = True
                b = self._new("box")
                b.x = n
                self._hold(b, box)
                revived = True
            if not revived:
                break
        for n in self.nodes:
            if id(n) in alive or n.tag is None:
                continue
            if n.cls is SubDel:
                assert DELS.get(n.tag) == 1, "__del__ must run once when the object dies"
            elif n.cls is Toggle:
                assert DELS.get(n.tag, 0) == int(self.toggle_on), \
                    "__del__ must run once iff the class has one when the wrapper dies"
            elif n.cls is Phoenix:
                assert DELS.get(n.tag) == 1 and n.tag not in PHOENIX, \
                    "__del__ must not run again after a resurrection (PEP 442)"
        self.nodes = [n for n in self.nodes if id(n) in alive]
        self.dict_cycles &= alive

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
            assert w.tag == node.tag, "the wrapper lost its __dict__ while C++ held the object"
            assert DELS.get(node.tag, 0) == int(node.resurrected), \
                "__del__ ran on a wrapper that is still alive"
        if node.kind == "inner":
            assert w.value == node.value

    def _pick(self, data, kinds):
        # Draw an index, never the wrapper: hypothesis keeps what it draws for its report,
        # and a reference kept there would keep the wrapper alive.
        choices = [(n, w) for n, w in self.held if n.kind in kinds]
        if not choices:
            return None, None
        return choices[data.draw(st.integers(0, len(choices) - 1), label=f"held {kinds}")]

    # ---- rules ---------------------------------------------------------------------------

    @initialize(kinds=st.lists(st.sampled_from(KINDS), min_size=4, max_size=10),
                stored=st.lists(st.booleans(), min_size=10, max_size=10))
    def populate(self, kinds, stored):
        """Start from a small world: objects of many kinds, some stored in C++ containers
        with Python's references dropped (their wrappers live through their headers)."""
        for kind in kinds:
            self.create(kind)
        inners = [(n, w) for n, w in self.held if n.kind == "inner"]
        for (node, w), store in zip(inners, stored):
            if store:
                ow = t.Outer(w)
                outer = self._new("outer")
                outer.x = node
                self._hold(outer, ow)
                self.held = [(n, x) for n, x in self.held if x is not w]
        node = w = ow = None
        self._prune()

    @rule(kind=st.sampled_from(KINDS))
    def create(self, kind):
        v = next(self.counter)
        if kind == "inner":
            self._hold(self._new("inner", v), t.Inner(v))
        elif kind in ("sub", "subdel", "toggle", "phoenix"):
            cls = {"sub": SubInner, "subdel": SubDel, "toggle": Toggle, "phoenix": Phoenix}[kind]
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

    @precondition(holds("outer"))
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

    @precondition(holds("box"))
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

    @precondition(holds("outer", "box"))
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

    @precondition(holds("inner", "outer", "box"))
    @rule(data=st.data())
    def drop(self, data):
        if self.held:
            i = data.draw(st.integers(0, len(self.held) - 1), label="drop")
            del self.held[i]
            self._prune()

    @precondition(holds("inner", "outer", "box"))
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
        for e in self.weaks:
            if e.node is node and e.wid == id(w):
                e.shell = True  # the weakref follows the shell, which self.shells keeps
        self.dict_cycles.discard(id(node))  # the cycle stays with the shell
        node.wrapper_id = node.cls = node.tag = None
        node.resurrected = False

    @precondition(holds("inner", "outer", "box"))
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

    @precondition(holds("box"))
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

    # ---- weakrefs, moves of wrappers only C++ keeps, classes, __del__, cycles -------------

    @precondition(holds("inner", "outer", "box"))
    @rule(data=st.data())
    def weak(self, data):
        """A weakref with a callback to a held wrapper, checked after every step."""
        node, w = self._pick(data, ("inner", "outer", "box"))
        if node is None:
            return
        e = WeakEntry(node, w)
        self.weaks.append(e)
        if len(self.weaks) > 24:
            self.weaks = [x for x in self.weaks if not x.done()][-24:]

    @precondition(lambda self: any(n.wrapper_id is not None and self._refs(n) >= 1 for n in self.nodes))
    @rule(data=st.data(), how=st.sampled_from(["weakref", "gc"]))
    def move_reached(self, data, how):
        """Reach a wrapper C++ holds (maybe nothing in Python does) through a weakref or
        gc.get_objects() and move it into consume: the header lets go of it (T7)."""
        self._prune()
        cands = [n for n in self.nodes if n.wrapper_id is not None and self._refs(n) >= 1]
        if not cands:
            return
        node = cands[data.draw(st.integers(0, len(cands) - 1), label="reached")]
        w = None
        if how == "weakref":
            for e in self.weaks:
                if e.node is node and e.wid == node.wrapper_id and not e.shell:
                    w = e.ref()
                    break
        elif node.cls in SUBCLASSES:  # GC types: gc.get_objects() lists them
            w = next((o for o in gc.get_objects() if id(o) == node.wrapper_id), None)
            assert w is not None, "a wrapper C++ keeps is missing from gc.get_objects()"
        if w is None:
            return
        assert id(w) == node.wrapper_id and type(w) is node.cls
        expected = self._refs(node) + 1
        self._moved(node, w)
        assert t.consume(tether.move(w)) == expected
        with pytest.raises(ValueError, match="moved into C\\+\\+"):
            t.echo(w)
        del w
        self._prune()

    @precondition(holds_cls(SubInner, NeverMade))
    @rule(data=st.data())
    def reclass(self, data):
        """__class__ assignment between two Python subclasses of Inner (one never made)."""
        choices = [(n, w) for n, w in self.held if n.cls in (SubInner, NeverMade)]
        if not choices:
            return
        node, w = choices[data.draw(st.integers(0, len(choices) - 1), label="reclass")]
        new = NeverMade if node.cls is SubInner else SubInner
        w.__class__ = new
        node.cls = new
        assert type(w) is new and w.tag == node.tag and w.value == node.value
        assert t.echo(w) is w

    @precondition(holds("inner", "outer", "box"))
    @rule(data=st.data())
    def reclass_across_cpp_types(self, data):
        """__class__ assignment to a type of another C++ type is refused; nothing changes."""
        node, w = self._pick(data, ("inner", "outer", "box"))
        if w is None:
            return
        before = type(w)
        targets = [c for c in (t.Inner, t.Outer, t.Box, SubInner)
                   if not issubclass(c, _bound_of(node.kind))]
        target = targets[data.draw(st.integers(0, len(targets) - 1), label="target")]
        with pytest.raises(TypeError):
            w.__class__ = target
        assert type(w) is before
        assert t.echo(w) is w

    @rule()
    def toggle_del(self):
        """Add or remove __del__ on Toggle while instances live (maybe only through C++)."""
        self._prune()  # deaths so far happened under the old class
        if self.toggle_on:
            del Toggle.__del__
        else:
            Toggle.__del__ = _toggle_del
        self.toggle_on = not self.toggle_on

    @precondition(holds("inner", "outer", "box"))
    @rule(data=st.data(), keep=st.booleans())
    def list_cycle(self, data, keep):
        """Held wrappers in a list that contains itself; the machine maybe lets go of them;
        gc.collect() frees the cycle and exactly the wrappers nothing else holds."""
        k = data.draw(st.integers(1, 3), label="cycle size")
        picked = []
        for _ in range(k):
            node, w = self._pick(data, ("inner", "outer", "box"))
            if node is not None and node.cls is not Phoenix:  # (the GC clears a Phoenix's
                picked.append((node, w))                      # weakrefs before __del__)
        if not picked:
            return
        lst = [w for _, w in picked]
        lst.append(lst)
        del lst
        if not keep:
            ws = {id(w) for _, w in picked}
            self.held = [(n, x) for n, x in self.held if id(x) not in ws]
        picked.clear()
        node = w = None
        gc.collect()
        self._prune()

    @precondition(holds_cls(SubInner, NeverMade, SubDel, Toggle))
    @rule(data=st.data())
    def dict_cycle(self, data):
        """A wrapper whose __dict__ holds a list holding it: while C++ holds the object the
        header keeps it (GC or not); after, the GC frees it with its object."""
        choices = [(n, w) for n, w in self.held if n.cls in (SubInner, NeverMade, SubDel, Toggle)]
        if not choices:
            return
        node, w = choices[data.draw(st.integers(0, len(choices) - 1), label="dict cycle")]
        w.cycle = [w, node.tag]
        self.dict_cycles.add(id(node))
        gc.collect()
        assert w.cycle[0] is w

    # ---- invariants ----------------------------------------------------------------------

    @invariant()
    def counts_match_model(self):
        self._prune()
        s = tether.stats()
        wrapped = [n for n in self.nodes if n.wrapper_id is not None]
        shared = [n for n in wrapped if self._refs(n) >= 1]
        assert s["live"] - self.base["live"] == len(self.nodes)
        assert s["bound"] - self.base["bound"] == len(wrapped)
        assert s["shared"] - self.base["shared"] == len(shared)

    @invariant()
    def weakrefs_follow_wrappers(self):
        alive = {id(n) for n in self.nodes}
        for e in self.weaks:
            target = e.ref()
            if e.shell:
                assert target is not None and id(target) == e.wid, "a shell's weakref died"
            elif id(e.node) in alive and e.node.wrapper_id == e.wid:
                assert target is not None and id(target) == e.wid, \
                    "a weakref to a wrapper C++ or Python holds is dead"
                assert e.calls == [], "a live wrapper's weakref callback ran"
            else:
                assert target is None, "a weakref to a dead wrapper is alive"
                assert len(e.calls) == 1, f"weakref callback ran {len(e.calls)} times"
            del target

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
        self.weaks.clear()
        gc.collect()
        while PHOENIX:  # the last deaths resurrected some Phoenixes: let them go for good
            PHOENIX.clear()
            gc.collect()
        if "__del__" in Toggle.__dict__:
            del Toggle.__del__
        gc.unfreeze()
        s = tether.stats()
        assert (s["live"], s["bound"], s["shared"]) == (
            self.base["live"], self.base["bound"], self.base["shared"]), (self.base, s)


TetherMachine.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=STEPS,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=not NIGHTLY,
)


class TestStateMachine(TetherMachine.TestCase):
    """Property: random programs keep one wrapper per object, exact counters, and no leak."""
