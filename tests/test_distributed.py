# SPDX-License-Identifier: Apache-2.0
"""tether across processes: ProcessPoolExecutor (fork and spawn), Dask's LocalCluster with
worker processes, cloudpickle with a subclass defined in ``__main__``, and Ray.

Dask, cloudpickle and Ray come from the optional dependency group ``distributed``
(``pip install ".[test,distributed]"``); without them these tests are skipped. ``.ci/run``
runs them in their own lane.
"""
import concurrent.futures
import multiprocessing
import os
import pickle
import subprocess
import sys
import textwrap

import pytest

from tether import testing as t

REPO_TESTS = os.path.dirname(os.path.abspath(__file__))


def make_doc(i, sections=3, paragraphs=4):
    """A small document: weak parent links, shared sections, a 200-double field each."""
    d = t.Document("doc %d" % i)
    for k in range(sections):
        s = t.Section("s%d" % k)
        for j in range(paragraphs):
            s.add(t.Paragraph("p%d.%d" % (k, j)))
        s.weights = [i + 0.5 * j for j in range(200)]
        s.anchors = {"first": s.paragraphs[0]}
        d.add(s)
    d.cover = d.sections[0]
    return d


def summarize(doc):
    """Runs in a worker: reads the graph and checks its links there."""
    ok = all(p.section is s for s in doc.sections for p in s.paragraphs)
    ok = ok and doc.cover is doc.sections[0] and all(s.document is doc for s in doc.sections)
    ok = ok and all(s.anchors["first"] is s.paragraphs[0] for s in doc.sections)
    return doc.title, len(doc.sections), sum(sum(s.weights) for s in doc.sections), ok


def bump(doc):
    """Runs in a worker: changes the graph and sends it back."""
    for s in doc.sections:
        s.weights = [w + 1.0 for w in s.weights]
        s.add(t.Paragraph("added in a worker"))
    return doc


def expected(doc):
    return doc.title, len(doc.sections), sum(sum(s.weights) for s in doc.sections), True


def check_bumped(before, after):
    assert after is not before and after.title == before.title
    for s0, s1 in zip(before.sections, after.sections):
        assert s1.weights == [w + 1.0 for w in s0.weights]
        assert len(s1.paragraphs) == len(s0.paragraphs) + 1
        assert all(p.section is s1 for p in s1.paragraphs) and s1.document is after
    assert after.cover is after.sections[0]


class TestProcessPool:
    @pytest.mark.parametrize("method", ["fork", "spawn"])
    def test_map_and_back(self, method):
        if method not in multiprocessing.get_all_start_methods():
            pytest.skip("no %s here" % method)
        docs = [make_doc(i) for i in range(4)]
        ctx = multiprocessing.get_context(method)
        with concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx) as pool:
            assert list(pool.map(summarize, docs, timeout=120)) == [expected(d) for d in docs]
            back = list(pool.map(bump, docs, timeout=120))
        for d0, d1 in zip(docs, back):
            check_bumped(d0, d1)


@pytest.fixture(scope="module")
def dask_client():
    pytest.importorskip("distributed")
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        yield client


class TestDask:
    def test_tokenize(self):
        dask = pytest.importorskip("dask")
        from dask.base import tokenize

        a, b = make_doc(1), make_doc(1)
        assert tokenize(a) == tokenize(a) == tokenize(b)  # deterministic, by content
        b.sections[0].weights = [0.0] * 200
        assert tokenize(a) != tokenize(b)
        assert dask.config.get("tokenize.ensure-deterministic", False) in (False, True)

    def test_map_pure(self, dask_client):
        """client.map's default pure=True hashes every argument (the graph has parent links)."""
        docs = [make_doc(i) for i in range(6)]
        futures = dask_client.map(summarize, docs)
        assert dask_client.gather(futures) == [expected(d) for d in docs]
        again = dask_client.map(summarize, docs)
        assert [f.key for f in again] == [f.key for f in futures]  # same content, same keys
        docs[0].title = "changed"
        assert dask_client.map(summarize, docs[:1])[0].key != futures[0].key

    def test_objects_come_back(self, dask_client):
        docs = [make_doc(i) for i in range(3)]
        back = dask_client.gather(dask_client.map(bump, docs))
        for d0, d1 in zip(docs, back):
            check_bumped(d0, d1)

    def test_scatter_large_vector(self, dask_client):
        s = t.Section("big")
        s.weights = [0.25 * i for i in range(100_000)]
        [future] = dask_client.scatter([s])
        assert dask_client.submit(lambda x: sum(x.weights), future).result() == sum(s.weights)


MAIN_SUBCLASS = textwrap.dedent('''
    import sys
    import cloudpickle
    from tether import testing as t

    class Tagged(t.Paragraph):
        """A subclass only this __main__ has."""
        kind = "tagged"

        def shout(self):
            return self.text.upper() + "!"

    p = Tagged("hello")
    p.note = {"n": 1}
    s = t.Section("s")
    s.add(p)
    with open(sys.argv[1], "wb") as f:
        cloudpickle.dump([s, p], f, protocol=5)
''')

LOAD_SUBCLASS = textwrap.dedent('''
    import sys
    import cloudpickle
    from tether import testing as t

    with open(sys.argv[1], "rb") as f:
        s, p = cloudpickle.load(f)
    assert type(p).__name__ == "Tagged" and isinstance(p, t.Paragraph), type(p)
    assert p.shout() == "HELLO!" and p.kind == "tagged" and p.note == {"n": 1}
    assert s.paragraphs[0] is p and p.section is s
    print("ok")
''')

DASK_MAIN = textwrap.dedent('''
    from distributed import Client, LocalCluster
    from tether import testing as t

    class Tagged(t.Paragraph):
        def shout(self):
            return self.text.upper()

    def work(p):
        return type(p).__name__, p.shout(), isinstance(p, t.Paragraph)

    if __name__ == "__main__":
        with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                          host="127.0.0.1", dashboard_address=None) as cluster, \\
                Client(cluster) as client:
            r = client.gather(client.map(work, [Tagged("a"), Tagged("b")]))
            assert r == [("Tagged", "A", True), ("Tagged", "B", True)], r
            back = client.submit(lambda p: p, Tagged("c")).result()
            assert type(back) is Tagged and back.shout() == "C"
        print("ok")
''')


def run_python(tmp_path, code, *args, timeout=180):
    script = tmp_path / ("s%d.py" % len(list(tmp_path.iterdir())))
    script.write_text(code)
    r = subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True,
                       text=True, timeout=timeout, cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


class TestMainSubclass:
    def test_cloudpickle_between_processes(self, tmp_path):
        pytest.importorskip("cloudpickle")
        data = tmp_path / "msg.pkl"
        run_python(tmp_path, MAIN_SUBCLASS, data)
        assert run_python(tmp_path, LOAD_SUBCLASS, data).strip() == "ok"

    def test_plain_pickle_same_process_keeps_the_class(self):
        class Local(t.Paragraph):
            pass

        p = Local("x")
        assert type(pickle.loads(pickle.dumps(p))) is Local

    def test_dask_with_main_subclass(self, tmp_path):
        pytest.importorskip("distributed")
        assert run_python(tmp_path, DASK_MAIN).strip().endswith("ok")


def ray_work(doc):
    return summarize(doc)


class TestRay:
    def test_map(self):
        ray = pytest.importorskip("ray")
        if not hasattr(ray, "init"):  # a directory named ray (Ray's own /tmp/ray) on the path
            pytest.skip("'ray' imports as %r, not Ray" % (getattr(ray, "__path__", ray),))
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": REPO_TESTS + os.pathsep +
                                           os.environ.get("PYTHONPATH", "")}})
        try:
            f = ray.remote(ray_work)
            docs = [make_doc(i) for i in range(3)]
            assert ray.get([f.remote(d) for d in docs]) == [expected(d) for d in docs]
            g = ray.remote(bump)
            for d0, d1 in zip(docs, ray.get([g.remote(d) for d in docs])):
                check_bumped(d0, d1)
        finally:
            ray.shutdown()
