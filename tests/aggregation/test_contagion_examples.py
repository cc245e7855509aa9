"""Hand-checkable contagion networks with known answers (issue 5): rings and chains.

``test_contagion.py`` has a two-node ring and three banks; these are the textbook shapes
at a size where the pattern shows: a ring where everyone pays in full, an unequal ring
that clears at its smallest debt, a chain of defaults that one solvent link stops, and
DebtRank going once around a ring (original and differential differ by the loss that
comes back).
"""

from __future__ import annotations

import numpy as np
import pytest

from aggregation.contagion import debtrank, eisenberg_noe


def ring(owed: list[float]) -> np.ndarray:
    """Node ``i`` owes ``owed[i]`` to node ``i + 1`` (the last one to node 0)."""
    n = len(owed)
    liabilities = np.zeros((n, n))
    liabilities[np.arange(n), (np.arange(n) + 1) % n] = owed
    return liabilities


def line(owed: list[float]) -> np.ndarray:
    """Node ``i`` owes ``owed[i]`` to node ``i + 1``; the last node owes nothing."""
    n = len(owed) + 1
    liabilities = np.zeros((n, n))
    liabilities[np.arange(n - 1), np.arange(1, n)] = owed
    return liabilities


def test_ring_where_everyone_pays_in_full() -> None:
    # five nodes each owe 10 to the next, with or without outside assets: the greatest
    # clearing vector is full payment (any common x in [0, 10] clears; 10 is the greatest)
    for outside in ([0.0] * 5, [3.0, 0.0, 1.0, 0.0, 0.0]):
        r = eisenberg_noe(ring([10.0] * 5), outside)
        np.testing.assert_array_equal(r.payments, [10.0] * 5)
        np.testing.assert_array_equal(r.recovery_rate, [1.0] * 5)
        assert not r.defaulted.any()
        np.testing.assert_allclose(r.creditor_loss, 0.0)
        np.testing.assert_allclose(r.equity, outside)  # receives 10, pays 10
        assert r.iterations == 0


def test_unequal_ring_clears_at_its_smallest_debt() -> None:
    # without outside assets, what goes round is what the smallest debtor owes: 8
    r = eisenberg_noe(ring([10.0, 8.0, 12.0, 9.0, 10.0]), [0.0] * 5)
    np.testing.assert_allclose(r.payments, [8.0] * 5)
    assert list(r.defaulted) == [True, False, True, True, True]
    np.testing.assert_allclose(r.shortfall, [2.0, 0.0, 4.0, 1.0, 2.0])
    # each creditor loses its debtor's shortfall (node i + 1 lent to node i)
    np.testing.assert_allclose(r.creditor_loss, [2.0, 2.0, 0.0, 4.0, 1.0])
    # 1 of outside assets at node 0: p_i = min(owed_i, e_i + p_(i-1)) round the ring
    r = eisenberg_noe(ring([10.0, 8.0, 12.0, 9.0, 10.0]), [1.0, 0, 0, 0, 0])
    np.testing.assert_allclose(r.payments, [9.0, 8.0, 8.0, 8.0, 8.0])


def test_chain_of_defaults() -> None:
    # A -> B -> C -> D, 100 each; outside assets 40, 30, 20: each pays what it has plus
    # what it receives: 40, 70, 90. D gets 90; B, C, D lose 60, 30, 10.
    r = eisenberg_noe(line([100.0, 100.0, 100.0]), [40.0, 30.0, 20.0, 0.0])
    np.testing.assert_allclose(r.payments, [40.0, 70.0, 90.0, 0.0])
    assert list(r.defaulted) == [True, True, True, False]
    np.testing.assert_allclose(r.creditor_loss, [0.0, 60.0, 30.0, 10.0])
    np.testing.assert_allclose(r.equity, [0.0, 0.0, 0.0, 90.0])
    assert r.iterations == 3  # one fictitious-default round per link: {A}, {A, B}, {A, B, C}
    # 40 of outside assets at C stop the chain there: C pays 100 and keeps 10
    r = eisenberg_noe(line([100.0, 100.0, 100.0]), [40.0, 30.0, 40.0, 0.0])
    np.testing.assert_allclose(r.payments, [40.0, 70.0, 100.0, 0.0])
    assert list(r.defaulted) == [True, True, False, False]
    np.testing.assert_allclose(r.equity, [0.0, 0.0, 10.0, 100.0])


def test_debtrank_once_around_a_ring() -> None:
    # node i + 1 lent 5 to node i (equity 10 each): W[i+1, i] = 0.5, and node 0 lent to 3.
    # Node 0 loses half its equity.
    n = 4
    exposures = np.zeros((n, n))
    exposures[(np.arange(n) + 1) % n, np.arange(n)] = 5.0
    h0 = [0.5, 0.0, 0.0, 0.0]
    # original: halves at each hop; node 3 passes 0.5 x 0.0625 back to node 0, which has
    # already propagated and passes nothing on
    r = debtrank(exposures, np.full(n, 10.0), h0)
    np.testing.assert_allclose(r.distress, [0.53125, 0.25, 0.125, 0.0625])
    assert r.debtrank == pytest.approx((0.03125 + 0.25 + 0.125 + 0.0625) * 10 / 40)
    # differential: the least fixed point of h = h0 + W h: h0 = 0.5 + h0 / 16
    r = debtrank(exposures, np.full(n, 10.0), h0, variant="differential")
    np.testing.assert_allclose(r.distress, np.array([8.0, 4.0, 2.0, 1.0]) / 15.0, rtol=1e-9)
    assert r.converged
    # full failure of node 0 saturates nothing else: W < 1 on every edge
    r = debtrank(exposures, np.full(n, 10.0), [1.0, 0, 0, 0], variant="differential")
    np.testing.assert_allclose(r.distress, [1.0, 0.5, 0.25, 0.125])
