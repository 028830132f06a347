# SPDX-License-Identifier: Apache-2.0
"""tether.bench: what tying every C++ object to one Python wrapper costs, next to its peers.

``python -m tether.bench`` times, in one run and side by side, a pure-Python ``__slots__``
class (the floor), nanobind's reference_internal and intrusive bindings of the same structs
(``tether._peers``) and tether. It prints a verdict first (what identity costs per read, per
call and per object; each tether row against its like-for-like nanobind peer: owning
``Ref<T>`` vs ``nb::ref<T>``, borrowed ``T*`` vs ``T*``), then the machine, the versions, ns per
operation, the identity each variant keeps and bytes per object. ``--targets`` adds the
project's numbered targets; ``--json PATH`` writes every number; ``--from-json PATH`` prints a
saved run; ``--quick`` runs tiny rounds (the test suite's smoke run).
"""
# Nothing is imported here: `python -m tether.bench.memory` children load only what they need.
