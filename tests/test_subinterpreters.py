# SPDX-License-Identifier: Apache-2.0
"""tests/test_subinterpreters.py: tether refuses subinterpreters on every version, never hangs.

A tether object has one wrapper, which lives in the main interpreter, and C++ threads enter
Python through PyGILState_Ensure, which serves the main interpreter only. nanobind refuses
subinterpreters on 3.12+ (Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED); on 3.11 the import went
through and the first object made waited forever for the GIL its own thread held (issue 22,
defect 5). tether._core now refuses them itself (bindings/src/runtime_guard.h): the import
raises ImportError naming the reason, whether or not the main interpreter imported tether
first, and the main interpreter keeps working. Each scenario runs in a child interpreter with
a timeout (a hang is a failure, not a stuck suite).
"""
import subprocess
import sys
import textwrap

import pytest

# Runs `code` in a new subinterpreter and prints one line: "ok", or "<Exception>: <message>".
RUN_IN_SUBINTERPRETER = textwrap.dedent("""
    try:
        import _interpreters as I          # 3.13+
    except ImportError:
        import _xxsubinterpreters as I     # 3.11, 3.12

    def run_in_subinterpreter(code):
        interp = I.create()
        try:
            if hasattr(I, "exec"):
                err = I.exec(interp, code)
                return "ok" if err is None else f"{err.type.__name__}: {err.msg}"
            try:
                I.run_string(interp, code)
                return "ok"
            except Exception as e:         # RunFailedError: "<class 'ImportError'>: ..."
                return f"{type(e).__name__}: {e}"
        finally:
            I.destroy(interp)
""")

MAIN_STILL_WORKS = textwrap.dedent("""
    import gc
    import pickle
    import tether
    import tether.testing as t

    o = t.Outer(t.Inner(1))
    class Tagged(t.Inner):
        pass
    x = Tagged(2)
    x.tag = "kept"
    o.y = x
    del x
    gc.collect()
    assert type(o.y) is Tagged and o.y.tag == "kept"
    assert t.echo(o.x) is o.x
    assert pickle.loads(pickle.dumps(t.Inner(7))).value == 7

    @tether.dataclass
    class Point(tether.Object):
        x: int
        y: float = 0.0
    assert Point(1, 2.0).y == 2.0
    del o
    for _ in range(3):
        gc.collect()
    assert tether.stats() == {"live": 0, "bound": 0, "shared": 0, "orphaned": 0}, tether.stats()
""")


def child(code, timeout=60):
    """Run `code` in a fresh interpreter; a hang past `timeout` fails the test."""
    try:
        proc = subprocess.run([sys.executable, "-X", "faulthandler", "-c", code],
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the child interpreter hung (killed after {timeout} s): {e.stdout!r}")
    assert proc.returncode == 0, (proc.returncode, proc.stdout[-2000:], proc.stderr[-4000:])
    return proc.stdout


def has_subinterpreters():
    for name in ("_interpreters", "_xxsubinterpreters"):
        try:
            __import__(name)
            return True
        except ImportError:
            pass
    return False


pytestmark = pytest.mark.skipif(not has_subinterpreters(),
                                reason="this Python has no subinterpreter module")


def check_refused(line):
    # 3.13: "ImportError: ..."; 3.11/3.12 wrap it: "RunFailedError: <class 'ImportError'>: ..."
    assert "ImportError" in line, line
    assert "subinterpreter" in line, line


class TestSubinterpreterRefused:
    def test_first_import_in_a_subinterpreter(self):
        """The issue's reproduction: tether imported in a subinterpreter only, an object made
        there. 3.11 hung in PyGILState_Ensure; now the import raises ImportError."""
        out = child(RUN_IN_SUBINTERPRETER + textwrap.dedent("""
            print(run_in_subinterpreter(
                "import tether.testing as t; t.Outer(t.Inner(5)); print('made')"))
        """) + MAIN_STILL_WORKS + "print('main ok')\n")
        lines = out.splitlines()
        assert "made" not in lines, out
        check_refused(lines[0])
        assert lines[-1] == "main ok", out

    def test_subinterpreter_after_the_main_interpreter_imported_tether(self):
        """With tether already imported (its runtime claimed) by the main interpreter, the
        subinterpreter's import is refused too, before tether._core registers anything there;
        the main interpreter's objects and types keep working."""
        out = child("import tether.testing as t\nkeep = t.Outer(t.Inner(3))\n" +
                    RUN_IN_SUBINTERPRETER + textwrap.dedent("""
            for code in ("import tether.testing as t; t.Outer(t.Inner(5)); print('made')",
                         "import tether._core",
                         "import tether; tether.stats()"):
                print(run_in_subinterpreter(code))
            assert keep.x.value == 3 and t.echo(keep.x) is keep.x
            del keep
        """) + MAIN_STILL_WORKS + "print('main ok')\n")
        lines = out.splitlines()
        assert "made" not in lines, out
        for line in lines[:3]:
            check_refused(line)
        assert lines[-1] == "main ok", out

    def test_subinterpreter_without_tether_is_unaffected(self):
        """Refusing is tether's only effect: a subinterpreter that does not import tether runs
        while tether is loaded in the main interpreter."""
        out = child("import tether.testing as t\n" + RUN_IN_SUBINTERPRETER + textwrap.dedent("""
            print(run_in_subinterpreter("import json; json.dumps([1])"))
        """) + MAIN_STILL_WORKS + "print('main ok')\n")
        assert out.splitlines() == ["ok", "main ok"], out
