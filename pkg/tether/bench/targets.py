# SPDX-License-Identifier: Apache-2.0
"""tether.bench.targets: the targets of issue 3 as ratios, and whether this run meets them.

Every ratio is taken between two numbers measured in the same run (ns: minimum over rounds;
bytes: traced + malloc per object), so machine speed cancels out.
"""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class Check:
    target: str  # "1. hot read"
    what: str  # "tether.hot / slots.read"
    value: float
    base: float
    limit: float
    unit: str = "ns"

    @property
    def ratio(self) -> float:
        return self.value / self.base if self.base else float("inf")

    @property
    def met(self) -> bool:
        return self.ratio <= self.limit

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "ratio": self.ratio, "met": self.met}


def _t(times: dict, key: str) -> float:
    return times[key].min


def evaluate(times: dict, scaling: dict, small: int, big: int, memory: dict, identity: dict,
             header_bytes: int) -> list:
    """All target checks; keys missing from a partial run are skipped."""
    ratios = [
        ("1. hot read a.x", "tether.hot", "slots.read", 2.5),
        ("1. hot read a.x", "tether.hot", "nb-intrusive.hot", 0.7),
        ("2. revive read a.x", "tether.revive", "tether.hot", 2.5),
        ("2. revive read a.x", "tether.revive", "nb-ref.cold", 0.7),
        ("3. int field i.value", "tether.int", "slots.int", 2.5),
        ("4. construction Inner(1)", "tether.new", "nb.new", 1.1),
        ("5. echo(x) returns object", "tether.echo_inner", "nb.echo", 1.0),
        ("5. echo(x) returns object", "tether.echo", "nb.echo", 1.0),
    ]
    out = [Check(name, f"{a} / {b}", _t(times, a), _t(times, b), limit)
           for name, a, b, limit in ratios if a in times and b in times]
    if memory:
        out.append(Check("6. bytes per wrapped object", "tether / nb-ref",
                         memory["tether"]["total"], memory["nb-ref"]["total"], 1.0, "B"))
    for key in ("tether.hot", "tether.revive"):
        a, b = f"{key}@{big}", f"{key}@{small}"
        if a in scaling and b in scaling:
            out.append(Check("7. scaling", f"{a} / {b}", _t(scaling, a), _t(scaling, b), 1.2))
    if memory:
        # 8: an opted-out type allocates no header: its bytes never exceed the tied type's
        # minus what the header requests (malloc rounding may hide the saving entirely).
        out.append(Check("8. per-type opt-out", "untied / tether",
                         memory["tether-untied"]["total"], memory["tether"]["total"], 1.0, "B"))
    return out


def opt_out_summary(memory: dict, identity: dict, header_bytes: int) -> dict:
    """What tether.testing.Untied saves against Inner, and what it gives up."""
    tied, untied = memory["tether"], memory["tether-untied"]
    return {
        "header_bytes_requested": header_bytes,
        "bytes_saved_measured": tied["total"] - untied["total"],
        "malloc_saved_measured": tied["malloc"] - untied["malloc"],
        "identity_tied": identity.get("tether"),
        "identity_untied": identity.get("tether-untied"),
    }
