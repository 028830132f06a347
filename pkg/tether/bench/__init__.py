# SPDX-License-Identifier: Apache-2.0
"""tether.bench: what tying every C++ object to one Python wrapper costs, next to its peers.

``python -m tether.bench`` times, in one run and side by side, a pure-Python ``__slots__``
class (the floor), nanobind's reference_internal and intrusive bindings of the same structs
(``tether._peers``) and tether, and prints a table with the machine, the versions, ns per
operation, the ratios the targets in issue 3 are stated in, and the identity each variant keeps.
``--json PATH`` writes every number; ``--quick`` runs tiny rounds (the test suite's smoke run).
"""
# Nothing is imported here: `python -m tether.bench.memory` children load only what they need.
