# SPDX-License-Identifier: Apache-2.0
"""python -m tether: where the installed C++ headers, libraries and CMake package config are.

    cmake -S . -B build -Dtether_DIR="$(python -m tether --cmake-dir)"

``--cmake-dir`` prints the directory of tether-config.cmake (for find_package(tether CONFIG)),
``--include-dir`` the directory to add to the include path (it holds ``tether/*.h``),
``--lib-dir`` the directory of libtether.so and libtether_python.so.

All three live next to the extension module ``tether._core``, which is where they are looked
for: in a regular install that is the package directory, but in an editable install
(``pip install -e .``) the Python files stay in the checkout and the built files are installed
elsewhere, so the package's own directory would be the wrong answer.
"""
import argparse
import importlib.util
import sys
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def build_dir() -> Path:
    """The directory of tether's built files (tether._core, the libraries, include/, cmake/)."""
    spec = importlib.util.find_spec("tether._core")
    if spec is None or not spec.origin:
        return PACKAGE_DIR
    return Path(spec.origin).resolve().parent


def cmake_dir() -> Path:
    return build_dir() / "cmake"


def include_dir() -> Path:
    return build_dir() / "include"


def lib_dir() -> Path:
    return build_dir()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tether", description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--cmake-dir", action="store_true", help="print the CMake config directory")
    group.add_argument("--include-dir", action="store_true", help="print the C++ include directory")
    group.add_argument("--lib-dir", action="store_true", help="print the shared library directory")
    args = parser.parse_args(argv)
    path = cmake_dir() if args.cmake_dir else include_dir() if args.include_dir else lib_dir()
    expected = {"cmake": "tether-config.cmake", "include": "tether/python.h"}.get(path.name)
    found = (path / expected).is_file() if expected else any(path.glob("libtether_python.*"))
    if not found:
        print(f"tether: {path} holds no {expected or 'libtether_python'}: run this with the "
              "Python of an environment where tether is installed (pip install tether, or "
              "pip install -e . from a checkout), not from the source tree", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
