"""Merkle-sum proofs of liabilities: every proof verifies, any tampering fails."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from insurance.attestation import (
    EMPTY_NODE,
    MAX_AMOUNT,
    Leaf,
    ProofStep,
    build_tree,
    verify_proof,
)
from insurance.exceptions import AttestationError

ADDRESSES = st.binary(min_size=20, max_size=20).map(lambda raw: "0x" + raw.hex())
LEAF_SETS = st.dictionaries(ADDRESSES, st.integers(0, 2**100), min_size=1, max_size=40).map(
    lambda d: [Leaf(a, v) for a, v in sorted(d.items())]
)


@settings(max_examples=100, deadline=None)
@given(LEAF_SETS)
def test_every_leaf_proves_inclusion_and_the_root_sums_the_liabilities(leaves: list[Leaf]) -> None:
    tree = build_tree(leaves)
    assert tree.total == sum(leaf.amount for leaf in leaves)
    for leaf in leaves:
        found, proof = tree.proof(leaf.address.upper().replace("0X", "0x"))
        assert found == leaf
        assert verify_proof(tree.root, tree.total, leaf, proof)


@settings(max_examples=100, deadline=None)
@given(LEAF_SETS, st.data())
def test_tampering_with_an_amount_a_sibling_or_the_total_fails(
    leaves: list[Leaf], data: st.DataObject
) -> None:
    tree = build_tree(leaves)
    leaf = data.draw(st.sampled_from(leaves))
    _, proof = tree.proof(leaf.address)
    other = data.draw(st.integers(0, 2**100).filter(lambda v: v != leaf.amount))
    assert not verify_proof(tree.root, tree.total, replace(leaf, amount=other), proof)
    assert not verify_proof(tree.root, tree.total + 1, leaf, proof)
    if proof:
        i = data.draw(st.integers(0, len(proof) - 1))
        step = proof[i]
        bumped = [*proof[:i], replace(step, sibling_sum=step.sibling_sum + 1), *proof[i + 1 :]]
        assert not verify_proof(tree.root, tree.total, leaf, bumped)
        assert not verify_proof(tree.root, tree.total + 1, leaf, bumped)
        flipped = bytes([step.sibling_hash[0] ^ 1]) + step.sibling_hash[1:]
        forged = [*proof[:i], replace(step, sibling_hash=flipped), *proof[i + 1 :]]
        assert not verify_proof(tree.root, tree.total, leaf, forged)
        side = [
            *proof[:i],
            replace(step, sibling_on_left=not step.sibling_on_left),
            *proof[i + 1 :],
        ]
        if step.sibling_hash != EMPTY_NODE or step.sibling_sum:
            assert not verify_proof(tree.root, tree.total, leaf, side)


def test_a_negative_sibling_sum_cannot_hide_a_claim() -> None:
    leaves = [Leaf("0x" + "11" * 20, 5), Leaf("0x" + "22" * 20, 7)]
    tree = build_tree(leaves)
    _, proof = tree.proof(leaves[0].address)
    forged = [ProofStep(proof[0].sibling_hash, -7, proof[0].sibling_on_left)]
    assert not verify_proof(tree.root, 5 - 7, leaves[0], forged)


def test_the_tree_is_deterministic_and_order_matters_only_through_the_leaves() -> None:
    leaves = [Leaf("0x" + f"{i:02x}" * 20, i * 10) for i in range(1, 8)]
    assert build_tree(leaves).root == build_tree(list(leaves)).root
    assert build_tree(leaves).root != build_tree(leaves[::-1]).root
    assert build_tree(leaves).total == build_tree(leaves[::-1]).total == 280


def test_empty_tree_has_zero_total() -> None:
    tree = build_tree([])
    assert (tree.root, tree.total) == (EMPTY_NODE, 0)


@pytest.mark.parametrize("amount", [-1, MAX_AMOUNT])
def test_negative_or_overflowing_leaves_are_rejected(amount: int) -> None:
    with pytest.raises(AttestationError, match="outside 0 <= amount < 2\\*\\*128"):
        Leaf("0x" + "ab" * 20, amount)


def test_an_overflowing_sum_is_rejected() -> None:
    leaves = [Leaf("0x" + "01" * 20, MAX_AMOUNT - 1), Leaf("0x" + "02" * 20, 1)]
    with pytest.raises(AttestationError, match="overflow"):
        build_tree(leaves)


def test_duplicate_addresses_and_bad_addresses_are_rejected() -> None:
    with pytest.raises(AttestationError, match="two leaves"):
        build_tree([Leaf("0x" + "ab" * 20, 1), Leaf("0x" + "AB" * 20, 2)])
    with pytest.raises(AttestationError, match="not an address"):
        Leaf("0x1234", 1)
    with pytest.raises(AttestationError, match="no leaf"):
        build_tree([Leaf("0x" + "ab" * 20, 1)]).proof("0x" + "cd" * 20)
