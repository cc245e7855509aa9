"""The package's public surface resolves, and importing its exceptions stays light."""

from __future__ import annotations

import subprocess
import sys

import aggregation


def test_every_export_resolves_to_its_module() -> None:
    assert sorted(aggregation.__all__) == sorted(aggregation._EXPORTS)
    for name in aggregation.__all__:
        value = getattr(aggregation, name)
        assert getattr(value, "__module__", aggregation._EXPORTS[name]).startswith("aggregation.")


def test_functions_named_like_their_modules_stay_functions() -> None:
    code = (
        "import aggregation.risk, aggregation.black76, aggregation.implied_vol, aggregation; "
        "from aggregation.black76 import Greeks; "
        "print(type(aggregation.black76).__name__, type(aggregation.implied_vol).__name__, "
        "Greeks.__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["function", "function", "Greeks"]


def test_importing_the_exceptions_does_not_load_numpy_or_scipy() -> None:
    code = (
        "import sys, aggregation.exceptions; "
        "print(sorted(m for m in ('numpy', 'scipy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
