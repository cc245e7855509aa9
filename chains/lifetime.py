"""Child processes that never outlive their parent (Linux ``PR_SET_PDEATHSIG``).

Used for anvil nodes (:mod:`chains.anvil`) and the indexer's writer process
(:mod:`indexer.writerproc`): even a ``kill -9`` of the Python parent leaves no orphan.
"""

from __future__ import annotations

import ctypes
import os
import platform
import signal
from collections.abc import Callable

__all__ = ["pdeathsig_hook"]

_PR_SET_PDEATHSIG = 1


def pdeathsig_hook(parent: int | None = None) -> Callable[[], None] | None:
    """A hook to run in the child: the kernel SIGKILLs it when ``parent`` (default: this
    process, for a pre-exec hook) dies, and it exits at once if ``parent`` already has.
    ``None`` where the kernel has no such feature (then stop() and signal handlers must do
    the job). libc is resolved here, before any fork: nothing is loaded in the child."""
    if platform.system() != "Linux":
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    expected = os.getpid() if parent is None else parent

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != expected:  # the parent died before prctl
            os._exit(1)

    return hook
