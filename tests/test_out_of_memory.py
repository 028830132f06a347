# SPDX-License-Identifier: Apache-2.0
"""tests/test_out_of_memory.py: every allocation failure is a MemoryError (issue 22, defect 7).

Never an abort, a leak, a hang or a poisoned cache:

- a field setter converts containers, optionals and strings in code that may throw
  (tether/fields.h, Writer), so a std::bad_alloc (here: `RLIMIT_AS`) is a MemoryError;
  nanobind's casters convert in a `noexcept` function, where it called std::terminate;
- a trampoline dispatch releases the GIL, its wrapper and the method on every exit path
  (tether/trampoline.h): the override's name failing to allocate was a RuntimeError that
  leaked the wrapper, and on a std::thread left the GIL held (the caller hung);
- no static cache stays NULL after a failed first initialisation (tether._data's name of
  `__tether_slot_count__`: every later dataclass construction raised SystemError).

The sweep fails one CPython allocation at a time (`_testcapi.set_nomemory(k, k + 1)`) during
each public operation, in a forked copy of a child interpreter per k (so a crash or a hang
costs one k, and a first initialisation is first in every copy). The operation must raise
MemoryError or succeed; then, with allocation working again, it must succeed, and once every
object is dropped `tether.stats()` must be back to zero.
"""
import os
import subprocess
import sys
import sysconfig
import textwrap

import pytest

try:
    import _testcapi
    HAVE_NOMEMORY = hasattr(_testcapi, "set_nomemory")
except ImportError:
    HAVE_NOMEMORY = False

needs_nomemory = pytest.mark.skipif(not HAVE_NOMEMORY,
                                    reason="_testcapi.set_nomemory is not available")
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="fork, RLIMIT_AS and /proc: Linux")


def child(code, timeout=300):
    """Run `code` in a fresh interpreter; it must exit 0 and print OK last."""
    try:
        proc = subprocess.run([sys.executable, "-X", "faulthandler", "-c",
                               textwrap.dedent(code)],
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the child interpreter hung (killed after {timeout} s): {e.stdout!r}")
    assert proc.returncode == 0, (proc.returncode, proc.stdout[-3000:], proc.stderr[-4000:])
    assert proc.stdout.strip().endswith("OK"), (proc.stdout[-3000:], proc.stderr[-3000:])
    return proc.stdout


# The harness, run in a child interpreter. sweep(name, setup, op) forks once per k; the fork
# builds its objects with setup(), fails allocation number k during op(objs), checks the
# outcome, runs op again, drops everything and checks tether.stats(). Prints one line per
# operation: "<name>: <n> MemoryError, <n> succeeded".
HARNESS = r'''
import copy, functools, gc, os, pickle, select, signal, sys, tempfile, time
import _testcapi
import tether
from tether import testing as t

ZERO = {"live": 0, "bound": 0, "shared": 0, "orphaned": 0}
# CPython itself aborts when it cannot allocate a thread state for a thread entering Python
# (PyGILState_Ensure): not tether's to fix, and no k that hits it counts as a failure.
CPYTHON_FATAL = ("Couldn't create thread-state for new thread",)
# CPython 3.11 loses the MemoryError of a KeyError it cannot allocate inside these pure-Python
# stdlib functions (a miss in a WeakKeyDictionary, which tether's caches use): SystemError
# "<function ...> returned NULL without setting an exception", with or without tether.
CPYTHON_LOST_ERROR = ("<function WeakKeyDictionary.__getitem__ ",)




def cpython_lost_error(e):
    if isinstance(e, SystemError):
        return ("returned NULL without setting an exception" in str(e)
                and str(e).startswith(CPYTHON_LOST_ERROR))
    # pickle (C) replaces any failure to import the module of a global it saves, MemoryError
    # included, with PicklingError("Can't pickle ...: import of module ... failed").
    return isinstance(e, pickle.PicklingError) and "import of module" in str(e)


def collect():
    for _ in range(3):
        gc.collect()


def in_fork(setup, op, k):
    """Run in the forked copy: returns (exit code, message)."""
    objs = setup()
    hit = None
    _testcapi.set_nomemory(k, k + 1)
    try:
        op(objs)
    except MemoryError:
        hit = "MemoryError"
    except BaseException as e:
        _testcapi.remove_mem_hooks()
        if cpython_lost_error(e):
            hit = "CPython"
        else:
            return 2, f"k={k}: {type(e).__name__}: {e}"
    finally:
        _testcapi.remove_mem_hooks()
    try:
        op(objs)                      # works normally again
    except BaseException as e:
        return 3, f"k={k}: afterwards {type(e).__name__}: {e}"
    objs = None
    collect()
    stats = tether.stats()
    if stats != ZERO:
        return 4, f"k={k}: stats {stats} after dropping everything"
    return (10 if hit else 0), ""


def sweep(name, setup, op, kmax=2000, quiet_after=25, timeout=20):
    errors, succeeded, streak = 0, 0, 0
    for k in range(kmax):
        log = tempfile.TemporaryFile()
        sys.stdout.flush(); sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            try:
                code, msg = in_fork(setup, op, k)
                if msg:
                    print(msg, flush=True)
            except BaseException as e:
                code = 5
                print(f"k={k}: harness {type(e).__name__}: {e}", flush=True)
            os._exit(code)
        deadline = time.monotonic() + timeout
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise SystemExit(f"{name}: k={k}: hung (killed after {timeout} s)")
            time.sleep(0.002)
        log.seek(0)
        out = log.read().decode(errors="replace")
        if os.WIFSIGNALED(status):
            if any(f in out for f in CPYTHON_FATAL):
                continue
            raise SystemExit(f"{name}: k={k}: killed by signal {os.WTERMSIG(status)}\n{out[-3000:]}")
        code = os.WEXITSTATUS(status)
        if code == 10:
            errors += 1
            streak = 0
        elif code == 0:
            succeeded += 1
            streak += 1
            if streak >= quiet_after and (errors or k >= 100):
                break
        else:
            raise SystemExit(f"{name}: {out.strip()[-3000:]}")
    print(f"{name}: {errors} MemoryError, {succeeded} succeeded", flush=True)
    return errors
'''


# Pure Python, no tether: the same sweep over a generator expression, which tether's Python
# layer runs on first use. CPython 3.12.1 and 3.13.0 crash here (SIGSEGV when a frame's
# allocation fails; 3.11.7 and 3.13.5 do not): on such an interpreter the sweep would report
# CPython's crash as tether's.
CPYTHON_PROBE = r'''
import os, _testcapi
class P:
    def __init__(s, n, d): s.name, s.has_default = n, d
params, names = [P("a", False), P("b", True)], {"a": 1}
def f():
    if all(p.has_default or (p.name is not None and p.name in names) for p in params):
        return getattr(params[0], "name")
def op():
    return [f() for _ in range(3)]
for k in range(80):
    pid = os.fork()
    if pid == 0:
        _testcapi.set_nomemory(k, k + 1)
        try:
            op()
        except MemoryError:
            pass
        finally:
            _testcapi.remove_mem_hooks()
        os._exit(0 if op() == ["a"] * 3 else 1)
    if os.waitpid(pid, 0)[1]:
        raise SystemExit(f"CPython alone fails at k={k}")
print("OK")
'''


@pytest.fixture(scope="module")
def cpython_survives_nomemory():
    """Skips when this CPython crashes under the sweep without tether."""
    proc = subprocess.run([sys.executable, "-c", CPYTHON_PROBE], capture_output=True,
                          text=True, timeout=120)
    if proc.returncode != 0 or not proc.stdout.strip().endswith("OK"):
        pytest.skip(f"CPython {sys.version.split()[0]} itself crashes when an allocation fails "
                    f"(pure Python, no tether): {(proc.stdout + proc.stderr).strip()[-200:]}")


@linux_only
@needs_nomemory
@pytest.mark.usefixtures("cpython_survives_nomemory")
class TestAllocationFailureSweep:
    """Property: with any one CPython allocation failing, each public operation raises
    MemoryError or succeeds, works afterwards, and leaves tether.stats() at zero."""

    def test_sweep_public_operations(self):
        out = child(HARNESS + textwrap.dedent(r'''
            class Polite(t.Node):
                def greet(self, who):
                    return f"{self.name} bows to {who}"

            class Static(t.Node):
                greet = staticmethod(lambda who: "static " + who)

            @tether.dataclass
            class Point(tether.Object):
                x: int
                y: float = 0.0
                label: str = ""
                child: t.Inner | None = None

            def nothing():
                return {}

            def outer():
                return {"o": t.Outer(t.Inner(1)), "x": t.Inner(2)}

            def node():
                n = t.Node("n", [1.0, 2.0])
                n.counts = {"a": 1}
                return {"n": n, "p": Polite("ann"), "s": Static("s")}

            def write_fields(d):
                d["n"].weights = [float(i) for i in range(40)]
                d["n"].counts = {"k%d" % i: i for i in range(10)}
                d["n"].extra = t.Inner(3)
                d["n"].children = [t.Node("c")]

            sweeps = [
                ("construction", nothing, lambda d: t.Outer(t.Inner(1))),
                ("construction of a Python subclass", nothing, lambda d: Polite("p")),
                ("read", outer, lambda d: (d["o"].x, d["o"].items)),
                # (not n.transform, a bound value struct read as a view: nanobind's keep_alive
                # aborts when it cannot allocate, as for nanobind's own def_rw)
                ("read containers", node, lambda d: (d["n"].weights, d["n"].counts, d["n"].extra)),
                ("write", outer, lambda d: setattr(d["o"], "y", d["x"])),
                ("write containers", node, write_fields),
                ("echo", outer, lambda d: t.echo(d["o"].x)),
                ("pickle", outer, lambda d: pickle.loads(pickle.dumps(d["o"]))),
                ("copy", outer, lambda d: (copy.copy(d["o"]), copy.deepcopy(d["o"]))),
                ("trampoline call", node, lambda d: t.call_greet(d["p"], "bob")),
                ("trampoline call, staticmethod", node, lambda d: t.call_greet(d["s"], "bob")),
                ("trampoline call, no override", node, lambda d: t.call_greet(d["n"], "bob")),
                ("dataclass construction", nothing, lambda d: Point(1, 2.0, "p", t.Inner(1))),
                ("dataclass read and write", lambda: {"p": Point(1, label="abc")},
                 lambda d: (d["p"].label, d["p"].y, setattr(d["p"], "child", t.Inner(4)))),
            ]
            for name, setup, op in sweeps:
                sweep(name, setup, op)
            print("OK")
        '''), timeout=900)
        # Where the operation allocates, some k must have failed it (reading a field whose
        # wrapper exists may allocate nothing at all).
        for line in out.splitlines()[:-1]:
            name, counts = line.split(": ")
            if name not in ("read", "write", "echo"):
                assert not counts.startswith("0 MemoryError"), f"{name}: no allocation failed"

    @pytest.mark.skipif(bool(sysconfig.get_config_var("Py_GIL_DISABLED")),
                        reason="3.13t: after set_nomemory failed an allocation on a thread, "
                               "CPython's PyThreadState_Clear (mimalloc heap collect) can spin "
                               "forever when the thread state is released")
    def test_sweep_trampoline_call_on_a_thread(self):
        """The override called by C++ on a std::thread (defect 7a's hang): any failure after
        the thread entered Python is a MemoryError on the caller, and the dispatch gives the
        GIL back (or the thread's PyEval_RestoreThread after the calls would wait forever).
        The thread keeps one Python thread state (tether.testing.greet_on_attached_thread):
        CPython 3.11 crashes when the thread state itself cannot be allocated."""
        out = child(HARNESS + textwrap.dedent(r'''
            class Polite(t.Greeter):
                def greet(self, who):
                    return f"{self.name} bows to {who}"

            class Partial(t.Greeter):
                greet = functools.partialmethod(lambda self, who, end: self.name + end, end="!")

            class Quiet(t.Greeter):               # a trampoline, no override: C++ runs
                pass

            def greeters():
                return {"p": Polite("ann"), "q": Partial("q"), "g": Quiet("quiet")}

            def on_thread(key, times=2):
                def op(d):
                    armed = [False]
                    def arm():
                        if k_box[0] is not None and not armed[0]:
                            armed[0] = True
                            _testcapi.set_nomemory(k_box[0], k_box[0] + 1)
                    return t.greet_on_attached_thread(d[key], "bob", times, arm,
                                                      _testcapi.remove_mem_hooks)
                return op

            # The harness arms set_nomemory itself around op(); here the thread arms it, once
            # it has its thread state: k_box carries k into the fork, None afterwards.
            k_box = [None]
            def in_fork_on_thread(setup, op, k):
                objs = setup()
                hit = None
                k_box[0] = k
                try:
                    op(objs)
                except MemoryError:
                    hit = "MemoryError"
                except BaseException as e:
                    return 2, f"k={k}: {type(e).__name__}: {e}"
                finally:
                    _testcapi.remove_mem_hooks()
                    k_box[0] = None
                try:
                    op(objs)
                except BaseException as e:
                    return 3, f"k={k}: afterwards {type(e).__name__}: {e}"
                objs = None
                collect()
                stats = tether.stats()
                if stats != ZERO:
                    return 4, f"k={k}: stats {stats} after dropping everything"
                return (10 if hit else 0), ""
            in_fork = in_fork_on_thread

            for key, name in (("p", "function"), ("q", "partialmethod"), ("g", "no override")):
                sweep("thread trampoline call, " + name, greeters, on_thread(key))
            print("OK")
        '''), timeout=600)
        for line in out.splitlines()[:-1]:
            name, counts = line.split(": ")
            assert not counts.startswith("0 MemoryError"), f"{name}: no allocation failed"

    def test_first_dataclass_construction_out_of_memory(self):
        """Defect 7b: one MemoryError during the process's first @tether.dataclass
        construction left tether._data's cached name NULL: every later construction raised
        SystemError. Each fork here is a process whose first construction fails at k."""
        out = child(HARNESS + textwrap.dedent(r'''
            @tether.dataclass
            class Point(tether.Object):
                x: int
                y: float = 0.0

            def nothing():
                return {}

            def construct(d):
                p = Point(1, 2.0)
                assert (p.x, p.y) == (1, 2.0)
                q = Point(3)
                assert (q.x, q.y) == (3, 0.0)

            sweep("first dataclass construction", nothing, construct, quiet_after=40)
            print("OK")
        '''), timeout=600)
        assert "first dataclass construction" in out


@linux_only
@needs_nomemory
class TestTrampolineNameOutOfMemory:
    """Defect 7a, in one process: the dispatch failing to allocate (the override's name
    first) raises MemoryError, not RuntimeError, and releases the wrapper: after the sweep,
    the override's object dies with its last reference. Before the fix the first failing k
    raised RuntimeError('nanobind::str(): conversion error!') and leaked the wrapper."""

    def test_main_thread(self):
        child(r'''
            import gc, _testcapi, tether
            from tether import testing as t

            class Polite(t.Node):
                def greet(self, who):
                    return "bows to " + who

            p = Polite("ann")
            assert t.call_greet(p, "bob") == "bows to bob"
            failed = 0
            for k in range(40):
                _testcapi.set_nomemory(k, k + 1)
                try:
                    r = t.call_greet(p, "bob")
                except MemoryError:
                    failed += 1
                    continue
                finally:
                    _testcapi.remove_mem_hooks()
                assert r == "bows to bob", r
            assert failed, "no allocation failed"
            assert t.call_greet(p, "bob") == "bows to bob"
            del p
            for _ in range(3):
                gc.collect()
            assert tether.stats() == {"live": 0, "bound": 0, "shared": 0, "orphaned": 0}, tether.stats()
            print("OK")
        ''', timeout=120)


@linux_only
@pytest.mark.skipif(bool(os.environ.get("TETHER_SANITIZE_RUN")),
                    reason="ASan reserves more address space than any RLIMIT_AS leaves")
class TestFieldSetterBadAlloc:
    """Defect 7c: a field write whose C++ value cannot be allocated (`RLIMIT_AS`) raises
    MemoryError; the process aborted (std::terminate: std::bad_alloc inside nanobind's
    noexcept list caster). The field keeps its old value and everything works afterwards."""

    def test_vector_field_under_rlimit_as(self):
        child(r'''
            import gc, resource, tether
            from tether import testing as t

            def vm_size():
                with open("/proc/self/status") as f:
                    for line in f:
                        if line.startswith("VmSize:"):
                            return int(line.split()[1]) * 1024

            n = t.Node("n", [1.0, 2.0])
            s = t.Section("s")
            big = [1.0] * 24_000_000                 # 192 MB of Python list
            keys = {str(i): i for i in range(400_000)}
            soft, hard = resource.getrlimit(resource.RLIMIT_AS)
            # Room for Python to run, none for a 192 MB std::vector<double>.
            resource.setrlimit(resource.RLIMIT_AS, (vm_size() + 96 * 2**20, hard))
            try:
                for attempt in range(2):
                    try:
                        n.weights = big
                        raise SystemExit("the write went through")
                    except MemoryError:
                        pass
                    try:
                        s.weights = big
                        raise SystemExit("the write went through")
                    except MemoryError:
                        pass
            finally:
                resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
            assert n.weights == [1.0, 2.0] and s.weights == []
            del big
            n.weights = [3.0] * 10
            n.counts = keys
            assert len(n.weights) == 10 and len(n.counts) == 400_000
            del n, s
            for _ in range(3):
                gc.collect()
            assert tether.stats() == {"live": 0, "bound": 0, "shared": 0, "orphaned": 0}, tether.stats()
            print("OK")
        ''', timeout=120)

    def test_string_and_map_fields_under_rlimit_as(self):
        """The same for a std::string field (tether.testing.Section.title) and a std::map
        (Node.counts): a Python str of 160 MB, a dict whose std::map cannot be built."""
        child(r'''
            import gc, resource, tether
            from tether import testing as t

            def vm_size():
                with open("/proc/self/status") as f:
                    for line in f:
                        if line.startswith("VmSize:"):
                            return int(line.split()[1]) * 1024

            s = t.Section("title")
            n = t.Node("n")
            text = "x" * (160 * 2**20)
            counts = {str(i): i for i in range(1_500_000)}
            soft, hard = resource.getrlimit(resource.RLIMIT_AS)
            resource.setrlimit(resource.RLIMIT_AS, (vm_size() + 64 * 2**20, hard))
            try:
                try:
                    s.title = text
                    raise SystemExit("the write went through")
                except MemoryError:
                    pass
                try:
                    n.counts = counts
                    raise SystemExit("the write went through")
                except MemoryError:
                    pass
            finally:
                resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
            assert s.title == "title" and n.counts == {}
            s.title = "again"
            assert s.title == "again"
            del s, n, text, counts
            for _ in range(3):
                gc.collect()
            assert tether.stats() == {"live": 0, "bound": 0, "shared": 0, "orphaned": 0}, tether.stats()
            print("OK")
        ''', timeout=120)
