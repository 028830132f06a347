# SPDX-License-Identifier: Apache-2.0
"""Fixtures shared by tether's tests: junk allocation, leak accounting and stats checks."""
import gc
import sysconfig

import pytest

import tether
from tether import testing as t

FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


def collect():
    for _ in range(3):
        gc.collect()


def junk(cls=t.Inner, n=64):
    """Allocate same-size objects so that a freed block is reused by something else.

    Called between dropping a wrapper and fetching it again: if tether had freed the wrapper,
    CPython would hand its block to one of these, and a stable id() could not be faked.
    """
    return [cls(0) for _ in range(n)]


def assert_stats(**expected):
    """Check tether.stats() after collecting garbage; counters not named must be zero."""
    collect()
    s = tether.stats()
    want = {"live": 0, "bound": 0, "shared": 0, "orphaned": 0}
    want.update(expected)
    assert s == want


@pytest.fixture
def clean():
    """Each test ends with as many tether objects, wrappers and shared wrappers as it began."""
    collect()
    before = tether.stats()
    yield
    collect()
    after = tether.stats()
    assert after["live"] == before["live"], (before, after)
    assert after["bound"] == before["bound"], (before, after)
    assert after["shared"] == before["shared"], (before, after)


@pytest.fixture(scope="session", autouse=True)
def suite_leaves_nothing_behind():
    """After the whole suite, live, bound and shared counts are back where they started."""
    collect()
    start = tether.stats()
    yield
    collect()
    end = tether.stats()
    keys = ("live", "bound", "shared")
    assert [end[k] for k in keys] == [start[k] for k in keys], (start, end)
