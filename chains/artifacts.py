"""Compiled contract artifacts: ABI and bytecode of every contract in ``contracts/src``.

Artifacts are produced by ``node contracts/compile.mjs`` (pinned npm ``solc``) into
``contracts/build/<Name>.json`` and committed; ``contracts/build/manifest.json`` records the
compiler, its settings and the SHA-256 of every source, so a stale build is detected by
comparing hashes (:func:`stale_sources`) without running the compiler.

Invariants: an :class:`Artifact` is immutable and loaded once per process; every event of
every contract has a unique topic0 here (a collision would make decoding ambiguous and is
rejected when the event table is built).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from chains.abi import event_topic
from chains.exceptions import ArtifactError

__all__ = [
    "CONTRACTS_DIR",
    "Artifact",
    "EventAbi",
    "event_table",
    "load_artifact",
    "stale_sources",
]

CONTRACTS_DIR = Path(__file__).resolve().parents[1] / "contracts"
BUILD_DIR = CONTRACTS_DIR / "build"
SOURCE_DIR = CONTRACTS_DIR / "src"
_REBUILD_FIX = "run `make contracts` (node contracts/compile.mjs) and commit contracts/build"


@dataclass(frozen=True, slots=True)
class EventAbi:
    """One event: where it is declared, its canonical signature and topic0."""

    contract: str
    name: str
    signature: str
    topic0: str
    inputs: tuple[dict[str, Any], ...]


@dataclass(frozen=True, slots=True)
class Artifact:
    """ABI and creation bytecode of one compiled contract."""

    name: str
    abi: tuple[dict[str, Any], ...]
    bytecode: str

    @property
    def events(self) -> tuple[EventAbi, ...]:
        return tuple(
            _event_abi(self.name, entry) for entry in self.abi if entry.get("type") == "event"
        )

    def function(self, name: str) -> dict[str, Any]:
        """The ABI entry of function ``name`` (the first overload)."""
        for entry in self.abi:
            if entry.get("type") == "function" and entry.get("name") == name:
                return entry
        known = sorted({e["name"] for e in self.abi if e.get("type") == "function"})
        raise ArtifactError(f"{self.name} has no function {name!r}; it has: {', '.join(known)}")


def _canonical_type(param: dict[str, Any]) -> str:
    abi_type = str(param["type"])
    if abi_type.startswith("tuple"):
        inner = ",".join(_canonical_type(c) for c in param["components"])
        return f"({inner}){abi_type[len('tuple') :]}"
    return abi_type


def _event_abi(contract: str, entry: dict[str, Any]) -> EventAbi:
    inputs = tuple(entry["inputs"])
    signature = f"{entry['name']}({','.join(_canonical_type(p) for p in inputs)})"
    return EventAbi(contract, entry["name"], signature, event_topic(signature), inputs)


@cache
def load_artifact(name: str) -> Artifact:
    """Load ``contracts/build/<name>.json``; :class:`ArtifactError` if missing or malformed."""
    path = BUILD_DIR / f"{name}.json"
    try:
        raw = json.loads(path.read_text())
        return Artifact(name=name, abi=tuple(raw["abi"]), bytecode=str(raw["bytecode"]))
    except FileNotFoundError:
        raise ArtifactError(f"no compiled artifact for {name} at {path}; {_REBUILD_FIX}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"artifact {path} is malformed ({exc}); {_REBUILD_FIX}") from None


@cache
def event_table() -> dict[str, EventAbi]:
    """topic0 -> event, across every compiled contract (shared events such as ``Transfer``
    appear once: the same signature means the same layout)."""
    manifest = _manifest()
    table: dict[str, EventAbi] = {}
    for name in manifest["contracts"]:
        for event in load_artifact(name).events:
            known = table.get(event.topic0)
            if known is not None and known.signature != event.signature:
                raise ArtifactError(f"topic collision: {known.signature} vs {event.signature}")
            table.setdefault(event.topic0, event)
    return table


def _manifest() -> dict[str, Any]:
    path = BUILD_DIR / "manifest.json"
    try:
        manifest: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"cannot read {path} ({exc}); {_REBUILD_FIX}") from None
    return manifest


def stale_sources() -> list[str]:
    """Sources whose hash differs from the manifest, plus sources added or removed since the
    last build; empty when the committed artifacts match ``contracts/src``."""
    recorded: dict[str, str] = _manifest()["sources"]
    current = {
        path.relative_to(SOURCE_DIR).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(SOURCE_DIR.rglob("*.sol"))
    }
    names = sorted(set(recorded) | set(current))
    return [name for name in names if recorded.get(name) != current.get(name)]
