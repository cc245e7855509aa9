"""Proof of solvency: a Merkle-sum tree of the fund's liabilities, with inclusion proofs.

Concept (REFERENCES.md §7): each leaf is one covered party's claim on the fund, an
address and an amount; each node commits to the hashes *and* the sums of its two
children, so the root commits to the total liabilities. The fund publishes the root and
the total per epoch next to its on-chain assets; anyone holding a leaf and its proof
recomputes the path with :func:`verify_proof` and checks that the claim is counted.

Encoding (keccak-256, fixed width, domain-separated so a leaf can never pass for a node):

- leaf  = keccak(0x00 || address (20 bytes) || amount (16 bytes, big-endian));
- node  = keccak(0x01 || left hash || left sum (16 bytes) || right hash || right sum);
- an odd level is completed with the empty node keccak(0x02), sum 0.

The tree has ``ceil(log2(leaves))`` levels; a proof is one :class:`ProofStep` per level.
The empty tree's root is the empty node with total 0.

Invariants: leaf amounts are integers in ``0 <= amount < 2**128``, and so is every sum,
the total included (an overflow would let a sum wrap and hide liabilities); addresses are
unique; :func:`verify_proof` also rejects a proof whose sibling sum is out of range, so a
forged negative sibling cannot cancel a claim. Units: the fund asset's smallest unit.
Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from eth_utils.crypto import keccak

from insurance.exceptions import AttestationError

__all__ = [
    "EMPTY_NODE",
    "MAX_AMOUNT",
    "Leaf",
    "MerkleSumTree",
    "ProofStep",
    "build_tree",
    "leaf_hash",
    "node_hash",
    "verify_proof",
]

MAX_AMOUNT = 2**128  # exclusive bound of every amount and sum
_SUM_BYTES = 16
_ADDRESS_BYTES = 20
EMPTY_NODE = keccak(b"\x02")


@dataclass(frozen=True, slots=True)
class Leaf:
    """One covered party's claim: a 0x address and an amount (fund-asset units)."""

    address: str
    amount: int

    def __post_init__(self) -> None:
        raw = self.address[2:] if self.address.startswith("0x") else ""
        if len(raw) != 2 * _ADDRESS_BYTES or any(ch not in "0123456789abcdefABCDEF" for ch in raw):
            raise AttestationError(
                f"leaf address {self.address!r} is not an address; write 0x and 40 hex digits"
            )
        if not 0 <= self.amount < MAX_AMOUNT:
            raise AttestationError(
                f"leaf {self.address}: amount {self.amount} is outside 0 <= amount < 2**128; "
                "a negative claim or an overflow cannot be attested"
            )


@dataclass(frozen=True, slots=True)
class ProofStep:
    """The sibling at one level: its hash and sum, and whether it sits on the left."""

    sibling_hash: bytes
    sibling_sum: int
    sibling_on_left: bool


def _sum_bytes(value: int) -> bytes:
    return value.to_bytes(_SUM_BYTES, "big")


def leaf_hash(leaf: Leaf) -> bytes:
    """keccak(0x00 || address || amount)."""
    return keccak(b"\x00" + bytes.fromhex(leaf.address[2:]) + _sum_bytes(leaf.amount))


def node_hash(left: bytes, left_sum: int, right: bytes, right_sum: int) -> bytes:
    """keccak(0x01 || left || left sum || right || right sum)."""
    return keccak(b"\x01" + left + _sum_bytes(left_sum) + right + _sum_bytes(right_sum))


@dataclass(frozen=True, slots=True)
class MerkleSumTree:
    """Every level of the tree, leaves first; ``root`` and ``total`` are published."""

    leaves: tuple[Leaf, ...]
    levels: tuple[tuple[tuple[bytes, int], ...], ...]

    @property
    def root(self) -> bytes:
        return self.levels[-1][0][0]

    @property
    def total(self) -> int:
        return self.levels[-1][0][1]

    def proof(self, address: str) -> tuple[Leaf, tuple[ProofStep, ...]]:
        """The leaf of ``address`` (case-insensitive) and its inclusion proof."""
        wanted = address.lower()
        for index, leaf in enumerate(self.leaves):
            if leaf.address.lower() == wanted:
                return leaf, self._path(index)
        raise AttestationError(f"{address} has no leaf in this tree (no claim this epoch)")

    def _path(self, index: int) -> tuple[ProofStep, ...]:
        steps = []
        for level in self.levels[:-1]:
            sibling = index ^ 1
            node = level[sibling] if sibling < len(level) else (EMPTY_NODE, 0)
            steps.append(ProofStep(node[0], node[1], sibling_on_left=sibling < index))
            index //= 2
        return tuple(steps)


def build_tree(leaves: Sequence[Leaf]) -> MerkleSumTree:
    """The tree over ``leaves`` in the given order (sort them for a canonical root)."""
    seen: set[str] = set()
    for leaf in leaves:
        key = leaf.address.lower()
        if key in seen:
            raise AttestationError(f"{leaf.address} has two leaves; add its claims into one")
        seen.add(key)
    level = tuple((leaf_hash(leaf), leaf.amount) for leaf in leaves) or ((EMPTY_NODE, 0),)
    levels = [level]
    while len(level) > 1:
        padded = (*level, (EMPTY_NODE, 0)) if len(level) % 2 else level
        parents = []
        for i in range(0, len(padded), 2):
            (lh, ls), (rh, rs) = padded[i], padded[i + 1]
            total = ls + rs
            if total >= MAX_AMOUNT:
                raise AttestationError(
                    f"liabilities overflow 2**128 (a subtree sums to {total}); "
                    "split the attestation"
                )
            parents.append((node_hash(lh, ls, rh, rs), total))
        level = tuple(parents)
        levels.append(level)
    return MerkleSumTree(tuple(leaves), tuple(levels))


def verify_proof(root: bytes, total: int, leaf: Leaf, proof: Sequence[ProofStep]) -> bool:
    """True when ``leaf`` with ``proof`` hashes up to ``root`` and sums up to ``total``."""
    node, value = leaf_hash(leaf), leaf.amount
    for step in proof:
        if not 0 <= step.sibling_sum < MAX_AMOUNT or len(step.sibling_hash) != len(node):
            return False
        if step.sibling_on_left:
            node = node_hash(step.sibling_hash, step.sibling_sum, node, value)
        else:
            node = node_hash(node, value, step.sibling_hash, step.sibling_sum)
        value += step.sibling_sum
        if value >= MAX_AMOUNT:
            return False
    return node == root and value == total
