"""Systemic reports on a snapshot: exposure sums, stress totals, network, user contagion.

Pure tests on a hand-built :class:`Snapshot`; ``chain`` tests on a seeded two-chain devnet
indexed before and after an ETH crash.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rtrm_testing import index_once
from sqlalchemy import text

from aggregation.exceptions import InvalidParamsError, InvalidShockError, UnknownAssetError
from aggregation.exposure import CanonicalMap, liquidation_ladder
from aggregation.risk import (
    BorrowPositions,
    CollateralPositions,
    OptionPositions,
    PerpPositions,
    RiskInputs,
    SupplyPositions,
)
from aggregation.snapshot import Snapshot
from aggregation.stress import Shock
from aggregation.systemic import (
    DEFAULT_SCENARIOS,
    LOAD_MOVE,
    StressParams,
    VenueExposure,
    exposure_report,
    scenario,
    stress_report,
    user_contagion,
)
from aggregation.user_report import ReportParams, user_risk_report
from rtrm.output import dumps_json

ETH, BTC, USDC, WSTETH, RVETH = range(5)
ASSETS = ("ETH", "BTC", "USDC", "WSTETH", "RVETH")
PRICES = np.array([2_000.0, 60_000.0, 1.0, 2_360.0, 2_000.0])
CANONICAL = np.array([ETH, BTC, USDC, ETH, ETH], dtype=np.intp)
USERS = tuple(f"0x{i:040x}" for i in range(7))  # digits only: already checksummed, sorted
PROTOCOLS = ("lending@1", "lending@10", "perps@1", "options@10")
L1, L10, P1, O10 = range(4)


def columns(rows: list[tuple[Any, ...]], kinds: str) -> list[np.ndarray]:
    dtype = {"i": np.intp, "f": np.float64, "b": np.bool_}
    cols = list(zip(*rows, strict=True)) if rows else [() for _ in kinds]
    return [np.array(c, dtype=dtype[k]).reshape(-1) for c, k in zip(cols, kinds, strict=True)]


def world() -> Snapshot:
    """Borrowers on two chains (ETH, wstETH, rvETH and BTC collateral against USDC), a
    leveraged ETH perp, a long call, a big ETH supplier and user 6 with nothing."""
    supplies = [  # (user, asset, chain, protocol, amount, LT)
        (0, ETH, 0, L1, 10.0, 0.80),
        (1, WSTETH, 0, L1, 10.0, 0.80),
        (2, BTC, 1, L10, 1.0, 0.75),
        (2, RVETH, 1, L10, 20.0, 0.70),
        (5, ETH, 0, L1, 100.0, 0.80),
        (5, USDC, 1, L10, 500_000.0, 0.85),
    ]
    user, asset, chain, protocol, amount, lt = columns(supplies, "iiiiff")
    inputs = RiskInputs.build(
        USERS,
        spot_usd=np.array([2_000.0, 60_000.0]),
        carry_annual=np.zeros(2),
        asset_price_usd=PRICES,
        asset_underlying=np.array([0, 1, -1, 0, 0], dtype=np.intp),
        options=OptionPositions(
            *columns([(4, 0, 1, O10, 2.0, 2_200.0, 0.1, True, 0.7)], "iiiifffbf")
        ),
        perps=PerpPositions(*columns([(3, 0, 0, P1, 5.0, 10_000.0, 0.0)], "iiiifff")),
        collateral=CollateralPositions(
            *columns([(3, USDC, 0, P1, 2_000.0, 0.0), (4, USDC, 1, O10, 5_000.0, 0.0)], "iiiiff")
        ),
        supplies=SupplyPositions(
            user, asset, chain, protocol, amount, lt, lt - 0.05, np.full(user.shape, 1.05)
        ),
        borrows=BorrowPositions(
            *columns(
                [
                    (0, USDC, 0, L1, 13_500.0),
                    (1, USDC, 0, L1, 15_000.0),
                    (2, USDC, 1, L10, 70_000.0),
                ],
                "iiiif",
            )
        ),
        n_chains=2,
        n_protocols=len(PROTOCOLS),
    )
    return Snapshot(
        inputs=inputs, watermark={1: 100, 10: 200}, block_time_s={1: 1_000, 10: 1_002},
        chain_ids=(1, 10), protocols=PROTOCOLS, underlyings=("ETH", "BTC"), assets=ASSETS,
        asset_canonical=CANONICAL, history=(), warnings=(), complete=True,
    )  # fmt: skip


SNAP = world()


# ---------------------------------------------------------------- exposure
def test_exposure_totals_equal_the_positions() -> None:
    x = SNAP.inputs
    report = exposure_report(SNAP)
    assert [a.asset for a in report.assets] == ["ETH", "BTC", "USDC"]
    assert report.watermark == {1: 100, 10: 200}
    s, c, b = x.supplies, x.collateral, x.borrows
    for a in report.assets:
        k = ASSETS.index(a.asset)
        of = np.equal(CANONICAL, k)
        supplied = of[s.asset] @ (s.amount * PRICES[s.asset])
        posted = of[c.asset] @ (c.amount * PRICES[c.asset])
        assert a.total.collateral_usd == pytest.approx(supplied + posted)
        assert a.total.debt_usd == pytest.approx(of[b.asset] @ (b.amount * PRICES[b.asset]))
        for name in [f.name for f in fields(VenueExposure)][2:]:
            venues = sum(getattr(v, name) for v in a.by_venue)
            assert venues == pytest.approx(getattr(a.total, name)), (a.asset, name)
    eth = report.assets[0]
    assert eth.variants == ("ETH", "WSTETH", "RVETH")
    # 110 ETH + 10 wstETH (1.18 ETH each) + 20 rvETH, in ETH coins
    assert eth.total.collateral_coin == pytest.approx(110.0 + 11.8 + 20.0)
    assert eth.total.perps_delta_coin == pytest.approx(5.0)
    assert 0.0 < eth.total.options_delta_coin < 2.0
    assert {(v.protocol, v.chain_id) for v in eth.by_venue} == {
        ("lending@1", 1), ("lending@10", 10), ("perps@1", 1), ("options@10", 10),
    }  # fmt: skip
    assert eth.top_holders[0].address == USERS[5]
    assert sum(h.share for h in eth.top_holders) == pytest.approx(1.0)
    assert 1.0 / eth.n_holders <= eth.hhi <= 1.0


def test_exposure_ladder_and_one_asset() -> None:
    (eth,) = exposure_report(SNAP, "stETH").assets  # a variant shows its root
    assert eth.asset == "ETH"
    assert len(eth.ladder) == 59
    at = {round(level.move, 2): level for level in eth.ladder}
    assert at[0.0].collateral_usd == 0.0  # nobody is liquidatable today
    lad = liquidation_ladder(SNAP.inputs, SNAP.asset_canonical, moves=[-0.30])
    assert at[-0.3].collateral_usd == pytest.approx(float(lad.collateral_usd[0, 0]))
    assert at[-0.3].accounts >= 2
    assert at[-0.9].collateral_coin >= at[-0.3].collateral_coin > 0.0  # USD: at each level
    with pytest.raises(UnknownAssetError, match=r"unknown asset 'ETHH'; did you mean ETH\?"):
        exposure_report(SNAP, "ETHH")


# ---------------------------------------------------------------- stress
def test_zero_shock_liquidates_nothing() -> None:
    r = stress_report(SNAP, "ETH=0")
    assert (r.n_rounds, r.converged, r.users_affected) == (1, True, 0)
    assert r.liquidated_collateral_usd == r.bad_debt_usd == 0.0
    assert r.by_venue == ()
    assert r.deficits == ()
    assert r.moves == {}
    assert all(n.initial_distress == n.distress_original == 0.0 for n in r.contagion.nodes)


def test_deep_shock_bad_debt_adds_up_per_protocol_and_chain() -> None:
    r = stress_report(SNAP, "ETH=-0.5,stETH=-0.1")
    assert r.moves == {"ETH": -0.5, "WSTETH": -0.1}
    assert r.rounds[0].prices_usd["WSTETH"] == pytest.approx(2_360.0 * 0.5 * 0.9)
    assert r.users_affected >= 3
    assert r.bad_debt_usd > 0.0
    assert sum(v.bad_debt_usd for v in r.by_venue) == pytest.approx(r.bad_debt_usd)
    assert sum(d.amount_usd for d in r.deficits) == pytest.approx(r.bad_debt_usd)
    assert sum(x.bad_debt_usd for x in r.rounds) == pytest.approx(r.bad_debt_usd)
    for venue in r.by_venue:  # each venue's total is its rounds' sum
        per_round = [v.liquidated_collateral_usd for x in r.rounds for v in x.by_venue
                     if (v.protocol, v.chain_id) == (venue.protocol, venue.chain_id)]  # fmt: skip
        assert sum(per_round) == pytest.approx(venue.liquidated_collateral_usd)
    assert {(v.protocol, v.chain_id) for v in r.by_venue} <= {
        ("lending@1", 1), ("lending@10", 10), ("perps@1", 1), ("options@10", 10),
    }  # fmt: skip
    hit = {(n.protocol, n.chain_id): n for n in r.contagion.nodes}
    for d in r.deficits:
        assert hit[(d.protocol, d.chain_id)].bad_debt_usd >= d.amount_usd * (1 - 1e-12)
    assert dumps_json(r) == dumps_json(stress_report(SNAP, "ETH=-0.5,stETH=-0.1"))


def test_scenarios_resolve_by_name_and_date() -> None:
    assert scenario("2020-03-12").name == "black-thursday-2020"
    assert scenario("2022-05").name == "ust-luna-2022"
    assert scenario("2022-11-08").name == "ftx-2022"
    assert scenario("FTX-2022").name == "ftx-2022"
    with pytest.raises(InvalidShockError, match="unknown scenario"):
        scenario("2019-01-01")
    r = stress_report(SNAP, "ust-luna-2022")  # STETH is the WSTETH peg
    assert r.moves == {"ETH": -0.30, "BTC": -0.25, "WSTETH": -0.05}
    assert (r.start, r.end) == ("2022-05-07", "2022-05-14")
    odd = stress_report(SNAP, Shock("sol-crash", (("ETH", -0.1), ("SOL", -0.5))))
    assert odd.moves == {"ETH": -0.1}
    assert any("no SOL" in w for w in odd.warnings)


def test_depth_moves_prices_and_links_the_network() -> None:
    deep = StressParams(depth_usd={"ETH": 50_000.0})
    r = stress_report(SNAP, "ETH=-0.5", deep)
    assert r.depth_usd == {"ETH": 50_000.0}
    assert r.final_prices_usd["ETH"] < r.rounds[0].prices_usd["ETH"] == pytest.approx(1_000.0)
    c = r.contagion
    assert c.fire_sale_edges > 0
    for n in c.nodes:
        assert 0.0 <= n.initial_distress <= n.distress_original <= 1.0
        assert n.initial_distress <= n.distress_differential <= 1.0
    issued = StressParams(asset_issuer={"RVETH": ("lending@1", 1)})
    net = stress_report(SNAP, "ETH=-0.5", issued).contagion
    node = {(n.protocol, n.chain_id): n for n in net.nodes}[("lending@1", 1)]
    assert node.owed_usd == pytest.approx(20 * 2_000.0)  # 20 rvETH held at lending@10
    assert 0.0 <= node.paid_usd <= node.owed_usd
    assert node.shortfall_usd == pytest.approx(node.owed_usd - node.paid_usd)
    with pytest.raises(InvalidParamsError, match="not in the snapshot"):
        stress_report(SNAP, "ETH=-0.5", StressParams(asset_issuer={"RVETH": ("vault", 1)}))
    with pytest.raises(InvalidParamsError, match="depth of ETH"):
        stress_report(SNAP, "ETH=-0.5", StressParams(depth_usd={"ETH": -1.0}))


# ---------------------------------------------------------------- user contagion
def test_user_shares_sum_to_at_most_one() -> None:
    reports = [user_contagion(SNAP, u) for u in USERS]
    for i, name in enumerate(DEFAULT_SCENARIOS):
        shares = [r.scenarios[i] for r in reports]
        assert all(s.scenario == name for s in shares)
        liquidated = sum(s.liquidated_collateral_share for s in shares)
        bad = sum(s.bad_debt_share for s in shares)
        assert all(0.0 <= s.liquidated_collateral_share <= 1.0 for s in shares)
        assert liquidated <= 1.0 + 1e-12
        assert bad <= 1.0 + 1e-12
        total = shares[0].system_liquidated_collateral_usd
        assert sum(s.liquidated_collateral_usd for s in shares) == pytest.approx(total)
        assert liquidated == pytest.approx(1.0 if total > 0 else 0.0)
    black = reports[0].scenarios[0]  # ETH -43 %: user 0 (HF 1.185) is liquidated
    assert black.liquidated
    assert black.first_round == 0
    nobody = reports[6]
    assert nobody.collateral_usd == 0.0
    assert not any(s.liquidated for s in nobody.scenarios)
    assert all(a.user_collateral_usd == 0.0 for a in nobody.by_asset)


def test_loaded_assets_follow_the_ladder() -> None:
    c = user_contagion(SNAP, USERS[1])  # 10 wstETH against USDC
    lad = liquidation_ladder(SNAP.inputs, CanonicalMap.of(SNAP.inputs, CANONICAL),
                             moves=[LOAD_MOVE])  # fmt: skip
    eth = {a.asset: a for a in c.by_asset}["ETH"]
    assert eth.load_usd == pytest.approx(lad.collateral_coin[0, 0] * lad.price_usd[0, 0])
    loads = sum(a.load_usd for a in c.by_asset)
    assert {a.asset for a in c.by_asset if a.load_usd >= 0.25 * loads} == set(c.loaded_assets)
    assert "ETH" in c.loaded_assets
    assert c.collateral_usd == pytest.approx(10 * 2_360.0)
    assert c.collateral_in_loaded_fraction == pytest.approx(1.0)
    assert 0.0 < eth.user_share_of_asset < 1.0
    # the cache answers the same, and a different scenario set is computed afresh
    assert user_contagion(SNAP, USERS[1]) == c
    mild = user_contagion(SNAP, USERS[1], [Shock("mild", (("ETH", -0.01),))])
    assert not mild.scenarios[0].liquidated


def test_contagion_needs_the_whole_book_and_is_opt_in_in_the_report() -> None:
    with pytest.raises(InvalidParamsError, match="every user's positions"):
        user_contagion(replace(SNAP, complete=False), USERS[0])
    assert user_risk_report(SNAP, USERS[0]).contagion is None
    params = ReportParams(contagion_scenarios=DEFAULT_SCENARIOS)
    report = user_risk_report(SNAP, USERS[0], params=params)
    assert report.contagion == user_contagion(SNAP, USERS[0])


# ---------------------------------------------------------------- devnet
@pytest.fixture(scope="module")
def crashed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Snapshot, Snapshot, Any]]:
    """Two seeded chains indexed before and after an ETH -45 % crash with keepers:
    (snapshot before, snapshot after, on-chain liquidation rows after the first cut)."""
    from aggregation.loader import load_snapshot
    from chains.devnet import DevnetOptions, up
    from chains.keeper import ChainContracts, crash
    from chains.registry import load_registry
    from indexer.status import watermark
    from indexer.store import open_store

    home = tmp_path_factory.mktemp("devnet")
    state, nodes = up(DevnetOptions(chains=2, users=40, seed=5, block_time_s=0, state_dir=home))
    try:
        config = Path(state.config_path)
        registry = load_registry(config)
        index_once(str(config), registry.database_url)
        store = open_store(registry.database_url, migrate=False)
        with store.engine.connect() as conn:
            cut = dict(watermark(conn))
        chains = [
            ChainContracts(n.chain_id, n.rpc_url, state.contracts[str(n.chain_id)],
                           state.tokens[str(n.chain_id)])
            for n in state.nodes
        ]  # fmt: skip
        crash(chains, asset="ETH", move=-0.45, blocks=2)
        index_once(str(config), registry.database_url)
        with store.engine.connect() as conn:
            before, after = load_snapshot(conn, registry, cut), load_snapshot(conn, registry)
            rows = conn.execute(
                text("SELECT chain_id, account, protocol_kind, block_number FROM liquidation")
            ).all()
        store.dispose()
        yield before, after, [r for r in rows if r[3] > cut[r[0]]]
    finally:
        for node in nodes:
            node.stop()


@pytest.mark.chain
def test_devnet_stress_totals_add_up(crashed: tuple[Snapshot, Snapshot, Any]) -> None:
    before, after, _ = crashed
    assert stress_report(before, "ETH=0").users_affected == 0
    r = stress_report(after, "ETH=-0.5")
    assert r.watermark == dict(after.watermark)
    assert r.users_affected > 0
    assert r.liquidated_collateral_usd > 0.0
    assert r.bad_debt_usd > 0.0
    assert sum(v.bad_debt_usd for v in r.by_venue) == pytest.approx(r.bad_debt_usd)
    assert sum(d.amount_usd for d in r.deficits) == pytest.approx(r.bad_debt_usd)
    assert {v.chain_id for v in r.by_venue} == {1, 10}
    assert dumps_json(r) == dumps_json(stress_report(after, "ETH=-0.5"))
    x = after.inputs
    value = float(x.supplies.amount @ x.asset_price_usd[x.supplies.asset])
    value += float(x.collateral.amount @ x.asset_price_usd[x.collateral.asset])
    exposure = exposure_report(after)
    assert sum(a.total.collateral_usd for a in exposure.assets) == pytest.approx(value)
    assert all(math.isfinite(level.collateral_usd) for a in exposure.assets for level in a.ladder)


@pytest.mark.chain
def test_devnet_liquidations_were_predicted(
    crashed: tuple[Snapshot, Snapshot, Any],
) -> None:
    """Every user the crash liquidated on chain (lending, options or perps) is one the
    simulator predicts for the same shock at the pre-crash watermark; margin accounts are
    per (protocol, chain) in the model as on chain (account by account:
    ``test_onchain_liquidations.py``)."""
    before, _, rows = crashed
    liquidated = {account for _, account, _, _ in rows}
    assert {kind for _, _, kind, _ in rows} == {"lending", "options", "perps"}
    crash = [Shock("crash", (("ETH", -0.45),))]
    predicted = {u for u in liquidated if user_contagion(before, u, crash).scenarios[0].liquidated}
    assert predicted == liquidated


@pytest.mark.chain
def test_devnet_user_shares(crashed: tuple[Snapshot, Snapshot, Any]) -> None:
    _, after, _ = crashed
    reports = [user_contagion(after, u) for u in after.inputs.users]
    for i in range(len(DEFAULT_SCENARIOS)):
        assert sum(r.scenarios[i].liquidated_collateral_share for r in reports) <= 1.0 + 1e-9
        assert sum(r.scenarios[i].bad_debt_share for r in reports) <= 1.0 + 1e-9
    assert all(0.0 <= r.collateral_in_loaded_fraction <= 1.0 for r in reports)
