"""Contagion: Eisenberg-Noe clearing, DebtRank (original and differential), the network."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from aggregation.contagion import debtrank, eisenberg_noe, impact_matrix, protocol_network
from aggregation.exceptions import InvalidParamsError
from aggregation.risk import (
    BorrowPositions,
    CollateralPositions,
    OptionPositions,
    PerpPositions,
    RiskInputs,
    SupplyPositions,
)

# ---------------------------------------------------------------- Eisenberg-Noe


def test_three_banks_by_hand() -> None:
    # A owes B 10 and C 10; B owes C 10; C owes A 10; outside assets 5, 2, 3.
    # Guess A and B default, C pays in full: p_C = 10 -> p_A = 5 + 10 = 15
    # -> p_B = 2 + 15/2 = 9.5 -> C receives 7.5 + 9.5 = 17 + 3 >= 10: consistent.
    liabilities = np.array([[0, 10, 10], [0, 0, 10], [10, 0, 0]], dtype=float)
    r = eisenberg_noe(liabilities, [5.0, 2.0, 3.0])
    np.testing.assert_allclose(r.payments, [15.0, 9.5, 10.0])
    np.testing.assert_allclose(r.total_liabilities, [20.0, 10.0, 10.0])
    np.testing.assert_allclose(r.recovery_rate, [0.75, 0.95, 1.0])
    assert list(r.defaulted) == [True, True, False]
    # A's 5 unpaid splits 2.5 / 2.5 to B and C; B's 0.5 goes to C
    np.testing.assert_allclose(r.creditor_loss, [0.0, 2.5, 3.0])
    np.testing.assert_allclose(r.equity, [0.0, 0.0, 10.0])
    assert r.iterations == 2  # default sets {A}, then {A, B}
    assert r.solves == 1  # Picard steps from pbar find both sets; one solve confirms
    assert r.method == "fictitious-default"


def test_greatest_clearing_vector() -> None:
    # two banks owing each other 10, nothing else: every p = (x, x), x in [0, 10], clears;
    # the greatest is full payment
    r = eisenberg_noe([[0.0, 10.0], [10.0, 0.0]], [0.0, 0.0])
    np.testing.assert_allclose(r.payments, [10.0, 10.0])
    assert not r.defaulted.any()
    # unequal ring: A owes 10, B owes 5 -> A pays what it receives, 5
    r = eisenberg_noe([[0.0, 10.0], [5.0, 0.0]], [0.0, 0.0])
    np.testing.assert_allclose(r.payments, [5.0, 5.0])
    assert list(r.defaulted) == [True, False]


def test_caller_matrix_untouched() -> None:
    liabilities = np.array([[3.0, 1.0], [1.0, 3.0]])
    eisenberg_noe(liabilities, [0.0, 0.0])
    assert liabilities[0, 0] == 3.0


networks = st.integers(2, 6).flatmap(
    lambda n: st.tuples(
        hnp.arrays(np.float64, (n, n), elements=st.floats(0.0, 100.0)),
        hnp.arrays(np.float64, (n,), elements=st.floats(0.0, 50.0)),
    )
)


def picard_greatest(liabilities: np.ndarray, e: np.ndarray) -> Any:
    lia = liabilities.copy()
    np.fill_diagonal(lia, 0.0)
    pbar = lia.sum(1)
    pi = np.divide(lia, pbar[:, None], out=np.zeros_like(lia), where=pbar[:, None] > 0)
    p = pbar.copy()
    for _ in range(200_000):
        new = np.minimum(pbar, e + pi.T @ p)
        if np.abs(new - p).max() < 1e-12:
            break
        p = new
    return p


@settings(max_examples=60, deadline=None)
@given(networks)
def test_clearing_vector_properties(network: tuple[np.ndarray, np.ndarray]) -> None:
    liabilities, e = network
    r = eisenberg_noe(liabilities, e)
    p, pbar = r.payments, r.total_liabilities
    assert (p >= 0.0).all()
    assert (p <= pbar + 1e-9).all()
    lia = liabilities.copy()
    np.fill_diagonal(lia, 0.0)
    pi = np.divide(lia, pbar[:, None], out=np.zeros_like(lia), where=pbar[:, None] > 0)
    np.testing.assert_allclose(p, np.minimum(pbar, e + pi.T @ p), atol=1e-7)
    # the greatest fixed point: Picard iteration from pbar decreases to it
    np.testing.assert_allclose(p, picard_greatest(liabilities, e), atol=1e-6)
    # more outside assets never lower any payment
    more = eisenberg_noe(liabilities, e + 1.0)
    assert (more.payments >= p - 1e-7).all()


# ---------------------------------------------------------------- DebtRank


def test_chain_by_hand() -> None:
    # node i+1 lent 6 to node i (equity 10 each): W[i+1, i] = 0.6; node 0 loses half
    x = np.zeros((4, 4))
    x[1, 0] = x[2, 1] = x[3, 2] = 6.0
    for variant in ("original", "differential"):
        r = debtrank(x, np.full(4, 10.0), [0.5, 0, 0, 0], variant=variant)
        np.testing.assert_allclose(r.distress, [0.5, 0.3, 0.18, 0.108])
        np.testing.assert_allclose(r.loss_usd, [5.0, 3.0, 1.8, 1.08])
        assert r.debtrank == pytest.approx((0.3 + 0.18 + 0.108) / 4)
        assert r.converged
        assert not r.defaulted.any()


def test_star_by_hand() -> None:
    # centre 0 owes leaves 1..3: W[leaf, 0] = 4, 8, 16 / 10 -> capped at 1
    x = np.zeros((4, 4))
    x[1:, 0] = [4.0, 8.0, 16.0]
    r = debtrank(x, np.full(4, 10.0), [1.0, 0, 0, 0])
    np.testing.assert_allclose(r.distress, [1.0, 0.4, 0.8, 1.0])
    assert list(r.defaulted) == [True, False, False, True]
    # the centre lent 2 to each leaf: W[0, leaf] = 0.2; all leaves fail -> 0.6
    inward = np.zeros((4, 4))
    inward[0, 1:] = 2.0
    for variant in ("original", "differential"):
        r = debtrank(inward, np.full(4, 10.0), [0, 1.0, 1.0, 1.0], variant=variant)
        np.testing.assert_allclose(r.distress, [0.6, 1.0, 1.0, 1.0])


def test_original_and_differential_differ_on_a_second_path() -> None:
    # node 1 lent to 0 and to 2; node 2 lent to 0; node 3 lent to 1 (equity 10 each).
    # Original: 1 is distressed at step 1 (0.25), propagates 0.25 to 3 and goes inactive;
    # the 0.12 reaching 1 through 2 at step 2 never travels on. Differential passes it.
    x = np.zeros((4, 4))
    x[1, 0], x[1, 2], x[2, 0], x[3, 1] = 5.0, 4.0, 6.0, 8.0
    original = debtrank(x, np.full(4, 10.0), [0.5, 0, 0, 0])
    differential = debtrank(x, np.full(4, 10.0), [0.5, 0, 0, 0], variant="differential")
    np.testing.assert_allclose(original.distress, [0.5, 0.37, 0.3, 0.2])
    np.testing.assert_allclose(differential.distress, [0.5, 0.37, 0.3, 0.296])
    assert original.iterations == 3


def test_original_is_not_monotone_in_its_support() -> None:
    # 1 lent all its equity to 0; 2 lent to 1. Distressing 1 a little at the start makes
    # it pass on 0.01 once instead of the full loss it takes a step later.
    x = np.zeros((3, 3))
    x[1, 0], x[2, 1] = 10.0, 10.0
    equity = np.full(3, 10.0)
    base = debtrank(x, equity, [1.0, 0.0, 0.0])
    more = debtrank(x, equity, [1.0, 0.01, 0.0])
    assert base.distress[2] == 1.0
    assert more.distress[2] == pytest.approx(0.01)
    diff = debtrank(x, equity, [1.0, 0.01, 0.0], variant="differential")
    assert diff.distress[2] == 1.0


def test_differential_saturates_a_critical_cycle_exactly() -> None:
    # two nodes each exposed to the other beyond equity: W = [[0, 1], [1, 0]], spectral
    # radius 1. Tiny distress grows by 6e-8 a step: ~17 million steps, jumped in one go.
    r = debtrank([[0.0, 1.0], [1.0, 0.0]], [1.0, 1.0], [6e-8, 6e-8], variant="differential")
    np.testing.assert_array_equal(r.distress, [1.0, 1.0])
    assert r.converged
    assert r.iterations > 10_000_000
    # a stable chain that converges geometrically is jumped to its limit h0 / (1 - 0.9)
    r = debtrank([[0.9]], [1.0], [0.05], variant="differential")
    assert r.distress[0] == pytest.approx(0.05)  # the diagonal is ignored
    loop = debtrank([[0.0, 0.9], [0.9, 0.0]], [1.0, 1.0], [0.05, 0.0], variant="differential")
    assert loop.distress == pytest.approx([0.05 / (1 - 0.81), 0.9 * 0.05 / (1 - 0.81)])


def default_chain(n: int) -> tuple[np.ndarray, ...]:
    # bench/contagion.py's chain: i owes i + 1 100 and i + 7 1, thin outside assets
    liabilities = np.zeros((n, n))
    liabilities[np.arange(n - 1), np.arange(1, n)] = 100.0
    liabilities[np.arange(n), (np.arange(n) + 7) % n] += 1.0
    external = np.full(n, 0.5)
    external[0] = 10.0
    exposures = liabilities.T.copy()
    h0 = np.zeros(n)
    h0[0] = 1.0
    return liabilities, external, exposures, exposures.sum(1) * 0.5 + 1.0, h0


def test_differential_matches_plain_steps_on_a_chain_of_defaults() -> None:
    _, _, x, equity, h0 = default_chain(300)
    w = impact_matrix(x, equity)
    h, steps = h0.copy(), 0
    while True:  # plain stepping, the reference
        steps += 1
        new = np.minimum(1.0, h0 + w @ h)
        if np.abs(new - h).max() <= 1e-12:
            break
        h = new
    r = debtrank(x, equity, h0, variant="differential")
    assert r.converged
    assert r.iterations == steps
    np.testing.assert_allclose(r.distress, new, rtol=0.0, atol=1e-12)
    assert r.defaulted.sum() > 10


def test_clearing_on_a_chain_of_defaults_matches_picard() -> None:
    liabilities, external, *_ = default_chain(300)
    r = eisenberg_noe(liabilities, external)
    assert r.method == "fictitious-default"
    np.testing.assert_allclose(r.payments, picard_greatest(liabilities, external), atol=1e-9)
    assert r.defaulted.sum() > 10
    assert r.solves <= 2  # the Picard seed finds (nearly) every default up front


def test_impact_matrix() -> None:
    w = impact_matrix([[5.0, 30.0], [2.0, 0.0]], [10.0, 0.0])
    np.testing.assert_allclose(w, [[0.0, 1.0], [1.0, 0.0]])  # capped; zero equity: 1
    with pytest.raises(InvalidParamsError):
        impact_matrix([[1.0, -1.0], [0.0, 0.0]], [1.0, 1.0])
    with pytest.raises(InvalidParamsError):
        debtrank(np.zeros((2, 2)), [1.0, 1.0], [1.5, 0.0])
    with pytest.raises(InvalidParamsError):
        debtrank(np.zeros((2, 2)), [1.0, 1.0], [0.5, 0.0], variant="other")  # type: ignore[arg-type]
    with pytest.raises(InvalidParamsError):
        eisenberg_noe(np.zeros((2, 3)), [0.0, 0.0])


graphs = st.integers(2, 6).flatmap(
    lambda n: st.tuples(
        hnp.arrays(np.float64, (n, n), elements=st.floats(0.0, 20.0)),
        hnp.arrays(np.float64, (n,), elements=st.floats(0.5, 20.0)),
        hnp.arrays(np.float64, (n,), elements=st.floats(0.0, 1.0)),
        hnp.arrays(np.float64, (n,), elements=st.floats(0.0, 1.0)),
    )
)


@settings(max_examples=80, deadline=None)
@given(graphs)
def test_debtrank_properties(graph: tuple[np.ndarray, ...]) -> None:
    x, equity, h0, extra = graph
    higher = np.minimum(1.0, h0 + extra)
    w = impact_matrix(x, equity)
    for variant in ("original", "differential"):
        r = debtrank(x, equity, h0, variant=variant)
        assert ((r.distress >= h0) & (r.distress <= 1.0)).all()
        assert r.converged
    diff = debtrank(x, equity, h0, variant="differential")
    # Bardoscia's increments, step by step, where they settle quickly, give the same h
    h, previous = h0.copy(), np.zeros_like(h0)
    for _ in range(2_000):
        if (h - previous).max() <= 1e-13:
            np.testing.assert_allclose(diff.distress, h, atol=1e-9)
            break
        previous, h = h, np.minimum(1.0, h + w @ (h - previous))
    # the least fixed point of h = min(1, h0 + W h) above h0, monotone in h0
    np.testing.assert_allclose(diff.distress, np.minimum(1.0, h0 + w @ diff.distress), atol=1e-9)
    assert (
        debtrank(x, equity, higher, variant="differential").distress >= diff.distress - 1e-9
    ).all()
    # the original is monotone while the initially distressed set stays the same
    same_support = np.where(h0 > 0.0, higher, 0.0)
    low = debtrank(x, equity, h0).distress
    assert (debtrank(x, equity, same_support).distress >= low - 1e-12).all()
    # differential passes on every increment: it never ends below the original
    assert (diff.distress >= low - 1e-9).all()


# ---------------------------------------------------------------- protocol network

# assets: ETH, USDC, rvETH (the vault share, issued by node (protocol 1, chain 0))
ETH, USDC, RVETH = 0, 1, 2
VAULT = 1 * 3 + 0  # protocol 1 on chain 0: node = protocol x n_chains + chain
POOL = (0 * 3 + 1, 0 * 3 + 2)  # lending protocol 0 on chains 1 and 2


def network_inputs() -> RiskInputs:
    def cols(rows: list[tuple[float, ...]], kinds: str) -> list[np.ndarray]:
        dtype = {"i": np.intp, "f": np.float64}
        return [
            np.array(c, dtype=dtype[k]) for c, k in zip(zip(*rows, strict=True), kinds, strict=True)
        ]

    # (user, asset, chain, protocol, amount, LT, LTV, bonus)
    supplies = cols(
        [(0, RVETH, 1, 0, 10.0, 0.7, 0.6, 1.08), (1, RVETH, 2, 0, 5.0, 0.7, 0.6, 1.08),
         (1, ETH, 2, 0, 5.0, 0.83, 0.8, 1.05), (2, ETH, 1, 0, 20.0, 0.83, 0.8, 1.05)],
        "iiiiffff",
    )  # fmt: skip
    borrows = cols([(0, USDC, 1, 0, 12_000.0), (1, USDC, 2, 0, 15_000.0),
                    (2, USDC, 1, 0, 30_000.0)], "iiiif")  # fmt: skip
    no_i, no_f = np.empty(0, np.intp), np.empty(0)
    return RiskInputs.build(
        ("0xa", "0xb", "0xc"),
        spot_usd=np.array([2_000.0]),
        carry_annual=np.zeros(1),
        asset_price_usd=np.array([2_000.0, 1.0, 2_000.0]),
        asset_underlying=np.array([0, -1, 0], dtype=np.intp),
        options=OptionPositions(no_i, no_i, no_i, no_i, no_f, no_f, no_f,
                                np.empty(0, np.bool_), no_f),
        perps=PerpPositions(no_i, no_i, no_i, no_i, no_f, no_f, no_f),
        collateral=CollateralPositions(no_i, no_i, no_i, no_i, no_f, no_f),
        supplies=SupplyPositions(*supplies),
        borrows=BorrowPositions(*borrows),
        n_chains=3,
        n_protocols=2,
    )  # fmt: skip


def test_protocol_network_by_hand() -> None:
    inputs = network_inputs()
    issuer = [-1, -1, VAULT]
    net = protocol_network(inputs, [ETH, USDC, ETH], issuer, reserves_usd=1_000.0)
    # pool chain 1: user 0 holds 20,000 rvETH against 12,000: losing it leaves 12,000 bad
    # pool chain 2: user 1 holds 10,000 rvETH + 10,000 ETH against 15,000: 5,000 uncovered
    assert net.direct_exposure_usd[POOL[0], VAULT] == pytest.approx(12_000.0)
    assert net.direct_exposure_usd[POOL[1], VAULT] == pytest.approx(5_000.0)
    assert net.liabilities_usd[VAULT, POOL[0]] == pytest.approx(20_000.0)
    assert net.liabilities_usd[VAULT, POOL[1]] == pytest.approx(10_000.0)
    assert net.external_assets_usd[VAULT] == pytest.approx(31_000.0)
    assert net.debt_usd[POOL[0]] == pytest.approx(42_000.0)
    assert (net.fire_sale_exposure_usd == 0.0).all()
    # the vault failing wipes out both pools' reserves (exposure >= equity)
    r = debtrank(net.exposure_usd, net.equity_usd, np.eye(6)[VAULT])
    assert r.distress[POOL[0]] == 1.0
    assert r.distress[POOL[1]] == 1.0
    # Eisenberg-Noe: the vault loses 40 % of its backing -> pays 60 % of its face value
    e = net.external_assets_usd.copy()
    e[VAULT] = 0.6 * 30_000.0
    clearing = eisenberg_noe(net.liabilities_usd, e)
    assert clearing.recovery_rate[VAULT] == pytest.approx(0.6)
    assert clearing.creditor_loss[POOL[0]] == pytest.approx(8_000.0)


def test_fire_sale_edges() -> None:
    inputs = network_inputs()
    net = protocol_network(inputs, [ETH, USDC, ETH], [-1, -1, VAULT],
                           depth_usd=[100_000.0, 0.0])  # fmt: skip
    # pool chain 1 holds 40,000 ETH + 20,000 rvETH = 60,000 of ETH: dumping it moves ETH
    # -60 %. Pool chain 2's user 1 (20,000 ETH-linked vs 15,000) then holds 8,000:
    # 7,000 uncovered
    assert net.fire_sale_exposure_usd[POOL[1], POOL[0]] == pytest.approx(7_000.0)
    # pool chain 2 holds 20,000 -> -20 %: pool chain 1's users stay covered
    assert net.fire_sale_exposure_usd[POOL[0], POOL[1]] == pytest.approx(0.0)
    assert (np.diag(net.exposure_usd) == 0.0).all()
    with pytest.raises(InvalidParamsError):
        protocol_network(inputs, [ETH, USDC, ETH], [-1, -1, 99])
