"""Fixtures for every test: nothing from the developer's shell leaks into a test."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _no_rtrm_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset RTRM_* variables, so a developer's RTRM_CONFIG cannot change a result."""
    for name in list(os.environ):
        if name.startswith("RTRM_"):
            monkeypatch.delenv(name)
