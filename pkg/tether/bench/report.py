# SPDX-License-Identifier: Apache-2.0
"""tether.bench.report: runs every phase and prints the verdict and tables for people (and the JSON).

The output starts with the verdict (tether.bench.verdict): what identity costs per read, per
call and per object, and tether against its like-for-like nanobind peer on every row. The
numbered internal targets (tether.bench.targets) and the run-to-run spread they need are
printed with ``--targets`` only."""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time

from . import cycles, identity, memory, pickling, spread, targets, threads, timing, verdict


# ---- settings -------------------------------------------------------------------------------

# Samples are short on purpose: on a shared 2-CPU VM, samples longer than about 1 ms were
# measured 3-4x slower (preempted) while 0.5 ms samples kept their minimum; so many short rounds.
# Threads: ~2 ms samples (two workers must both run for the whole sample), best of 40.
# Spread: the getter rows and their anchors in 10 fresh interpreters (target 8).
FULL = {"rounds": 400, "target_ms": 0.5, "n_mem": 100_000, "trials": 5, "scale": (1_000, 1_000_000),
        "scale_blocks": 4, "thread_rounds": 40, "thread_ms": 2.0, "spread_procs": 10, "spread_rounds": 100}
QUICK = {"rounds": 3, "target_ms": 0.2, "n_mem": 2_000, "trials": 2, "scale": (1_000, 4_000),
         "scale_blocks": 2, "thread_rounds": 4, "thread_ms": 0.2, "spread_procs": 2, "spread_rounds": 3}


def _scaling(make_cases, small: int, big: int, cfg: dict, log) -> dict:
    """Target 7's populations, one size alive at a time (nothing of one skews the other), in
    ``scale_blocks`` alternating blocks per size, every block's samples kept: the ratio of
    the two sizes then compares minima taken across the same stretch of time. (Run once
    each, one after the other, a slow phase of a shared VM lasting a whole block moved the
    ratio by up to +/-40 % between runs.)"""
    blocks = cfg["scale_blocks"]
    rounds = max(2, cfg["rounds"] // (4 * blocks))
    merged: dict = {}
    for b in range(blocks):
        for n in (small, big):
            log(f"scaling, {n} live objects (block {b + 1} of {blocks}) ...")
            gc.collect()
            for key, r in timing.run(make_cases(n), rounds, cfg["target_ms"], log).items():
                if key in merged:
                    merged[key].samples_ns.extend(r.samples_ns)
                else:
                    merged[key] = r
            gc.collect()
    return merged


def _cpuinfo() -> dict:
    """The first CPU's /proc/cpuinfo fields ({} where there is none)."""
    fields: dict = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break  # the first CPU's block ends
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def machine() -> dict:
    info = _cpuinfo()
    cpu = info.get("model name") or platform.processor() or "?"
    # Two VMs can report the same model name ("AMD EPYC") and time differently:
    # family/model/stepping, clock, L2 and microcode tell them apart.
    detail = ", ".join(f"{label} {info[key]}" for key, label in (
        ("cpu family", "family"), ("model", "model"), ("stepping", "stepping"),
        ("cpu MHz", "MHz"), ("cache size", "cache"), ("microcode", "microcode")) if key in info)
    import tether
    from tether import _peers

    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_detail": detail,
        "nproc": os.cpu_count(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "nanobind": ".".join(map(str, _peers.nanobind_version)),
        "tether": tether.__version__,
        "tether_abi": tether.abi_version(),
        "header_bytes": tether.header_size(),
        "free_threaded": threads.free_threaded(),
        "gil_enabled": threads.gil_enabled(),
        "load": _load(),
    }


def _load() -> str:
    """The machine's load (uptime's three averages) and what runs right now."""
    try:
        with open("/proc/loadavg") as f:
            a, b, c, running, _ = f.read().split()
        return f"load average {a}, {b}, {c} (1, 5, 15 min; {running} running/threads)"
    except OSError:
        return "unknown"


def run(cfg: dict, log=lambda s: None, gil: dict | None = None, with_spread: bool = True) -> dict:
    """Every phase; returns the JSON-able results. ``gil``: threads.probe_gil(), taken before
    the benchmark's modules were imported (``python -m tether.bench`` does). ``with_spread``:
    the spread between fresh interpreters, which only target 8 reads (``--targets``)."""
    if gil is None:
        gil = threads.probe_gil()
    import tether

    out: dict = {"gil": gil, "machine": machine(), "config": {k: list(v) if isinstance(v, tuple) else v
                                                  for k, v in cfg.items()}}
    out["machine"]["timing"] = (f"timeit, statement unrolled x{timing.UNROLL}, gc disabled, "
                                f"~{cfg['target_ms']} ms per sample, {cfg['rounds']} rounds "
                                f"round-robin, min (median) over rounds")
    from .cases import main_cases, scaling_cases

    log("identity ...")
    out["identity"] = identity.check_all(cfg["trials"])
    log("main cases ...")
    times = timing.run(main_cases(), cfg["rounds"], cfg["target_ms"], log)
    small, big = cfg["scale"]
    scaling = _scaling(scaling_cases, small, big, cfg, log)
    log("threads ...")
    out["threads"] = threads.run(cfg["thread_rounds"], cfg["thread_ms"], log)
    if with_spread:
        log(f"spread: getter rows in {cfg['spread_procs']} fresh interpreters ...")
        out["spread"] = spread.measure(cfg["spread_procs"], cfg["spread_rounds"],
                                       cfg["target_ms"])
    log("memory (one fresh interpreter per variant) ...")
    mem = memory.measure_all(cfg["n_mem"])
    hb = tether.header_size()
    checks = targets.evaluate(times, scaling, small, big, mem, threads.free_threaded(),
                              out["threads"], out.get("spread"), gil["refuse_nanobind"])
    out["pickling"] = pickling.measure_fresh(cfg["rounds"] < 50, log)  # tether.bench.pickling
    out["cycles"] = cycles.measure(cfg["rounds"] < 50, log)  # tether.bench.cycles
    out["machine"]["load_after"] = _load()
    out["times"] = {k: {"what": r.what, "min_ns": r.min, "median_ns": r.median,
                        "samples_ns": r.samples_ns} for k, r in times.items()}
    out["scaling"] = {k: {"what": r.what, "min_ns": r.min, "median_ns": r.median,
                          "samples_ns": r.samples_ns} for k, r in scaling.items()}
    out["memory"] = mem
    out["opt_out"] = targets.opt_out_summary(mem, out["identity"], hb)
    out["targets"] = [c.as_dict() for c in checks]
    out["verdict"] = verdict.evaluate(out)
    return out


# ---- the table for people --------------------------------------------------------------------

def _yn(b) -> str:
    return "yes" if b else "no"


def _targets(res: dict) -> list:
    """The numbered targets (``--targets``): each ratio against its limit."""
    lines: list = []
    w = lines.append
    w("")
    w("## Targets (ratios within this run)")
    w("")
    w(f"A ratio meets its limit within {targets.TOLERANCE} (the two decimals printed); "
      "'>=' marks a lower limit.")
    w("")
    w("| target | measured / baseline | measured | baseline | ratio | limit | met |")
    w("|---|---|---:|---:|---:|---:|---|")
    for c in res["targets"]:
        u = c["unit"]
        limit = f"{'>= ' if c.get('at_least') else ''}{c['limit']:.2f}"
        ratio = "-" if c.get("refused") else f"{c['ratio']:.2f}"
        w(f"| {c['target']} | {c['what']} | {c['value']:.1f} {u} | {c['base']:.1f} {u} | "
          f"{ratio} | {limit} | {c.get('verdict', 'MET' if c['met'] else 'missed')} |")
    small, big = res["config"]["scale"]
    refs = []
    for key in ("slots.read", "nb-ref.hot", "nb-ref.cold", "nb-intrusive.hot"):
        a, b = res["scaling"].get(f"{key}@{big}"), res["scaling"].get(f"{key}@{small}")
        if a and b:
            refs.append(f"{key} {a['min_ns'] / b['min_ns']:.2f}")
    if refs:
        w("")
        w(f"Scaling of the other variants for the same access pattern ({big} / {small} live "
          f"objects): " + ", ".join(refs) + ".")
    return lines


def _short_machine(m: dict) -> str:
    """One line: CPU, CPUs, Python, load (what the verdict's numbers depend on)."""
    detail = m.get("cpu_detail", "")
    fam = ", ".join(p for p in detail.split(", ") if p.split(" ")[0] in ("family", "model"))
    build = " free-threaded" if m.get("free_threaded") else ""
    gil = "" if not m.get("free_threaded") else (", GIL on" if m.get("gil_enabled") else ", GIL off")
    load = m.get("load", "?").split(" (")[0].replace("load average ", "")
    return (f"{m['cpu']}{f' ({fam})' if fam else ''}, {m['nproc']} CPUs; "
            f"{m['implementation']} {m['python']}{build}{gil}, nanobind {m['nanobind']}; "
            f"load average {load} at start")


def render(res: dict, show_targets: bool = False) -> str:
    m, lines = res["machine"], []
    w = lines.append
    rows = verdict.evaluate(res)  # from the run's numbers (also for a JSON of an older run)
    w("# tether benchmark: the verdict")
    w("")
    w(f"Measured on {_short_machine(m)}.")
    w("")
    for line in verdict.summary(res, rows):
        w(line)
        w("")
    lines += verdict.table(rows)
    w("")
    w("Ratios are tether's number over its peer's, both measured in this run (ns: minimum over "
      "rounds); `python -m tether.bench --targets` adds the project's numbered targets. "
      "bench/README.md explains each row and where tether is slower, and why.")
    w("")
    w("## This run")
    w("")
    w(f"- machine: {m['cpu']}, {m['nproc']} CPUs, {m['platform']}"
      + (f" ({m['cpu_detail']})" if m.get("cpu_detail") else ""))
    w(f"- versions: {m['implementation']} {m['python']}, nanobind {m['nanobind']}, "
      f"tether {m['tether']} (ABI {m['tether_abi']}, header {m['header_bytes']} B)")
    w(f"- timing: {m['timing']}; ns per single operation")
    build = "free-threaded" if m.get("free_threaded") else "GIL"
    w(f"- build: {build}, GIL {'enabled' if m.get('gil_enabled') else 'disabled'} "
      f"(PYTHON_GIL={res['gil'].get('env_python_gil')})")
    w(f"- machine load: at start {m.get('load')}; at end {m.get('load_after', '?')}")
    refused = res["gil"].get("refuse_nanobind")
    if refused:
        w("")
        w(f"**nanobind ratios refused**: {refused}. Rebuild tether._peers with FREE_THREADED.")
    if show_targets:
        lines += _targets(res)
    w("")
    w("## ns per operation")
    w("")
    w("| case | what | min | median |")
    w("|---|---|---:|---:|")
    for k, r in list(res["times"].items()) + list(res["scaling"].items()):
        w(f"| {k} | {r['what']} | {r['min_ns']:.1f} | {r['median_ns']:.1f} |")
    w("")
    lines += threads.render(res.get("threads", {"skipped": "not run"}))
    sp = res.get("spread")
    if sp:
        w("")
        w(f"## Spread between processes ({sp['processes']} fresh interpreters, "
          f"{sp['rounds']} rounds each; min per process, ns)")
        w("")
        w("| row | spread (slowest / fastest) | min per process |")
        w("|---|---:|---|")
        for k, r in sp["rows"].items():
            w(f"| {k} | {r['spread']:.3f} | " + " ".join(f"{v:.1f}" for v in r["min_ns"]) + " |")
        others = {k: r["spread"] for k, r in sp["rows"].items() if k not in spread.TETHER_ROWS}
        if others:
            worst = max(others, key=others.get)
            w("")
            w(f"Target 8's context, the other rows of the same processes: median spread "
              f"{statistics.median(others.values()):.3f}, largest {others[worst]:.3f} ({worst}).")
    w("")
    w("## Identity")
    w("")
    w("| variant | is-same-while-alive | id-stable-after-drop (junk between) | echo(x) is x |")
    w("|---|---|---|---|")
    for v, r in res["identity"].items():
        echo = _yn(r["echo_is_same"]) if "echo_is_same" in r else "-"
        w(f"| {v} | {_yn(r['same_while_alive'])} | {_yn(r['id_stable'] == r['trials'])} "
          f"({r['id_stable']}/{r['trials']}) | {echo} |")
    w("")
    w(f"## Bytes per wrapped object ({res['config']['n_mem']} objects made from Python, "
      "fresh interpreter each)")
    w("")
    w("| variant | traced + malloc | traced (Python allocator) | malloc (C heap) | RSS |")
    w("|---|---:|---:|---:|---:|")
    for v, r in res["memory"].items():
        w(f"| {v} | {r['total']:.1f} | {r['traced']:.1f} | {r['malloc']:.1f} | {r['rss']:.1f} |")
    o = res["opt_out"]
    w("")
    w(f"Opt-out (Untied vs Inner): header requested {o['header_bytes_requested']} B, saved "
      f"{o['bytes_saved_measured']:.1f} B per object measured; gives up identity: "
      f"is-same {_yn(o['identity_untied']['same_while_alive'])}, "
      f"id-stable {o['identity_untied']['id_stable']}/{o['identity_untied']['trials']}, "
      f"echo(x) is x {_yn(o['identity_untied'].get('echo_is_same'))}.")
    lines += pickling.render(res)
    lines += cycles.render(res)
    return "\n".join(lines)


def main(argv=None, gil: dict | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tether.bench", description=__doc__)
    p.add_argument("--json", metavar="PATH", help="also write every number (and sample) here")
    p.add_argument("--quick", action="store_true", help="tiny rounds: proves it runs, not how fast")
    p.add_argument("--rounds", type=int, help="round-robin rounds (default 400)")
    p.add_argument("--target-ms", type=float, help="ms per timing sample (default 0.5)")
    p.add_argument("--n-mem", type=int, help="objects per memory measurement (default 100000)")
    p.add_argument("--targets", action="store_true",
                   help="also measure the spread between processes and print the project's "
                        "numbered targets (met / missed)")
    p.add_argument("--from-json", metavar="PATH",
                   help="print the report of a run saved with --json (no timing)")
    args = p.parse_args(argv)
    if args.from_json:
        with open(args.from_json) as f:
            print(render(json.load(f), show_targets=args.targets))
        return 0
    cfg = dict(QUICK if args.quick else FULL)
    for k in ("rounds", "target_ms", "n_mem"):
        if getattr(args, k) is not None:
            cfg[k] = getattr(args, k)
    t0 = time.perf_counter()
    res = run(cfg, lambda s: print(s, file=sys.stderr, flush=True), gil, with_spread=args.targets)
    res["elapsed_s"] = time.perf_counter() - t0
    print(render(res, show_targets=args.targets))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0
