# SPDX-License-Identifier: Apache-2.0
"""python -m tether.bench: the identity benchmark (see tether.bench and bench/README.md)."""
import sys

# First, before anything imports tether.testing or tether._peers: note whether importing them
# turns the GIL back on (a module not built FREE_THREADED on a free-threaded build).
from .threads import probe_gil

_GIL = probe_gil()

from .report import main  # noqa: E402

sys.exit(main(gil=_GIL))
