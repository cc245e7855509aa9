"""The waterfall: conservation, seniority, caps, isolation, pro rata when short, order."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from insurance.exceptions import WaterfallError
from insurance.waterfall import BPS, Capital, Claim, Policy, allocate, pro_rata

AMOUNT = st.integers(min_value=0, max_value=10**30)
TRANCHES = st.sampled_from(["1", "10", "42161"])


@st.composite
def epochs(draw: st.DrawFn) -> tuple[list[Claim], Policy, Capital]:
    n = draw(st.integers(min_value=0, max_value=12))
    claims = [
        Claim(f"d{i:03d}", draw(TRANCHES), loss := draw(AMOUNT), draw(st.integers(0, loss * 2)))
        for i in range(n)
    ]
    policy = Policy(
        deductible=draw(st.integers(0, 10**24)),
        deductible_bps=draw(st.integers(0, BPS)),
        isolated_cap=draw(st.none() | AMOUNT),
        shared_cap=draw(st.none() | AMOUNT),
    )
    capital = Capital(
        isolated=draw(st.dictionaries(TRANCHES, AMOUNT, max_size=3)), shared=draw(AMOUNT)
    )
    return claims, policy, capital


@settings(max_examples=300, deadline=None)
@given(epochs())
def test_layers_conserve_seniority_caps_and_capital(
    case: tuple[list[Claim], Policy, Capital],
) -> None:
    claims, policy, capital = case
    result = allocate(claims, policy, capital)
    assert [a.key for a in result.allocations] == [c.key for c in claims]
    for claim, a in zip(claims, result.allocations, strict=True):
        layers = [amount for _, amount in a.layers()]
        assert all(v >= 0 for v in layers)
        assert sum(layers) == claim.loss  # conservation
        assert a.proceeds == min(claim.proceeds, claim.loss)
        after_deductible = claim.loss - a.proceeds - a.deductible
        assert a.paid <= after_deductible  # payout <= deficit - offset
        if policy.isolated_cap is not None:
            assert a.isolated <= policy.isolated_cap
        if policy.shared_cap is not None:
            assert a.shared <= policy.shared_cap
        # seniority: a later layer only once the earlier one is exhausted or capped
        wanted_deductible = policy.deductible + claim.loss * policy.deductible_bps // BPS
        if a.isolated or a.shared or a.residual:
            assert a.deductible == wanted_deductible
        cap = policy.isolated_cap
        iso_want = after_deductible if cap is None else min(after_deductible, cap)
        if a.shared or a.residual:
            tranche_full = result.isolated_used[claim.tranche] == capital.isolated.get(
                claim.tranche, 0
            )
            assert a.isolated == iso_want or tranche_full
        rest = after_deductible - a.isolated
        shared_want = rest if policy.shared_cap is None else min(rest, policy.shared_cap)
        if a.residual:
            assert a.shared == shared_want or result.shared_used == capital.shared
    # the pool never goes negative; isolation: each tranche pays only its own claims
    assert result.shared_used == sum(a.shared for a in result.allocations) <= capital.shared
    for tranche, used in result.isolated_used.items():
        own = [a for a in result.allocations if a.tranche == tranche]
        assert used == sum(a.isolated for a in own) <= capital.isolated.get(tranche, 0)


@settings(max_examples=200, deadline=None)
@given(epochs(), st.randoms(use_true_random=False))
def test_allocation_does_not_depend_on_claim_order(
    case: tuple[list[Claim], Policy, Capital], rnd: random.Random
) -> None:
    claims, policy, capital = case
    shuffled = claims[:]
    rnd.shuffle(shuffled)
    first = {a.key: a for a in allocate(claims, policy, capital).allocations}
    second = {a.key: a for a in allocate(shuffled, policy, capital).allocations}
    assert first == second


@settings(max_examples=300, deadline=None)
@given(st.lists(AMOUNT, max_size=15), AMOUNT)
def test_pro_rata_is_exact_when_short(wants: list[int], capacity: int) -> None:
    keys = [f"k{i}" for i in range(len(wants))]
    shares = pro_rata(wants, keys, capacity)
    assert all(0 <= s <= w for s, w in zip(shares, wants, strict=True))
    if sum(wants) <= capacity:
        assert shares == wants
    else:
        assert sum(shares) == capacity
        total = sum(wants)
        for s, w in zip(shares, wants, strict=True):  # within one unit of the exact share
            assert abs(s * total - capacity * w) < total


def test_worked_example_through_every_layer() -> None:
    policy = Policy(deductible=100, deductible_bps=1_000, isolated_cap=500, shared_cap=None)
    capital = Capital(isolated={"1": 800, "10": 10_000}, shared=900)
    claims = [
        Claim("a", "1", loss=2_000, proceeds=300),  # deductible 100 + 200 = 300
        Claim("b", "1", loss=1_000),  # deductible 200
        Claim("c", "10", loss=50),  # deductible 105 > loss: the protocol bears it all
    ]
    result = allocate(claims, policy, capital)
    a, b, c = result.allocations
    # isolated: a wants min(1400, 500) = 500, b wants 500; tranche 1 has 800 -> 400 each
    assert (a.proceeds, a.deductible, a.isolated) == (300, 300, 400)
    assert (b.deductible, b.isolated) == (200, 400)
    # shared: a wants 1000, b wants 400; 900 pro rata -> 642.86 / 257.14 -> 643 / 257
    assert (a.shared, b.shared) == (643, 257)
    assert (a.residual, b.residual) == (357, 143)
    assert (c.deductible, c.paid, c.residual) == (50, 0, 0)
    assert result.isolated_used == {"1": 800, "10": 0}
    assert result.paid == 400 + 400 + 643 + 257
    assert result.residual == 500


def test_a_deficit_never_draws_another_chains_tranche() -> None:
    capital = Capital(isolated={"1": 0, "10": 10**9}, shared=0)
    result = allocate([Claim("x", "1", loss=1_000)], Policy(), capital)
    assert result.allocations[0].isolated == 0
    assert result.allocations[0].residual == 1_000


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: allocate([Claim("a", "1", -1)], Policy(), Capital()), "must be >= 0"),
        (lambda: allocate([Claim("a", "1", 1)] * 2, Policy(), Capital()), "appears twice"),
        (lambda: Policy(deductible_bps=BPS + 1), "deductible_bps"),
        (lambda: Policy(isolated_cap=-1), "isolated_cap"),
        (lambda: Capital(isolated={"1": -5}), "negative capital"),
        (lambda: Capital(shared=-5), "negative capital"),
    ],
)
def test_bad_inputs_are_rejected(build: object, message: str) -> None:
    with pytest.raises(WaterfallError, match=message):
        build()  # type: ignore[operator]
