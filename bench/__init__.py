# SPDX-License-Identifier: Apache-2.0
"""bench/: pytest-benchmark benchmarks (a package, so its conftest never shadows tests/conftest)."""
