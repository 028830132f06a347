# SPDX-License-Identifier: Apache-2.0
"""The C++ reducer (bindings/src/reduce.cpp): its format, numeric vectors as buffers, user
overrides, layouts that follow their class, classes sent by value, and bad input."""
import copy
import gc
import pickle
import subprocess
import sys
import textwrap
import threading
import types
import weakref

import pytest

import tether
from tether import _pickle
from tether import testing as t

from conftest import collect


def dumps_oob(obj):
    """Protocol 5 with a buffer_callback: the message and the out-of-band buffers."""
    bufs = []
    return pickle.dumps(obj, 5, buffer_callback=bufs.append), bufs

pytestmark = pytest.mark.usefixtures("clean")

PROTOCOLS = range(0, pickle.HIGHEST_PROTOCOL + 1)


def weights(n, start=0.0):
    return [start + i * 0.25 for i in range(n)]


class TestFormat:
    """(_rebuild, ((cls, ctor_names), *ctor_values), ([dict,] state_names, *state_values))."""

    def test_shape(self):
        o = t.Outer(t.Inner(1), t.Inner(2))
        fn, args, state = o.__reduce_ex__(4)
        assert fn is tether._core._rebuild
        assert args == ((t.Outer, ()),)
        assert state[0] == ("x", "y", "items")  # no __dict__: no first item
        assert state[1] is o.x and state[2] is o.y and state[3] == []

    def test_shape_with_a_dict(self):
        class P(t.Inner):
            pass
        p = P(2)
        p.note = "kept"
        fn, args, state = p.__reduce_ex__(4)
        assert args[0][1] == ("value",) and args[1] == 2
        assert state[0] == {"note": "kept"} and state[1] == ()

    def test_constructor_arguments(self):
        p = t.Paragraph("hello")
        fn, args, state = p.__reduce_ex__(4)
        assert args == ((t.Paragraph, ("text",)), "hello")

    def test_names_are_one_tuple_per_type(self):
        a, b = t.Paragraph("a"), t.Paragraph("b")
        ra, rb = a.__reduce_ex__(5), b.__reduce_ex__(5)
        assert ra[1][0] is rb[1][0] and ra[2][0] is rb[2][0]

    def test_key_is_kept_by_the_class(self):
        """The (cls, names) key lives in the class's own dict: a class that goes away is
        freed with it (a process-wide cache would keep it alive). Compared with a class never
        pickled, made the same way: 3.13t can keep both alive for a while after other threads
        ran (seen after a ProcessPoolExecutor), which is not tether's doing."""
        def make(pickled):
            class Local(t.Paragraph):
                pass
            Local("x").__reduce_ex__(5) if pickled else Local("x")
            if pickled:
                assert Local.__dict__["__tether_rebuild_keys__"][0][1] == ("text",)
            return weakref.ref(Local)
        control, ref = make(False), make(True)
        for _ in range(3):
            gc.collect()
        if control() is not None:
            pytest.skip("this interpreter keeps a class never pickled alive here too")
        assert ref() is None

    def test_key_list_tampered_with(self):
        """The key list is a plain list in the class dict: emptied, filled with junk, replaced
        or deleted, pickling still round-trips (a key not found where it was put is made
        afresh)."""
        class Mine(t.Paragraph):
            pass
        Mine.__module__, Mine.__qualname__ = __name__, "Mine"
        globals()["Mine"] = Mine
        try:
            ps = [Mine("p%d" % i) for i in range(3)]
            assert [q.text for q in pickle.loads(pickle.dumps(ps))] == ["p0", "p1", "p2"]
            keys = Mine.__dict__["__tether_rebuild_keys__"]
            for spoil in (keys.clear, lambda: keys.extend([None, (1, 2), (Mine, ("x",))]),
                          lambda: keys.__setitem__(slice(None), [(Mine, ("text",))] * 4),
                          lambda: setattr(Mine, "__tether_rebuild_keys__", "junk"),
                          lambda: delattr(Mine, "__tether_rebuild_keys__")):
                spoil()
                back = pickle.loads(pickle.dumps(ps + ps))
                assert [q.text for q in back] == ["p0", "p1", "p2"] * 2
                assert back[0] is back[3] and type(back[0]) is Mine
        finally:
            del globals()["Mine"]

    def test_older_forms_still_load(self):
        """(cls, names, *values) for _rebuild and (None, names, *values) for __setstate__:
        what earlier versions wrote."""
        p = tether._core._rebuild(t.Paragraph, ("text",), "old")
        p.__setstate__((None, ("see_also",), None))
        assert p.text == "old" and p.see_also is None

    def test_names_written_once_per_message(self):
        ps = [t.Paragraph("p%d" % i) for i in range(200)]
        data = pickle.dumps(ps, 5)
        assert data.count(b"see_also") == 1

    def test_no_state_when_empty(self):
        assert t.Inner(3).__reduce_ex__(2)[2] is None

    @pytest.mark.parametrize("proto", range(2, pickle.HIGHEST_PROTOCOL + 1))
    def test_every_protocol(self, proto):  # a bound value struct (Transform) needs 2+
        n = t.Node("n", [1.0, 2.0], t.Color.blue)
        n.counts = {"a": 1}
        n.extra = t.Inner(4)
        n.transform.x = 2.5
        m = pickle.loads(pickle.dumps(n, proto))
        assert (m.name, m.weights, m.color, m.counts, m.extra.value, m.transform.x) == \
            ("n", [1.0, 2.0], t.Color.blue, {"a": 1}, 4, 2.5)

    def test_old_reduce_still_loads(self):
        """__reduce__ keeps the older (rebuild, (cls, kwargs), state) form, and it loads."""
        n = t.Node("n", [1.0])
        fn, (cls, kwargs), state = n.__reduce__()
        assert fn is _pickle.rebuild and kwargs["name"] == "n"
        m = fn(cls, kwargs)
        m.__setstate__(state)
        assert m.name == "n" and m.weights == [1.0]


class TestDocumentModel:
    """The document model: sharing, weak parents, cycles through optional links."""

    def build(self):
        d = t.Document("doc")
        for i in range(3):
            s = t.Section("s%d" % i)
            for j in range(4):
                s.add(t.Paragraph("p%d.%d" % (i, j)))
            s.anchors = {"first": s.paragraphs[0]}
            s.weights = weights(100, i)
            d.add(s)
        d.cover = d.sections[0]
        d.sections[2].paragraphs[0].see_also = d.sections[2]  # a cycle through C++ and back
        return d

    @pytest.mark.parametrize("how", ["pickle2", "pickle5", "oob", "deepcopy"])
    def test_round_trip(self, how):
        d = self.build()
        if how == "deepcopy":
            e = copy.deepcopy(d)
        elif how == "oob":
            data, bufs = dumps_oob(d)
            assert len(bufs) == 3
            e = pickle.loads(data, buffers=bufs)
        else:
            e = pickle.loads(pickle.dumps(d, int(how[-1])))
        assert e.cover is e.sections[0] and e.index["s1"] is e.sections[1]
        for i, s in enumerate(e.sections):
            assert s.document is e
            assert s.weights == weights(100, i)
            assert all(p.section is s for p in s.paragraphs)
            assert s.anchors["first"] is s.paragraphs[0]
        assert e.sections[2].paragraphs[0].see_also is e.sections[2]
        assert e.sections[0] is not d.sections[0]
        for doc in (d, e):  # break the cycles through C++ so the clean fixture sees no leak
            doc.sections[2].paragraphs[0].see_also = None


class TestVectors:
    """A std::vector<double> of 64 items or more goes as one buffer."""

    def test_out_of_band(self):
        s = t.Section("w")
        s.weights = weights(1000)
        data, bufs = dumps_oob(s)
        assert len(bufs) == 1 and bufs[0].raw().nbytes == 8000
        assert len(data) < 200
        assert pickle.loads(data, buffers=bufs).weights == s.weights
        # the buffer is the vector's own memory: the field cannot be assigned while it lives
        with pytest.raises(BufferError, match="Section.weights"):
            s.weights = [0.0]
        assert pickle.loads(data, buffers=bufs).weights == weights(1000)
        bufs[0].release()
        s.weights = [0.0]

    def test_out_of_band_from_other_buffers(self):
        s = t.Section("w")
        s.weights = weights(100)
        data, bufs = dumps_oob(s)
        raw = bytes(bufs[0].raw())
        for given in (raw, bytearray(raw), memoryview(raw)):
            assert pickle.loads(data, buffers=[given]).weights == weights(100)

    @pytest.mark.parametrize("proto", PROTOCOLS)
    def test_in_band(self, proto):
        s = t.Section("w")
        s.weights = weights(500)
        data = pickle.dumps(s, proto)
        assert pickle.loads(data).weights == s.weights
        if proto >= 3:
            assert len(data) < 4500  # 8 bytes per double, not a list of floats

    def test_short_vectors_stay_lists(self):
        s = t.Section("w")
        s.weights = weights(10)
        bufs = []
        pickle.dumps(s, 5, buffer_callback=bufs.append)
        assert bufs == []
        assert s.__reduce_ex__(5)[2][1 + 3] == weights(10)

    def test_constructor_parameter(self):
        """Node.weights is a constructor parameter with a default: the buffer goes with the
        state, the constructor gets the default (its caster takes a list, not bytes)."""
        n = t.Node("n", weights(300), t.Color.green)
        data, bufs = dumps_oob(n)
        assert len(bufs) == 1
        m = pickle.loads(data, buffers=bufs)
        assert m.weights == weights(300) and m.name == "n" and m.color == t.Color.green

    def test_found_as_vector(self):
        s = t.Section("w")
        s.weights = weights(100)
        pickle.dumps(s, 5)
        assert tether._core._reduce_vector_fields()["vector"] >= 1

    def test_copies(self):
        s = t.Section("w")
        s.weights = weights(200)
        assert copy.copy(s).weights == s.weights
        assert copy.deepcopy(s).weights == s.weights

    def test_wrong_size_buffer(self):
        s = t.Section("w")
        s.weights = weights(100)
        names = s.__reduce_ex__(5)[2][0]
        state = (names,) + tuple([] for _ in names[:-1]) + (None,)
        state = list(state)
        state[1 + names.index("weights")] = b"\0" * 12
        state[1 + names.index("anchors")] = {}
        fresh = t.Section()
        with pytest.raises(ValueError, match="whole number"):
            fresh.__setstate__(tuple(state))

    def test_buffer_to_a_field_that_is_no_vector(self):
        fresh = t.Paragraph()
        with pytest.raises(TypeError):
            fresh.__setstate__((None, ("text",), b"abc"))


# ---- numeric vectors without a copy (bindings/src/vector_fields.cpp, invariants V1-V3) ---------

# (field, struct code, values): every number type tether.testing.Samples has, with its limits
SAMPLES = [
    ("f32", "f", [0.5 * i - 20.0 for i in range(98)] + [3.4028234663852886e38, -1.5e-45]),
    ("f64", "d", [0.1 * i for i in range(98)] + [1.7976931348623157e308, -5e-324]),
    ("i8", "b", [i % 256 - 128 for i in range(100)]),
    ("i16", "h", [-(2 ** 15), 2 ** 15 - 1] + list(range(-49, 49))),
    ("i32", "i", [-(2 ** 31), 2 ** 31 - 1] + list(range(-49, 49))),
    ("i64", "q", [-(2 ** 63), 2 ** 63 - 1] + list(range(-49, 49))),
    ("u8", "B", [i % 256 for i in range(100)]),
    ("u16", "H", [0, 2 ** 16 - 1] + list(range(98))),
    ("u32", "I", [0, 2 ** 32 - 1] + list(range(98))),
    ("u64", "Q", [0, 2 ** 64 - 1] + list(range(98))),
]


def samples():
    s = t.Samples()
    for name, _, values in SAMPLES:
        setattr(s, name, values)
    return s


def child(body, timeout=120):
    """Runs `body` in a new interpreter (a crash fails this test, not the suite)."""
    code = "import gc, pickle, tether\nfrom tether import testing as t\n" + \
        textwrap.dedent(body) + "\nprint('OK')\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, (proc.returncode, proc.stdout[-2000:], proc.stderr[-4000:])
    assert proc.stdout.strip().endswith("OK")


def exports():
    return tether._core._reduce_vector_fields()["exports"]


class TestVectorBuffers:
    """Protocol 5 hands pickle the vector's own memory: one buffer per field, no copy."""

    def test_one_buffer_for_a_million(self):
        s = t.Section("w")
        s.weights = [0.5 * i for i in range(1_000_000)]
        data, bufs = dumps_oob(s)
        assert len(bufs) == 1 and len(data) < 300
        raw = bufs[0].raw()
        assert raw.nbytes == 8_000_000 and raw.readonly
        assert memoryview(bufs[0]).format == "d" and memoryview(bufs[0])[999_999] == 499_999.5
        back = pickle.loads(data, buffers=bufs)
        assert back.weights == s.weights
        del raw, bufs
        assert exports() == 0

    def test_no_copy(self):
        """Two dumps of one object export the same memory (a copy would have its own)."""
        np = pytest.importorskip("numpy")
        s = t.Section("w")
        s.weights = weights(1000)
        a, b = [], []
        pickle.dumps(s, 5, buffer_callback=a.append)
        pickle.dumps(s, 5, buffer_callback=b.append)
        pa, pb = (np.frombuffer(x, dtype=np.float64) for x in (a[0], b[0]))
        assert pa.ctypes.data == pb.ctypes.data
        assert pa.tolist() == weights(1000)
        del pa, pb, a, b

    @pytest.mark.parametrize("how", ["oob", "inband5", "pickle4", "pickle2", "copy", "deepcopy"])
    def test_every_number_type_exactly(self, how):
        s = samples()
        if how == "oob":
            data, bufs = dumps_oob(s)
            assert len(bufs) == len(SAMPLES)
            assert sorted(memoryview(b).format for b in bufs) == sorted(c for _, c, _ in SAMPLES)
            back = pickle.loads(data, buffers=bufs)
        elif how in ("copy", "deepcopy"):
            back = getattr(copy, how)(s)
        else:
            back = pickle.loads(pickle.dumps(s, 5 if how == "inband5" else int(how[-1])))
        for name, _, values in SAMPLES:
            got = getattr(back, name)
            if name == "f32":  # float32 rounding: compare with what the field itself holds
                assert got == getattr(s, name)
            else:
                assert got == values, name

    def test_own_allocator_travels_as_a_list(self):
        """A std::vector with its own allocator type is no numeric vector field."""
        s = t.Samples()
        s.tail = weights(500)
        data, bufs = dumps_oob(s)
        assert bufs == []
        assert pickle.loads(data).tail == weights(500)


class TestWritesWhileExported:
    """V2: while a buffer of the vector lives, Python cannot free the memory it shows."""

    def test_setter_and_setstate_raise(self):
        s = t.Section("w")
        s.weights = weights(1000)
        data, bufs = dumps_oob(s)
        before = bytes(bufs[0].raw())
        with pytest.raises(BufferError, match=r"Section\.weights"):
            s.weights = [1.0, 2.0]
        state = s.__reduce_ex__(2)[2]  # (names, *values), weights as bytes
        with pytest.raises(BufferError, match=r"Section\.weights"):
            s.__setstate__(state)
        with pytest.raises(BufferError):  # a state holding a buffer of the field itself
            s.__setstate__(s.__reduce_ex__(5)[2])
        assert pickle.loads(data, buffers=bufs).weights == weights(1000)
        assert bytes(bufs[0].raw()) == before and s.weights == weights(1000)
        s.title = "other fields stay writable"
        bufs.clear()  # released: writes work again
        s.weights = [1.0, 2.0]
        assert s.weights == [1.0, 2.0] and exports() == 0

    def test_memoryview_counts_too(self):
        s = t.Section("w")
        s.weights = weights(100)
        bufs = []
        pickle.dumps(s, 5, buffer_callback=bufs.append)
        mv = memoryview(bufs[0])
        bufs[0].release()
        with pytest.raises(BufferError):
            s.weights = []
        assert mv.tolist() == weights(100)
        mv.release()
        s.weights = []
        del bufs

    def test_fields_are_counted_apart(self):
        s = samples()
        bufs = []
        pickle.dumps(s, 5, buffer_callback=bufs.append)
        del bufs[1:]  # keep f32's buffer only
        s.f64 = [1.0]
        with pytest.raises(BufferError, match=r"Samples\.f32"):
            s.f32 = [1.0]
        bufs.clear()
        s.f32 = [1.0]

    def test_concurrent_writers(self):
        s = t.Section("w")
        s.weights = weights(100)
        stop = threading.Event()
        seen = []

        def writer():
            ok = refused = 0
            while not stop.is_set():
                try:
                    s.weights = weights(100)
                    ok += 1
                except BufferError:
                    refused += 1
            seen.append((ok, refused))

        th = threading.Thread(target=writer)
        th.start()
        try:
            for _ in range(300):
                bufs = []
                pickle.dumps(s, 5, buffer_callback=bufs.append)
                assert memoryview(bufs[0]).tolist() == weights(100)
                del bufs
        finally:
            stop.set()
            th.join()
        assert seen and exports() == 0


class TestBufferLifetime:
    """V1: a buffer keeps the object's memory, whatever happens to the object in Python."""

    def test_object_deleted(self):
        child("""
            s = t.Section("w")
            s.weights = [0.25 * i for i in range(100_000)]
            bufs = []
            pickle.dumps(s, 5, buffer_callback=bufs.append)
            mv = memoryview(bufs[0])
            del s, bufs
            gc.collect()
            junk = [[float(i)] * 64 for i in range(20_000)]   # reuse of freed memory shows
            junk2 = [t.Section("x") for _ in range(1000)]
            assert mv.tolist() == [0.25 * i for i in range(100_000)]
            assert tether.stats()["live"] >= 1          # the exporter holds the object
            del mv
            gc.collect()
            del junk2
            gc.collect()
            assert tether.stats()["live"] == 0, tether.stats()
        """)

    def test_object_moved_into_cpp(self):
        child("""
            s = t.Section("w")
            s.weights = [0.5 * i for i in range(1000)]
            bufs = []
            pickle.dumps(s, 5, buffer_callback=bufs.append)
            t.consume(tether.move(s))                   # C++ takes it over and drops it
            junk = [t.Section("x") for _ in range(100)]
            assert memoryview(bufs[0]).tolist() == [0.5 * i for i in range(1000)]
            del bufs
            gc.collect()
            del junk
            gc.collect()
            assert tether.stats()["live"] == 0, tether.stats()
        """)


class TestMalformedBuffers:
    """Buffers that cannot fill the field raise TypeError or ValueError (in a child)."""

    def test_malformed(self):
        child("""
            import array
            s = t.Samples()
            s.f64 = [0.5 * i for i in range(100)]
            s.i16 = list(range(100))
            fn, args, state = s.__reduce_ex__(5)
            names = state[0]

            def load(field, value):
                st = list(state)
                st[1 + names.index(field)] = value
                fresh = t.Samples()
                fresh.__setstate__(tuple(st))
                return fresh

            def refused(field, value, exc, text):
                try:
                    load(field, value)
                except exc as e:
                    assert text in str(e), (field, str(e))
                else:
                    raise AssertionError(("accepted", field, value))

            raw = bytes(8 * 100)
            refused("f64", raw[:-3], ValueError, "whole number")
            refused("f64", memoryview(bytes(800)).cast("f"), TypeError, "'f'")
            refused("f64", memoryview(bytes(800)).cast("q"), TypeError, "'q'")
            refused("i16", memoryview(bytes(800)).cast("H"), TypeError, "'H'")
            refused("f64", memoryview(bytearray(1600)).cast("d")[::2], ValueError, "contiguous")
            refused("f64", memoryview(bytes(800)).cast("B", (100, 8)).cast("B").cast("?"),
                    TypeError, "'?'")
            assert load("f64", raw).f64 == [0.0] * 100              # raw bytes: 8 per item
            assert load("f64", array.array("d", [1.5] * 70)).f64 == [1.5] * 70
            assert load("i16", memoryview(bytes(6)).cast("h")).i16 == [0, 0, 0]
            assert load("f64", b"").f64 == []
        """)

class TestNdarrayField:
    """An nb::ndarray field holds the NumPy array it was given (no copy): pickle hands that
    array to NumPy, which ships its memory as one out-of-band buffer and, on loads, makes a
    view of the received buffer, which the field then holds."""

    @pytest.fixture
    def np(self):
        return pytest.importorskip("numpy")

    def test_the_field_holds_the_array(self, np):
        g = t.Grid()
        assert g.values is None and g.total() == 0.0
        a = np.arange(1000, dtype=np.float64)
        g.values = a
        assert g.values is a and g.total() == a.sum()
        g.values = None
        assert g.values is None and g.total() == 0.0

    def test_one_buffer_and_no_copy_either_way(self, np):
        g = t.Grid()
        g.values = np.arange(1_000_000, dtype=np.float64) * 0.5
        data, bufs = dumps_oob(g)
        assert len(bufs) == 1 and bufs[0].raw().nbytes == 8_000_000 and len(data) < 400
        assert np.shares_memory(np.asarray(bufs[0].raw()).view(np.float64), g.values)
        back = pickle.loads(data, buffers=bufs)
        assert back.total() == g.total() and np.shares_memory(back.values, g.values)
        wire = [bytes(b.raw()) for b in bufs]  # read-only memory, as a transport delivers
        back = pickle.loads(data, buffers=wire)
        assert back.total() == g.total() and not back.values.flags.writeable

    @pytest.mark.parametrize("protocol", [2, 4, 5])
    def test_in_band_protocols_and_copies(self, np, protocol):
        g = t.Grid()
        g.values = np.linspace(0.0, 1.0, 300)
        back = pickle.loads(pickle.dumps(g, protocol))
        assert (back.values == g.values).all() and back.values is not g.values
        assert (copy.deepcopy(g).values == g.values).all()
        assert copy.copy(g).values is g.values
        empty = pickle.loads(pickle.dumps(t.Grid(), protocol))
        assert empty.values is None

    def test_wrong_arrays_raise_type_error_naming_the_field(self, np):
        g = t.Grid()
        for bad in (np.zeros((2, 2)), "x", [1.0, 2.0]):
            with pytest.raises(TypeError, match=r"Grid\.values: expected numpy\.ndarray\[dtype=float64"):
                g.values = bad
        assert g.values is None
        g.values = np.arange(8.0)[::2]  # nanobind makes a C-contiguous copy, as for arguments
        assert list(g.values) == [0.0, 2.0, 4.0, 6.0] and g.values.flags.c_contiguous

    def test_released_by_a_cpp_thread(self, np):
        """The last reference dropped on a std::thread: nanobind takes the GIL to let go of
        the array (the caller released it meanwhile), and the array's count comes back."""
        a = np.arange(10.0)
        base = sys.getrefcount(a)
        box = t.Box(None)
        g = t.Grid()
        g.values = a
        box.value = tether.move(g)  # C++ alone holds it: no wrapper
        del g
        t.release_in_thread(box)
        collect()
        assert sys.getrefcount(a) == base

    def test_the_memory_outlives_the_object(self, np):
        g = t.Grid()
        g.values = np.arange(100, dtype=np.float64)
        bufs = []
        pickle.dumps(g, protocol=5, buffer_callback=bufs.append)
        del g
        collect()
        junk = [t.Grid() for _ in range(100)]  # noqa: F841
        assert np.asarray(bufs[0].raw()).view(np.float64)[99] == 99.0


class Plain(t.Outer):
    pass


class Slotted(t.Outer):
    __slots__ = ("tag",)


class OwnState(t.Outer):
    def __getstate__(self):
        d, values = super().__getstate__()
        values["x"] = t.Inner(99)  # replaced on the way
        return d, values


class OwnSetState(t.Inner):
    seen = []

    def __setstate__(self, state):
        OwnSetState.seen.append(type(state))
        super().__setstate__(state)


class OwnReduce(t.Inner):
    def __reduce__(self):
        return (OwnReduce._make, (self.value + 1,))

    @staticmethod
    def _make(v):
        return OwnReduce(v)


class Late(t.Inner):
    pass


class TestSubclasses:
    """Python state comes along; a subclass's own methods are used."""

    def test_dict_and_slots(self):
        p = Plain(t.Inner(1))
        p.note = [1, 2]
        s = Slotted(t.Inner(2))
        s.tag = "t"
        for how in (lambda o: pickle.loads(pickle.dumps(o)), copy.copy, copy.deepcopy):
            p2, s2 = how(p), how(s)
            assert type(p2) is Plain and p2.note == [1, 2] and p2.x.value == 1
            assert type(s2) is Slotted and s2.tag == "t" and s2.x.value == 2

    def test_getstate_override(self):
        o = OwnState(t.Inner(1))
        for how in (lambda o: pickle.loads(pickle.dumps(o)), copy.copy, copy.deepcopy):
            assert how(o).x.value == 99

    def test_setstate_override_gets_the_dict_layout(self):
        OwnSetState.seen.clear()
        o = OwnSetState(5)
        o.note = "n"
        o2 = pickle.loads(pickle.dumps(o))
        assert o2.note == "n" and o2.value == 5 and OwnSetState.seen == [tuple]

    def test_reduce_override(self):
        o = OwnReduce(1)
        assert pickle.loads(pickle.dumps(o)).value == 2
        assert copy.copy(o).value == 2 and copy.deepcopy(o).value == 2

    def test_layout_follows_the_class(self):
        """A method added to (and removed from) the class after its first pickle counts."""
        o = Late(1)
        assert pickle.loads(pickle.dumps(o)).value == 1
        Late.__reduce__ = lambda self: (Late, (self.value + 10,))
        try:
            assert pickle.loads(pickle.dumps(o)).value == 11
        finally:
            del Late.__reduce__
        assert pickle.loads(pickle.dumps(o)).value == 1

    def test_local_class_in_this_process(self):
        class Local(t.Inner):
            def twice(self):
                return 2 * self.value

        o = Local(4)
        o2 = pickle.loads(pickle.dumps(o))
        assert type(o2) is Local and o2.twice() == 8

    def test_local_class_whatever_is_imported(self, monkeypatch):
        """Importing cloudpickle (as Dask does) does not change what plain pickle writes."""
        monkeypatch.setitem(sys.modules, "cloudpickle", sys.modules.get("cloudpickle")
                            or types.ModuleType("cloudpickle"))

        class Local(t.Inner):
            def twice(self):
                return 2 * self.value

        o2 = pickle.loads(pickle.dumps(Local(4)))
        assert type(o2) is Local and o2.twice() == 8

    def test_cloudpickle_sends_a_local_body(self, monkeypatch):
        """cloudpickle writes a local class's methods: a process that never saw the class
        (here: this one, with the class forgotten) makes it from them."""
        cloudpickle = pytest.importorskip("cloudpickle")

        class Local(t.Inner):
            def twice(self):
                return 2 * self.value

        data = cloudpickle.dumps(Local(4))
        monkeypatch.setattr(_pickle, "_by_value", weakref.WeakValueDictionary())
        o2 = pickle.loads(data)
        assert type(o2) is not Local and type(o2).__qualname__ == Local.__qualname__
        assert o2.twice() == 8 and isinstance(o2, t.Inner)

    def test_class_made_from_its_body(self):
        """A receiver without the class makes it once from bases and body."""
        class Remote(t.Inner):
            def twice(self):
                return 2 * self.value

        spec = _pickle._class_ref(Remote)
        fn, args = spec.__reduce__()
        body = _pickle._class_body(Remote)  # what cloudpickle sends (pickle cannot: local)
        args = ("elsewhere", "Remote", "Remote", args[3], body, "uid-not-seen-here")
        made = fn(*args)
        assert made is not Remote and made.__bases__ == (t.Inner,)
        assert made(3).twice() == 6 and made.__qualname__ == "Remote"
        assert fn(*args) is made  # once per uid


class TestBadInput:
    """Malformed reductions and states raise exceptions; nothing crashes."""

    def test_rebuild(self):
        rb = tether._core._rebuild
        with pytest.raises(TypeError):
            rb()
        with pytest.raises(TypeError):
            rb(int, ())
        with pytest.raises(TypeError):
            rb(t.Paragraph, "text", "x")
        with pytest.raises(TypeError):
            rb(t.Paragraph, (1,), "x")
        with pytest.raises(TypeError):
            rb(t.Paragraph, ("text", "text"), "x", "y")
        with pytest.raises(TypeError):
            rb(t.Paragraph, ("nope",), "x")
        with pytest.raises(TypeError):
            rb(t.Paragraph, ("text",), 5)
        with pytest.raises(TypeError, match="Object"):
            rb(tether.Object, ())
        assert rb(t.Paragraph, ("text",), "ok").text == "ok"

    def test_setstate(self):
        p = t.Paragraph()
        with pytest.raises(TypeError):
            p.__setstate__((None, ("text",)))
        with pytest.raises(TypeError):
            p.__setstate__((None, (1,), "x"))
        with pytest.raises(TypeError):
            p.__setstate__((None, ("text",), 5))
        with pytest.raises(TypeError):
            p.__setstate__(([], ("text",), "x"))
        with pytest.raises(AttributeError):
            p.__setstate__((None, ("no_such_field",), "x"))

    def test_class_by_value(self):
        with pytest.raises(TypeError):
            _pickle._class_by_value("m", "Q", "Q", (int,), {}, "u")
        with pytest.raises(TypeError):
            _pickle._class_by_value("m", "Q", "Q", (), {}, "u")
        with pytest.raises(pickle.UnpicklingError):
            _pickle._class_by_value("m", "Q", "Q", (t.Inner,), None, "u2")

    def test_deep_chain_is_a_recursion_error(self):
        head = t.Box()
        node = head
        for _ in range(20000):
            nxt = t.Box()
            node.value = nxt
            node = nxt
        with pytest.raises(RecursionError):
            copy.deepcopy(head)
        # unlink iteratively: dropping a 20000-deep chain recursively could itself overflow
        node = head
        while node is not None:
            nxt = node.value
            node.value = None
            node = nxt

    def test_moved(self):
        i = t.Inner(1)
        t.consume(tether.move(i))
        for how in (pickle.dumps, copy.copy, copy.deepcopy):
            with pytest.raises(ValueError, match="moved"):
                how(i)


class TestThreads:
    def test_concurrent_pickling(self):
        d = t.Document("d")
        for i in range(20):
            s = t.Section("s%d" % i)
            s.weights = weights(100)
            for j in range(10):
                s.add(t.Paragraph("p"))
            d.add(s)
        errors = []

        def work():
            try:
                for _ in range(20):
                    e = pickle.loads(pickle.dumps(d, 5))
                    assert len(e.sections) == 20 and e.sections[3].weights == weights(100)
                    copy.deepcopy(d)
            except Exception as ex:  # pragma: no cover - reported below
                errors.append(ex)

        threads = [threading.Thread(target=work) for _ in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert not errors

    def test_first_pickles_of_new_classes_race(self):
        """Threads pickle objects of classes nobody has pickled yet while another thread keeps
        spoiling the classes' key lists: layouts, name tuples and keys are all made and read
        under contention (the free-threaded build's case), and every message still loads
        with its sharing."""
        classes = []
        for i in range(8):
            C = type("Race%d" % i, (t.Paragraph,), {"__module__": __name__})
            globals()[C.__name__] = C
            classes.append(C)
        barrier = threading.Barrier(5)
        stop = threading.Event()
        errors = []

        def work(k):
            try:
                barrier.wait()
                for _ in range(30):
                    objs = [C("x%d" % k) for C in classes]
                    back = pickle.loads(pickle.dumps(objs + objs, 5))
                    assert [type(o) for o in back[:8]] == classes and back[0] is back[8]
                    assert all(o.text == "x%d" % k for o in back)
            except Exception as ex:  # pragma: no cover - reported below
                errors.append(ex)

        def spoil():
            barrier.wait()
            while not stop.is_set():
                for C in classes:
                    keys = C.__dict__.get("__tether_rebuild_keys__")
                    if keys is not None:
                        keys[:] = [None, (C, ("text",))]

        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        spoiler = threading.Thread(target=spoil)
        try:
            for th in threads + [spoiler]:
                th.start()
            for th in threads:
                th.join()
        finally:
            stop.set()
            spoiler.join()
            for C in classes:
                del globals()[C.__name__]
        assert not errors, errors[0]


class TestDaskToken:
    def test_deterministic_and_content_based(self):
        def make(v):
            d = t.Document("d")
            s = t.Section("s")
            s.add(t.Paragraph("p"))
            s.weights = weights(100, v)
            d.add(s)
            return d

        a, b, c = make(0), make(0), make(1)
        assert a.__dask_tokenize__() == a.__dask_tokenize__() == b.__dask_tokenize__()
        assert a.__dask_tokenize__() != c.__dask_tokenize__()
        a.title = "changed"
        assert a.__dask_tokenize__() != b.__dask_tokenize__()

    def test_cycle(self):
        b1, b2 = t.Box(), t.Box()
        b1.value, b2.value = b2, b1
        assert isinstance(b1.__dask_tokenize__(), tuple)
        b1.value = None
        collect()


@tether.dataclass
class Holder(tether.Object):
    items: list | None = None
    label: str = ""


class TestDataclassFields:
    """@tether.dataclass fields store Python objects: copies keep their sharing and cycles."""

    def test_shared_list(self):
        a = Holder([1, 2], "a")
        b = Holder(a.items, "b")
        for how in (copy.deepcopy, lambda o: pickle.loads(pickle.dumps(o))):
            c = how([a, b])
            assert c[0].items is c[1].items and c[0].items is not a.items
            assert c[0].items == [1, 2] and c[1].label == "b"

    def test_cycle_through_a_list(self):
        a = Holder(None, "a")
        a.items = [a]
        for how in (copy.deepcopy, lambda o: pickle.loads(pickle.dumps(o))):
            c = how(a)
            assert c.items[0] is c and c is not a
            c.items = None
        a.items = None


class TestListFieldsOptOut:
    def test_named_fields_travel_as_lists(self):
        class AsLists(t.Section):
            __tether_list_fields__ = ("weights",)

        s = AsLists("w")
        s.weights = weights(500)
        data, bufs = dumps_oob(s)
        assert bufs == []
        assert pickle.loads(data).weights == weights(500)
