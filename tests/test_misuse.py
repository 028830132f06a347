# SPDX-License-Identifier: Apache-2.0
"""tests/test_misuse.py: misuse raises a clear Python exception and never crashes.

Covers moved-from wrappers used anywhere, tether.move() twice, fields written by one thread
while others read them, corrupted or truncated pickles, a tether module loaded a second time
(its types bound twice), and tether imported into a subinterpreter.
"""
import contextlib
import importlib.util
import os
import pickle
import resource
import shutil
import subprocess
import sys
import textwrap
import threading

import pytest

import tether
from tether import testing as t

pytestmark = pytest.mark.usefixtures("clean")

MOVED = "moved into C\\+\\+ with tether.move"


def moved(obj):
    """Move obj's object into C++ (consume keeps nothing) and return the shell."""
    t.consume(tether.move(obj))
    return obj


class SubInner(t.Inner):
    """A Python subclass: its moved-from shell keeps its __dict__ but not its object."""


class TestMovedFromWrapperUsedAnywhere:
    """Property: every use of a moved-from wrapper that needs its object raises ValueError
    naming tether.move; uses that don't (repr, __dict__, type) still work."""

    def test_field_read_and_write(self):
        i, o, b = moved(t.Inner(1)), moved(t.Outer()), moved(t.Box())
        for get in (lambda: i.value, lambda: o.x, lambda: o.items, lambda: b.value):
            with pytest.raises(ValueError, match=MOVED):
                get()
        with pytest.raises(ValueError, match=MOVED):
            i.value = 3
        with pytest.raises(ValueError, match=MOVED):
            o.x = t.Inner(2)

    def test_as_argument_everywhere(self):
        shell = moved(t.Inner(1))
        calls = [
            lambda: t.echo(shell),
            lambda: t.echo_inner(shell),
            lambda: t.use_count(shell),
            lambda: t.call(lambda x: x, shell),
            lambda: t.Box(shell),
            lambda: t.Outer(shell),
            lambda: t.Outer(None, shell),
            lambda: setattr(t.Outer(), "x", shell),
            lambda: setattr(t.Box(), "value", shell),
        ]
        for call in calls:
            with pytest.raises(ValueError, match=MOVED):
                call()

    @pytest.mark.parametrize("items", ["[t.Inner(1), shell]",
                                       "[tether.move(i), tether.move(i)]"])
    def test_inside_a_list(self, items):
        """Inside a container the conversion must fail cleanly (nanobind's list caster is
        noexcept): a TypeError for the field, never an abort. Run in a child process so that a
        regression cannot take the test session down."""
        code = textwrap.dedent(f"""
            import tether
            from tether import testing as t
            i = t.Inner(1)
            shell = t.Inner(2)
            t.consume(tether.move(shell))
            o = t.Outer()
            o.items = [t.Inner(3)]
            try:
                o.items = {items}
            except (ValueError, TypeError) as e:
                print(type(e).__name__, e)
            assert [x.value for x in o.items] == [3]
        """)
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        assert r.stdout.startswith("TypeError") and "Outer.items: expected list" in r.stdout

    def test_failed_assignment_keeps_old_value(self):
        o = t.Outer(t.Inner(5))
        old = o.x
        with pytest.raises(ValueError, match=MOVED):
            o.x = moved(t.Inner(1))
        assert o.x is old and old.value == 5

    def test_move_again(self):
        shell = moved(t.Inner(1))
        with pytest.raises(ValueError, match=MOVED):
            tether.move(shell)

    def test_harmless_uses_still_work(self):
        shell = moved(SubInner(1))
        shell.note = "kept"
        assert "SubInner" in repr(shell)
        assert shell.note == "kept" and isinstance(shell, t.Inner)
        assert shell is not None and hash(shell) == hash(shell)

    def test_pickle_of_moved_from_raises(self):
        shell = moved(t.Inner(1))
        with pytest.raises((ValueError, TypeError)):
            pickle.dumps(shell)


class TestMoveTwice:
    """Property: a second move of one wrapper raises ValueError, whether the first move
    was consumed already or is still pending in a token."""

    def test_second_token_fails_when_used(self):
        i = t.Inner(1)
        first, second = tether.move(i), tether.move(i)  # tokens only mark the intent
        assert t.consume(first) == 1
        with pytest.raises(ValueError, match=MOVED):
            t.consume(second)

    def test_one_token_consumed_twice(self):
        token = tether.move(t.Inner(1))
        t.consume(token)
        with pytest.raises(ValueError, match=MOVED):
            t.consume(token)

    def test_token_where_no_ref_parameter(self):
        i = t.Inner(1)
        token = tether.move(i)
        for call in (lambda: t.echo_inner(token), lambda: t.use_count(token)):
            with pytest.raises(TypeError):
                call()
        assert i.value == 1 and t.use_count(i) == 1  # nothing was taken

    def test_token_of_wrong_type(self):
        o = t.Outer()
        with pytest.raises(TypeError):
            o.x = tether.move(t.Box())
        with pytest.raises(TypeError, match="expects a tether object"):
            tether.move(3)


class TestFieldsWrittenWhileRead:
    """Property: one thread assigning a field (also wrong types) while others read it:
    readers see None or an Inner with a value that was assigned, writers see TypeError
    for bad values, and nothing crashes or leaks."""

    def test_assign_while_reading(self):
        o = t.Outer(t.Inner(0))
        stop = threading.Event()
        errors = []
        n = 5000

        def writer():
            try:
                for i in range(n):
                    o.x = t.Inner(i) if i % 7 else None
                    try:
                        o.x = "not an Inner"
                    except TypeError:
                        pass
                    else:
                        errors.append("bad value accepted")
            finally:
                stop.set()

        def reader():
            try:
                while not stop.is_set():
                    x = o.x
                    if x is not None:
                        assert type(x) is t.Inner and 0 <= x.value < n
                        assert x is t.echo(x)
            except BaseException as e:  # noqa: BLE001 - re-raised below
                errors.append(e)

        threads = [threading.Thread(target=writer)]
        threads += [threading.Thread(target=reader) for _ in range(3)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert not errors, errors[:3]
        del o


def _pickle_supported():
    try:
        return pickle.loads(pickle.dumps(t.Inner(3))).value == 3
    except Exception:
        return False


@contextlib.contextmanager
def address_space_cap(extra=2 << 30):
    """Cap this process's address space at its current size plus `extra` bytes.

    A flipped byte can turn a memo index into ~40 GB: the unpickler then grows its memo to
    that size. Where the allocator overcommits (mimalloc on free-threaded 3.13) the memset
    that follows pages the machine into the OOM killer; under the cap it is a MemoryError.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as f:
        vm = int(f.read().split()[0]) * resource.getpagesize()
    cap = vm + extra if hard == resource.RLIM_INFINITY else min(vm + extra, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@pytest.mark.skipif(not _pickle_supported(), reason="tether objects do not pickle yet")
@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc to cap memory")
class TestCorruptPickles:
    """Property: every truncation and many byte flips of a tether pickle raise an exception
    (or load to a well-formed object); none crashes the interpreter."""

    def test_truncated(self):
        data = pickle.dumps(t.Outer(t.Inner(1), t.Inner(2)))
        with address_space_cap():
            for cut in range(len(data)):
                with pytest.raises(Exception):
                    pickle.loads(data[:cut])

    def test_flipped_bytes(self):
        data = pickle.dumps(t.Outer(t.Inner(1), t.Inner(2)))
        for pos in range(len(data)):
            bad = bytearray(data)
            bad[pos] ^= 0x5A
            try:
                with address_space_cap():
                    obj = pickle.loads(bytes(bad))
            except Exception:
                continue
            repr(obj)  # whatever loaded must be usable


class TestTypeRegisteredTwice:
    """Property: loading tether.testing a second time (a copy of its .so, so every C++ type
    is bound again) keeps the first binding: nanobind warns "already registered", the second
    module's functions return objects of the first module's types, and identity, fields and
    counts stay right for objects made by either module."""

    def test_second_binding_reuses_first_type(self, tmp_path):
        dst = tmp_path / os.path.basename(t.__file__)
        shutil.copy(t.__file__, dst)
        spec = importlib.util.spec_from_file_location("tether.testing", dst)
        second = importlib.util.module_from_spec(spec)
        with pytest.warns(RuntimeWarning, match="already registered"):
            spec.loader.exec_module(second)
        x = second.make_inner(3)
        assert type(x) is t.Inner and x.value == 3
        assert second.echo(x) is x and t.echo(x) is x
        o = t.Outer(x)
        ident = id(x)
        del x
        junk = [t.Inner(0) for _ in range(64)]
        assert id(o.x) == ident and second.optional_x(o) is o.x
        assert second.use_count(o.x) == 2
        del junk
        assert t.Inner.__tether_fields__ == ("value",)
        assert t.Outer.__tether_fields__ == ("x", "y", "items")


SUBINTERPRETER = textwrap.dedent("""
    import sys
    try:
        import _interpreters as I          # 3.13+
    except ImportError:
        import _xxsubinterpreters as I     # 3.12
    interp = I.create()
    code = "import tether.testing"
    if hasattr(I, "exec"):
        err = I.exec(interp, code)
        print("ok" if err is None else f"{err.type.__name__}: {err.msg}")
    else:
        try:
            I.run_string(interp, code)
            print("ok")
        except Exception as e:
            print(f"{type(e).__name__}: {e}")
    I.destroy(interp)
    import tether.testing as t             # the main interpreter is unaffected
    assert t.Outer(t.Inner(1)).x.value == 1
    print("main ok")
""")


@pytest.mark.skipif(sys.version_info < (3, 12), reason="no subinterpreter API before 3.12")
class TestSubinterpreter:
    """Property: importing tether into a subinterpreter (unsupported: nanobind declares
    Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED) raises ImportError there and leaves the
    main interpreter working; the process does not crash."""

    def test_import_in_subinterpreter_raises(self):
        r = subprocess.run([sys.executable, "-c", SUBINTERPRETER], capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        lines = r.stdout.split("\n")
        # 3.13: "ImportError: ..."; 3.12 wraps it: "RunFailedError: <class 'ImportError'>: ..."
        assert "ImportError" in lines[0] and "subinterpreters" in lines[0], r.stdout
        assert "main ok" in r.stdout


class TestBoundInitReplaced:
    """The type call caches each bound type's __init__ per version tag (type_slots.cpp,
    lookup_init). Replacing __init__ on the class, deleting it, or doing so while other
    threads construct, is seen by the very next construction and never calls a freed one."""

    def test_replacement_is_seen_and_undone(self):
        original = t.Inner.__dict__["__init__"]
        calls = []

        def init(self, value=0):
            calls.append(value)
            original(self, value + 1)

        t.Inner(1)  # cache the bound one
        try:
            t.Inner.__init__ = init
            assert t.Inner(5).value == 6 and calls == [5]
        finally:
            t.Inner.__init__ = original
        assert t.Inner(5).value == 5 and calls == [5]

    def test_replaced_while_other_threads_construct(self):
        code = textwrap.dedent("""
            import threading
            from tether import testing as t
            original = t.Inner.__dict__["__init__"]
            stop = threading.Event()
            made = [0] * 4
            def work(i):
                while not stop.is_set():
                    t.Inner(i)
                    made[i] += 1
            threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
            for th in threads:
                th.start()
            for n in range(2000):
                # a new function object each time: the old one may be freed unless kept
                t.Inner.__init__ = (lambda self, v=0, n=n: original(self, v))
                t.Inner.__init__ = original
            stop.set()
            for th in threads:
                th.join()
            assert all(made), made
            assert t.Inner(3).value == 3
            print("ok")
        """)
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-3000:]
