"""The public front module: every exported name resolves, and children stay light."""

from __future__ import annotations

import subprocess
import sys

import mpfault


def test_every_exported_name_resolves() -> None:
    for name in mpfault.__all__:
        assert getattr(mpfault, name) is not None, name
    assert set(dir(mpfault)) >= set(mpfault.__all__)


def test_public_names_have_docstrings() -> None:
    for name in mpfault.__all__:
        obj = getattr(mpfault, name)
        if callable(obj) or isinstance(obj, type):
            assert obj.__doc__, f"mpfault.{name} has no docstring"


def test_child_runtime_imports_neither_pytest_nor_the_harness() -> None:
    code = (
        "import sys, mpfault._runtime.bootstrap, mpfault._runtime.fqueue;"
        "bad = [m for m in ('pytest', '_pytest', 'mpfault._harness', 'mpfault.plugin') "
        "if m in sys.modules]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
