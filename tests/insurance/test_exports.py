"""The package's public surface is what we mean, and importing it stays light."""

from __future__ import annotations

import subprocess
import sys

import insurance


def test_every_export_resolves_to_its_module() -> None:
    assert sorted(insurance.__all__) == sorted(insurance._EXPORTS)
    for name in insurance.__all__:
        value = getattr(insurance, name)
        assert getattr(value, "__module__", insurance._EXPORTS[name]).startswith("insurance.")


def test_importing_the_exceptions_does_not_load_numpy_or_the_store() -> None:
    code = (
        "import sys, insurance.exceptions; "
        "print(sorted(m for m in ('numpy', 'scipy', 'sqlalchemy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
