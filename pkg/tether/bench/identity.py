# SPDX-License-Identifier: Apache-2.0
"""tether.bench.identity: the identity columns (what each variant keeps, not what it costs).

  is-same-while-alive   ``a.x is a.x``: the first result is still alive when the second is made.
  id-stable-after-drop  ``id(a.x)`` before and after dropping every Python reference to the
                        wrapper while C++ still holds the object, with junk allocated in between
                        (same-type objects and every small size class), so that a freed wrapper's
                        block is taken by something else and an equal id cannot be an accident.
  echo-is-same          ``echo(x) is x`` for the variant's function returning the object.
"""
from __future__ import annotations

from .cases import HOLDERS, SlotsInner, SlotsOuter

from .. import testing as tt
from .. import _peers as nbp


def _untied_box(v: int = 1):
    return tt.Box(tt.Untied(v))


# variant -> (holder factory, holder attribute yielding the object, echo or None, inner factory)
VARIANTS = {
    "slots": (HOLDERS["slots"], "x", None, SlotsInner),
    "nb-ref": (nbp.RefOuter, "x", nbp.echo, nbp.RefInner),
    "nb-intrusive": (nbp.IntrOuter, "x", nbp.echo_ref, nbp.IntrInner),
    "tether": (HOLDERS["tether"], "x", tt.echo_inner, tt.Inner),
    "tether-untied": (_untied_box, "value", tt.echo, tt.Untied),
}


def junk(make_inner, make_holder) -> list:
    """Objects of the wrapper's own type and of every small size class."""
    # Enough same-size objects to fill every partly used pymalloc pool of the wrapper's size
    # class: the freed block's pool is not necessarily the one the next allocation uses.
    out: list = [make_inner(0) for _ in range(2048)]
    out += [make_holder(0) for _ in range(16)]
    out += [SlotsOuter(SlotsInner(k)) for k in range(32)]
    out += [float(k) + 0.5 for k in range(64)]
    out += [bytes(n) for n in range(1, 520, 3) for _ in range(2)]
    out += [(k, k) for k in range(32)] + [[k] for k in range(32)]
    return out


def check(variant: str, trials: int = 5) -> dict:
    make_holder, attr, echo, make_inner = VARIANTS[variant]
    a = make_holder(7)
    same = getattr(a, attr) is getattr(a, attr)
    stable = 0
    for _ in range(trials):
        before = id(getattr(a, attr))  # the wrapper is dropped at the end of this line
        filler = junk(make_inner, make_holder)
        stable += id(getattr(a, attr)) == before
        del filler
    out = {"same_while_alive": bool(same), "id_stable": stable, "trials": trials}
    if echo is not None:
        x = make_inner(3)
        out["echo_is_same"] = echo(x) is x
    return out


def check_all(trials: int = 5) -> dict:
    return {v: check(v, trials) for v in VARIANTS}
