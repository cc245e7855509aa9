"""RTRM's composition root: the ``rtrm`` command line, settings and logging set-up.

This is the only package allowed to import every other one (see the import-linter
layers in pyproject.toml): ``rtrm > api > insurance > aggregation > indexer > chains``.
Nothing below it configures logging handlers or reads command-line arguments.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]

try:
    __version__ = version("rtrm")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
