# SPDX-License-Identifier: Apache-2.0
"""tests/test_chains.py: releasing a chain of a million objects uses constant C stack.

Every case runs in a child interpreter and releases the chain on a thread whose stack is far
too small for a recursion as deep as the chain (512 KiB: a recursive release needs several
hundred bytes per link), so a regression crashes the child instead of passing by luck on a
big main-thread stack. tether's trashcan (cpp/src/runtime.cpp, T9) and CPython's own keep it
flat.
"""
import subprocess
import sys
import textwrap

import pytest

N = 1_000_000

PRELUDE = """
    import gc, sys, threading, tether
    from tether import testing as t
    Box = t.Box
    N = %d
    threading.stack_size(512 * 1024)

    def on_small_stack(fn):
        errors = []
        def run():
            try:
                fn()
            except BaseException as e:  # reported by the parent through the exit code
                errors.append(e)
        th = threading.Thread(target=run)
        th.start(); th.join()
        if errors:
            raise errors[0]

    def check_empty():
        gc.collect()
        s = tether.stats()
        assert s["live"] == 0 and s["bound"] == 0 and s["shared"] == 0, s
""" % N


def child(body, timeout=600):
    code = textwrap.dedent(PRELUDE) + textwrap.dedent(body) + "\ncheck_empty()\nprint('OK')\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, (proc.returncode, proc.stdout[-2000:], proc.stderr[-4000:])
    assert proc.stdout.strip().endswith("OK")


@pytest.mark.parametrize("cls", ["Box", "SubBox"])
def test_wrappers_kept_by_cpp_released_from_python(cls):
    """Every link has a wrapper that only C++ holds (SHARED); Python drops the head."""
    child(f"""
        class SubBox(t.Box): pass
        cls = {cls}
        holder = [cls(None)]
        for _ in range(N):
            holder[0] = cls(holder[0])
        assert tether.stats()["shared"] == N
        on_small_stack(holder.clear)
    """)


def test_bound_head_of_a_cpp_chain_released_from_python():
    """The head's wrapper is held by Python alone (BOUND), the links have no wrapper."""
    child("""
        holder = [t.make_chain(N)]
        s = tether.stats()
        assert s["live"] == N and s["bound"] == 1 and s["shared"] == 0, s
        on_small_stack(holder.clear)
    """)


def test_detached_chain_moved_into_cpp():
    """No wrapper at all: the chain is moved into C++ and dropped there."""
    child("""
        holder = [t.make_chain(N)]
        on_small_stack(lambda: t.consume(tether.move(holder.pop())))
    """)


def test_detached_chain_released_on_a_cpp_thread():
    child("""
        head = t.make_chain(N)
        t.release_chain_in_thread(tether.move(head), 256 * 1024)
        del head
    """)


@pytest.mark.parametrize("cls", ["Box", "SubBox"])
def test_wrappers_kept_by_cpp_released_on_a_cpp_thread(cls):
    """A C++ thread (small stack) takes the GIL and drops the chain's head: every wrapper is
    released on that thread."""
    child(f"""
        class SubBox(t.Box): pass
        cls = {cls}
        x = cls(None)
        for _ in range(N):
            x = cls(x)
        holder = t.Box(x)
        del x
        t.release_in_small_stack(holder, "value", 512 * 1024)
        del holder
    """)
