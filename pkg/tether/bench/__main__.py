# SPDX-License-Identifier: Apache-2.0
"""python -m tether.bench: the identity benchmark (see tether.bench and bench/README.md)."""
import sys

from .report import main

sys.exit(main())
