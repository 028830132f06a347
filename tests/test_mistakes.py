# SPDX-License-Identifier: Apache-2.0
"""The binding mistakes a nanobind user makes by habit fail early, with a message naming the fix.

tests/mistakes/ is a CMake project built against the installed tether like any downstream
module. Mistakes the type system sees fail to compile (one `compile_fail_<name>` target each,
built on its own, whose compiler output must carry the documented message). Mistakes only run
time sees are modules that build, and raise the documented Python exception at import or on
use, in a child interpreter: never an abort, never SystemError.
"""
import os
import subprocess
import sys
import textwrap

import pytest

from cmake_build import REPO, cmake_or_skip, nanobind_cmake_dir, run, tether_cmake_dir

PROJECT = REPO / "tests" / "mistakes"


@pytest.fixture(scope="module")
def mistakes_build(tmp_path_factory):
    cmake, args = cmake_or_skip()
    nanobind_cmake_dir()
    build = tmp_path_factory.mktemp("mistakes")
    run([cmake, "-S", str(PROJECT), "-B", str(build), *args,
         f"-Dtether_DIR={tether_cmake_dir()}", "-DCMAKE_BUILD_TYPE=Release"])
    run([cmake, "--build", str(build), "-j", "2"])
    return cmake, build


def run_child(build, code):
    """Run `code` in a fresh interpreter that imports from the build directory."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(build), env.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=120)


def expect_ok(build, code):
    proc = run_child(build, code)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


# ---- compile time ---------------------------------------------------------------------------

COMPILE_FAILS = {
    "nb_init": "write .def(tether::init<...>()) instead",
    "not_an_object": "T must derive from tether::Object",
    "base_not_an_object": "Base must be a tether type",
    "missing_caster": "#include <nanobind/stl/function.h>",
    "nested_missing_caster": "#include <nanobind/stl/optional.h>",
    "return_by_value": "tether objects cannot be returned to Python by value",
    "trace_refs_not_noexcept": "declare the hook noexcept",
}


@pytest.mark.parametrize("name", sorted(COMPILE_FAILS))
def test_fails_to_compile_with_the_fix(mistakes_build, name):
    cmake, build = mistakes_build
    proc = subprocess.run([cmake, "--build", str(build), "--target", f"compile_fail_{name}"],
                          capture_output=True, text=True)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, f"compile_fail_{name} compiled:\n{output[-3000:]}"
    assert COMPILE_FAILS[name] in output, output[-6000:]


# ---- run time --------------------------------------------------------------------------------

def import_outcome(build, module):
    """What importing `module` in a child interpreter printed: its ImportError (and the
    error's cause), or "imported"."""
    return expect_ok(build, f"""
        try:
            import {module}
        except ImportError as e:
            print("ImportError:", e, e.__cause__)
        else:
            print("imported")
    """)


def test_plain_nb_class_on_a_tether_type_is_an_import_error(mistakes_build):
    _, build = mistakes_build
    out = import_outcome(build, "mistake_plain_nb_class")
    assert "ImportError:" in out, out
    assert "Counter derives from tether::Object but is bound with nb::class_" in out
    assert "tether::class_<Counter>" in out and "tether::init<...>()" in out


def test_missing_init_module_is_an_import_error(mistakes_build):
    _, build = mistakes_build
    out = import_outcome(build, "mistake_no_init_module")
    assert "ImportError:" in out, out
    assert "did not call tether::init_module()" in out, out


def test_unconvertible_field_raises_type_error_naming_it(mistakes_build):
    _, build = mistakes_build
    out = expect_ok(build, """
        import pickle
        import mistake_unconvertible_field as m
        h = m.Holder()
        assert h.n == 3
        for name in ("items", "value"):
            try:
                getattr(h, name)
            except TypeError as e:
                print(name, "TypeError:", e)
        for what, f in (("repr", repr), ("pickle", pickle.dumps)):
            try:
                f(h)
            except TypeError as e:
                print(what, "TypeError:", e)
    """)
    # (the type's name carries its module from 3.14 on: mistake_unconvertible_field.Holder)
    assert "Holder.items: unable to convert the field's C++ value (std::vector<Opaque*" in out, out
    assert "Holder.value: unable to convert the field's C++ value (Opaque)" in out
    for what in ("items", "value", "repr", "pickle"):
        assert f"{what} TypeError: " in out, out
    assert "SystemError" not in out


def test_common_errors_page_quotes_the_messages():
    """docs/errors.md shows the messages these tests see (line breaks aside)."""
    page = " ".join((REPO / "docs" / "errors.md").read_text().split())
    for message in COMPILE_FAILS.values():
        assert message in page, message
    for message in ("Counter derives from tether::Object but is bound with nb::class_",
                    "this module did not call tether::init_module()",
                    "Holder.items: unable to convert the field's C++ value",
                    "Section.paragraphs: expected list[Paragraph], got None at index 1"):
        assert message in page, message


def test_field_of_a_type_another_module_binds_later(mistakes_build):
    _, build = mistakes_build
    expect_ok(build, """
        import typing
        import tether
        import mistake_late_field as a
        # Late is not bound yet: forward references by C++ name, listed as pending.
        assert a.Owner.__annotations__["late"] == "Late | None"
        assert a.Owner.__annotations__["lates"] == "list[Late]"
        assert set(a.Owner.__tether_pending__) == {"late", "lates", "maybe"}
        o = a.Owner()
        assert o.late is None and o.lates == []
        import mistake_late_type as b   # binding Late resolves Owner's annotations
        assert a.Owner.__tether_pending__ == {}
        hints = typing.get_type_hints(a.Owner)
        assert hints["late"] == typing.Optional[b.Late]
        assert hints["lates"] == list[b.Late]
        assert hints["maybe"] == typing.Optional[b.Late]
        assert a.Owner.late.__doc__ == "late: Late | None"
        o.late = b.Late(4)
        o.lates = [o.late]
        assert o.late is o.lates[0] and o.late.v == 4
    """)


def test_replaced_pending_registries_raise(mistakes_build):
    """Code that overwrites the registries of deferred annotations gets an exception at the
    next binding, not a crash."""
    _, build = mistakes_build
    expect_ok(build, """
        import tether
        import mistake_late_field as a
        a.Owner.__tether_pending__ = 5
        try:
            import mistake_late_type
        except ImportError as e:
            assert "__tether_pending__" in str(e.__cause__ or e), e
        else:
            raise AssertionError("imported")
        tether._core._deferred_annotations = {}
        import sys
        sys.modules.pop("mistake_late_type", None)
        try:
            import mistake_late_type
        except ImportError as e:
            assert "_deferred_annotations" in str(e.__cause__ or e), e
        else:
            raise AssertionError("imported")
    """)
