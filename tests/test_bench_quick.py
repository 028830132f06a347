# SPDX-License-Identifier: Apache-2.0
"""`python -m tether.bench --quick` still runs and prints its verdict and tables (no timing
assertions: the numbers of a quick run mean nothing, only their presence and shape is checked)."""
import json
import subprocess
import sys
import sysconfig

import pytest

from cmake_build import tether_nanobind_version
from conftest import FREE_THREADED
from tether.bench import targets, threads, verdict


@pytest.fixture(scope="module")
def quick_json(tmp_path_factory):
    """One quick run with --targets shared by the tests below: (printed text, JSON path)."""
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "tether.bench", "--quick", "--targets",
                           "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, out


@pytest.fixture(scope="module")
def quick(quick_json):
    """(printed text, parsed JSON) of the shared quick run."""
    text, out = quick_json
    return text, json.loads(out.read_text())


def _from_json(path, *flags) -> str:
    """The report of a saved run, as ``python -m tether.bench --from-json`` prints it."""
    proc = subprocess.run([sys.executable, "-m", "tether.bench", "--from-json", str(path), *flags],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


class TestVerdict:
    """The output starts with the verdict: identity's cost and the like-for-like rows."""

    def test_starts_with_the_verdict(self, quick_json):
        _, path = quick_json
        text = _from_json(path)  # what `python -m tether.bench` prints, without --targets
        head = text.split("## This run")[0]
        assert text.startswith("# tether benchmark: the verdict")
        assert "identity costs" in head and "per read" in head and "per call" in head
        assert "per object" in head and "tether vs nanobind" in head
        assert "Measured on " in head and "load average" in head and "CPython" in head
        assert "## Targets" not in text  # the numbered targets only with --targets

    def test_like_for_like_rows(self, quick):
        text, res = quick
        rows = {(r["tether"], r["peer"]): r for r in res["verdict"]}
        # owning Ref<T> against nb::ref<T>, borrowed T* against T*
        for pair in (("tether.echo", "nb-intrusive.echo"), ("tether.echo_inner", "nb.echo"),
                     ("tether.hot", "nb-intrusive.hot"), ("tether.hot", "nb-ref.hot"),
                     ("tether.revive", "nb-ref.cold"), ("tether.new", "nb-intrusive.new"),
                     ("tether.new", "nb.new"), ("tether", "nb-intrusive"), ("tether", "nb-ref")):
            r = rows[pair]
            assert r["value"] > 0 and r["base"] > 0
            assert r["verdict"] in ("faster", "slower", "even", "smaller", "larger")
        assert rows[("tether.echo", "nb-intrusive.echo")]["style"] == "owning"
        assert rows[("tether.echo_inner", "nb.echo")]["style"] == "borrowed"
        head = text.split("## This run")[0]
        assert "| `echo(x)`, `Ref<T>` in and out | owning |" in head
        assert "| `echo(x)`, `T*` in and out | borrowed |" in head
        assert "## Targets" in text  # this run asked for them

    def test_judge(self):
        assert verdict.judge(0.80) == "faster" and verdict.judge(1.20) == "slower"
        assert verdict.judge(1.04) == "even" and verdict.judge(0.96) == "even"
        assert verdict.judge(1.50, higher_is_better=True) == "faster"
        assert verdict.judge(float("nan")) == "-"

    def test_rows_from_numbers(self):
        """Which rows a run fills, bytes as smaller/larger, thread scaling higher-is-better,
        refusal when a baseline turned the GIL on (no timing involved)."""
        t = {k: {"min_ns": v} for k, v in (("tether.echo", 20.0), ("nb-intrusive.echo", 25.0),
                                           ("tether.new", 50.0), ("nb.new", 40.0))}
        res = {"times": t, "scaling": {}, "config": {"scale": [1000, 1000000]},
               "memory": {"tether": {"total": 88.0}, "nb-ref": {"total": 94.0}},
               "threads": {"results": {"own.read.tether": {"scaling": 2.0},
                                       "own.read.nb": {"scaling": 0.5}}},
               "gil": {"refuse_nanobind": ""}}
        got = {(r["tether"], r["peer"]): r["verdict"] for r in verdict.evaluate(res)}
        assert got == {("tether.echo", "nb-intrusive.echo"): "faster",
                       ("tether.new", "nb.new"): "slower", ("tether", "nb-ref"): "smaller",
                       ("own.read.tether", "own.read.nb"): "faster"}
        res["gil"]["refuse_nanobind"] = "tether._peers enabled the GIL"
        assert {r["verdict"] for r in verdict.evaluate(res)} == {"refused"}


class TestQuickBenchmark:
    """The benchmark's quick mode prints every section and writes the JSON it describes."""

    def test_prints_table_and_json(self, quick):
        text, res = quick
        for heading in ("# tether benchmark: the verdict", "## Targets", "## ns per operation",
                        "## Identity",
                        "## Bytes per wrapped object", "Opt-out (Untied vs Inner)", "## Threads",
                        "## Spread between processes", "machine load: at start load average"):
            assert heading in text
        assert f"nanobind {tether_nanobind_version()}" in text  # the one tether was built with
        # every target of issue 13 that applies to this build is checked, each met or missed
        names = {t["target"].split(".")[0] for t in res["targets"]}
        assert names == ({"2", "3", "4", "5", "6", "7"} if FREE_THREADED else {"1", "3", "4", "7", "8"})
        for t in res["targets"]:
            assert t["met"] in (True, False)
            # a thread ratio is refused when the quick run's workers never ran at once
            assert t["ratio"] > 0 or t["refused"]
            assert t["verdict"] in text
        # tether._peers is built FREE_THREADED: importing it never turns the GIL back on
        assert res["gil"]["enabled_by"] == [] and res["gil"]["refuse_nanobind"] == ""
        for key in ("slots.read", "nb-ref.cold", "nb-intrusive.hot", "tether.hot", "tether.revive",
                    "tether.int", "nb.new", "tether.new", "nb.echo", "tether.echo_inner",
                    "nb-intrusive.echo", "nb-intrusive.new", "nb-intrusive.cold"):
            assert res["times"][key]["min_ns"] > 0

    def test_identity_columns(self, quick):
        """The identity the benchmark reports is the identity each variant really keeps."""
        _, res = quick
        ident = res["identity"]
        assert ident["tether"]["same_while_alive"] and ident["tether"]["echo_is_same"]
        assert ident["tether"]["id_stable"] == ident["tether"]["trials"]
        assert ident["nb-ref"]["id_stable"] == 0  # a fresh wrapper after drop + junk
        assert not ident["tether-untied"]["same_while_alive"]  # opted out: no identity


class TestThreadsSection:
    """The threads section runs on free-threaded builds and is skipped, with a reason, on others."""

    def test_threads_results(self, quick):
        _, res = quick
        th = res["threads"]
        if not FREE_THREADED:
            assert "GIL build" in th["skipped"]
            return
        for way, ops in threads.OPS.items():
            for op in ops:
                for v in threads.variants(op):
                    r = th["results"][f"{way}.{op}.{v}"]
                    assert r["mops"]["1"] > 0
                    # NaN only if a quick run never had both workers running at once
                    assert r["scaling"] > 0 or 0 in r["overlapped_chunks"]


class TestTargetLogic:
    """Tolerance, lower limits and refusals (no timing involved)."""

    def test_tolerance_rounding(self):
        # 88.0011 B / 88.0000 B used to be reported as missed against a limit of 1.00
        assert targets.Check("7", "a / b", 88.0011, 88.0, 1.0, "B").met
        assert targets.Check("1", "a / b", 1.104, 1.0, 1.1).met  # prints as 1.10
        assert not targets.Check("1", "a / b", 1.106, 1.0, 1.1).met  # prints as 1.11

    def test_lower_limit(self):
        assert targets.Check("5", "a / b", 1.797, 1.0, 1.8, at_least=True).met
        assert not targets.Check("5", "a / b", 1.79, 1.0, 1.8, at_least=True).met

    def test_refused(self):
        c = targets.Check("2", "tether.hot / nb-intrusive.hot", 1.0, 2.0, 0.8, refused="why")
        assert not c.met and c.verdict == "refused"

    def test_refusal_reasons(self):
        base = {"free_threaded": True, "gil_at_start": False, "enabled_by": [],
                "env_python_gil": "0"}
        assert threads.refusal(base) == ""
        assert "tether._peers" in threads.refusal({**base, "enabled_by": ["tether._peers"]})
        assert threads.refusal({**base, "gil_at_start": True, "env_python_gil": None})
        assert threads.refusal({**base, "gil_at_start": True, "env_python_gil": "1"}) == ""
        assert threads.refusal({**base, "free_threaded": False, "enabled_by": ["x"]}) == ""

    def test_refused_rows_are_only_nanobind_baselines(self):
        class R:
            def __init__(self, v):
                self.min = v
        times = {k: R(10.0) for k in ("tether.hot", "nb-intrusive.hot", "cpython.getset",
                                      "tether.new", "nb.new", "tether.echo", "nb.echo",
                                      "tether.revive", "nb-ref.cold")}
        checks = targets.evaluate(times, {}, 1, 2, {}, True, nb_refused="GIL on")
        for c in checks:
            assert bool(c.refused) == c.what.split(" / ")[1].startswith(("nb.", "nb-"))


@pytest.mark.skipif(not FREE_THREADED, reason="only a free-threaded build can have its GIL re-enabled")
def test_gil_guard_names_a_module_that_reenables_the_gil(tmp_path):
    """A module not declared free-threaded turns the GIL back on at import; the guard says which
    one and refuses the nanobind ratios (checked in a fresh interpreter, GIL off at start)."""
    import os
    import shutil

    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.skip("no C compiler")
    src = tmp_path / "oldmod.c"
    src.write_text('#include <Python.h>\n'
                   'static struct PyModuleDef d = {PyModuleDef_HEAD_INIT, "oldmod", NULL, -1};\n'
                   'PyMODINIT_FUNC PyInit_oldmod(void) { return PyModule_Create(&d); }\n')
    so = tmp_path / ("oldmod" + sysconfig.get_config_var("EXT_SUFFIX"))
    subprocess.run([cc, "-shared", "-fPIC", "-I", sysconfig.get_paths()["include"], str(src),
                    "-o", str(so)], check=True)
    code = ("import json; from tether.bench import threads; "
            "print(json.dumps(threads.probe_gil(('tether.testing', 'oldmod', 'tether._peers'))))")
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "PYTHON_GIL": ""}
    env.pop("PYTHON_GIL")
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], env=env, check=True,
                         capture_output=True, text=True).stdout
    g = json.loads(out.strip().splitlines()[-1])
    assert g["enabled_by"] == ["oldmod"] and g["gil_enabled"]
    assert "oldmod" in g["refuse_nanobind"]
