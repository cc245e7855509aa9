"""``python -m rtrm``: the same as the ``rtrm`` console script."""

from __future__ import annotations

from rtrm.cli import run

run()
