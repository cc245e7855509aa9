"""Stress library: user shocks from strings, historical scenarios, and a cascade run."""

from __future__ import annotations

import datetime as dt
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregation.cascade import CascadeParams, ConstantProduct, cascade
from aggregation.exceptions import InvalidShockError, UnknownAssetError
from aggregation.risk import (
    BorrowPositions,
    CollateralPositions,
    OptionPositions,
    PerpPositions,
    RiskInputs,
    SupplyPositions,
)
from aggregation.stress import HISTORICAL, Shock, historical, parse_shock, resolve_asset

ASSETS = ("ETH", "BTC", "USDC", "WSTETH", "RVETH")  # chains/world.py ASSETS


def test_parse_the_brief_example() -> None:
    shock = parse_shock("ETH=-0.30,stETH=-0.08", ASSETS)
    assert shock.moves == (("ETH", -0.30), ("WSTETH", -0.08))
    np.testing.assert_allclose(shock.vector(ASSETS), [-0.30, 0, 0, -0.08, 0])


def test_parse_forms() -> None:
    assert parse_shock(" eth = -30% , btc=0.1 ,", ASSETS).moves == (("ETH", -0.30), ("BTC", 0.1))
    assert parse_shock("WETH=-0.2,usdc.e=0.01", ASSETS).moves == (("ETH", -0.2), ("USDC", 0.01))
    assert parse_shock("rveth=1e-2", ASSETS, name="vault").name == "vault"


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        ("ETH=-1", InvalidShockError, r"'ETH=-1': a move must be > -1"),
        ("ETH=-1.5,BTC=0", InvalidShockError, r"'ETH=-1.5'"),
        ("ETH=-100%", InvalidShockError, r"'ETH=-100%'"),
        ("ETH=abc", InvalidShockError, r"'ETH=abc': 'abc' is not a number"),
        ("ETH=nan", InvalidShockError, r"finite"),
        ("ETH=-0.3,BTC", InvalidShockError, r"'BTC': expected ASSET=MOVE"),
        ("=0.1", InvalidShockError, r"expected ASSET=MOVE"),
        ("ETH=-0.1,weth=-0.2", InvalidShockError, r"'weth=-0.2': ETH is shocked twice"),
        (" , ", InvalidShockError, r"no moves"),
        ("EHT=-0.3", UnknownAssetError, r"unknown asset 'EHT': did you mean ETH\?"),
        ("wsteth=-0.1,stEHT=-0.1", UnknownAssetError, r"'stEHT': did you mean STETH\?"),
        ("DOGE=-0.5", UnknownAssetError, r"unknown asset 'DOGE': known: BTC, ETH"),
    ],
)
def test_errors_name_the_bad_token(text: str, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        parse_shock(text, ASSETS)


def test_unknown_asset_is_also_a_key_error() -> None:
    with pytest.raises(KeyError):
        resolve_asset("SOL", ASSETS)
    with pytest.raises(ValueError, match="SOL"):
        parse_shock("SOL=-0.1", ASSETS)
    with pytest.raises(UnknownAssetError) as caught:
        resolve_asset("SOL", ASSETS)
    assert str(caught.value).startswith("unknown asset 'SOL'")  # not KeyError's repr()


names = st.sampled_from(["ETH", "eth", "BTC", "WSTETH", "stETH", "RVETH", "USDC"])


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(names, st.floats(-0.99, 5.0), min_size=1, max_size=4))
def test_round_trip(moves: dict[str, float]) -> None:
    resolved = {ASSETS[resolve_asset(k, ASSETS)] for k in moves}
    text = ",".join(f"{k}={v!r}" for k, v in moves.items())
    if len(resolved) < len(moves):  # two spellings of one asset
        with pytest.raises(InvalidShockError, match="shocked twice"):
            parse_shock(text, ASSETS)
        return
    vector = parse_shock(text, ASSETS).vector(ASSETS)
    for name, move in moves.items():
        assert vector[resolve_asset(name, ASSETS)] == move


# ---------------------------------------------------------------- historical


def test_historical_scenarios_are_documented() -> None:
    assert len({s.name for s in HISTORICAL}) == len(HISTORICAL) == 6
    for s in HISTORICAL:
        start, end = dt.date.fromisoformat(s.start), dt.date.fromisoformat(s.end)
        assert dt.date(2020, 1, 1) <= start <= end <= start + dt.timedelta(days=14)
        assert s.source
        assert s.note
        assert re.search(r"\d", s.note)  # a range or basis with numbers
        assert all(-0.6 < move < 0.0 for _, move in s.moves)
        s.vector(ASSETS)  # every asset named resolves on the devnet's assets


def test_historical_moves_from_the_record() -> None:
    black = dict(historical("black-thursday-2020").moves)
    assert black == {"ETH": -0.43, "BTC": -0.39}
    ust = historical("UST-LUNA-2022").vector(ASSETS)
    np.testing.assert_allclose(ust, [-0.30, -0.25, 0.0, -0.05, 0.0])
    assert historical("cascade-2025-10-10").start == "2025-10-10"
    with pytest.raises(InvalidShockError, match="did you mean ftx-2022"):
        historical("ftx")


def test_vector_missing_assets() -> None:
    eth_only = ("ETH", "USDC")
    with pytest.raises(UnknownAssetError, match="'BTC'"):
        historical("ftx-2022").vector(eth_only)
    v = historical("ftx-2022").vector(eth_only, missing="ignore")
    np.testing.assert_allclose(v, [-0.25, 0.0])


def test_scaled() -> None:
    half = historical("black-thursday-2020").scaled(0.5)
    assert dict(half.moves) == {"ETH": -0.215, "BTC": -0.195}
    assert half.name == "black-thursday-2020 x0.5"
    with pytest.raises(InvalidShockError):
        historical("black-thursday-2020").scaled(3.0)
    with pytest.raises(InvalidShockError):
        Shock("bad", (("ETH", float("inf")),))


def test_historical_scenario_through_the_cascade() -> None:
    ids = np.array([0, 1, 2, 0, 0], dtype=np.intp)  # roots: ETH, BTC, USDC
    i, f = np.intp, np.float64
    no_i, no_f = np.empty(0, i), np.empty(0, f)
    book = RiskInputs.build(
        ("0xa", "0xb"),
        spot_usd=np.array([2_000.0, 60_000.0]),
        carry_annual=np.zeros(2),
        asset_price_usd=np.array([2_000.0, 60_000.0, 1.0, 2_360.0, 2_000.0]),
        asset_underlying=np.array([0, 1, -1, 0, 0], dtype=i),
        options=OptionPositions(no_i, no_i, no_i, no_i, no_f, no_f, no_f,
                                np.empty(0, np.bool_), no_f),
        perps=PerpPositions(no_i, no_i, no_i, no_i, no_f, no_f, no_f),
        collateral=CollateralPositions(no_i, no_i, no_i, no_i, no_f, no_f),
        supplies=SupplyPositions(np.array([0, 1], i), np.array([3, 1], i), np.zeros(2, i),
                                 np.zeros(2, i), np.array([10.0, 1.0]), np.array([0.79, 0.78]),
                                 np.array([0.72, 0.73]), np.array([1.06, 1.065])),
        borrows=BorrowPositions(np.array([0, 1], i), np.array([2, 2], i), np.zeros(2, i),
                                np.zeros(2, i), np.array([15_000.0, 38_000.0])),
    )  # fmt: skip
    # wstETH holder: 10 x 2,360 x 0.79 = 18,644 vs 15,000 -> fails below -19.5 %;
    # BTC holder: 60,000 x 0.78 = 46,800 vs 38,000 -> fails below -18.8 %
    params = CascadeParams(liquidity=(ConstantProduct(5e6), ConstantProduct(5e7)))
    calm = cascade(book, ids, historical("yen-carry-2024").vector(ASSETS), params)
    assert calm.users_affected == 1  # -20 % ETH: the wstETH holder; BTC -15 % is not enough
    black = cascade(book, ids, historical("black-thursday-2020").vector(ASSETS), params)
    assert black.users_affected == 2
    assert black.converged
