# SPDX-License-Identifier: Apache-2.0
"""python -m tether: where the installed C++ headers and CMake package config are.

    cmake -S . -B build -Dtether_DIR="$(python -m tether --cmake-dir)"

``--cmake-dir`` prints the directory of tether-config.cmake (for find_package(tether CONFIG)),
``--include-dir`` the directory to add to the include path (it holds ``tether/*.h``),
``--lib-dir`` the directory of libtether.so and libtether_python.so.
"""
import argparse
import sys
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def cmake_dir() -> Path:
    return PACKAGE_DIR / "cmake"


def include_dir() -> Path:
    return PACKAGE_DIR / "include"


def lib_dir() -> Path:
    return PACKAGE_DIR


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tether", description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--cmake-dir", action="store_true", help="print the CMake config directory")
    group.add_argument("--include-dir", action="store_true", help="print the C++ include directory")
    group.add_argument("--lib-dir", action="store_true", help="print the shared library directory")
    args = parser.parse_args(argv)
    path = cmake_dir() if args.cmake_dir else include_dir() if args.include_dir else lib_dir()
    if not path.is_dir():
        print(f"tether: {path} does not exist: run this from an installed tether "
              "(pip install .), not from the source tree", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
