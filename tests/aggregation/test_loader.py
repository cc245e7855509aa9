"""The loader: store snapshot at a watermark -> risk arrays -> one user's report.

Pure tests build :class:`ChainRows` by hand (marks, vol fallback, settled options, funding,
addresses); chain tests index a real two-chain devnet and check the snapshot against the
contracts' view functions, the as-of read, the reports and SQLite vs PostgreSQL.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import fields, is_dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from eth_utils.address import to_checksum_address
from rtrm_testing import chain_truth, index_once

from aggregation.loader import SnapshotError, load_snapshot
from aggregation.risk import unified_risk
from aggregation.scenarios import derive_pmrm_grid, span16_grid
from aggregation.snapshot import (
    CASH_ASSET,
    ChainRows,
    InvalidAddressError,
    MarkParams,
    Snapshot,
    build_snapshot,
    checksummed,
    protocol_labels,
)
from aggregation.user_report import user_risk_report
from chains.registry import load_registry
from chains.spec import AssetSpec, ChainSpec, ContractSpec, Registry, TokenSpec
from chains.types import AssetId, AssetKind, BlockNumber, ChainId, ContractKind
from indexer.status import watermark
from indexer.store import open_store
from rtrm.output import dumps_json

WAD = 10**18
DAY = 86_400
NOW = 1_767_225_600


def _address(n: int) -> Any:
    return to_checksum_address(f"0x{n:040x}")


ALICE, BOB, CAROL = _address(0xA11CE), _address(0xB0B), _address(0xCA201)
USDC, WETH = _address(0x1001), _address(0x1002)
FEED_ETH, FEED_USDC, POOL, OPTIONS, PERPS = (_address(0x2000 + i) for i in range(5))


def _registry(chains: int = 2) -> Registry:
    contracts = (
        ("feed_eth_usd", ContractKind.PRICE_FEED, FEED_ETH, "ETH"),
        ("feed_usdc_usd", ContractKind.PRICE_FEED, FEED_USDC, "USDC"),
        ("lending_pool", ContractKind.LENDING_POOL, POOL, None),
        ("options_market", ContractKind.OPTIONS_MARKET, OPTIONS, None),
        ("perps_market", ContractKind.PERPS_MARKET, PERPS, None),
    )
    specs = []
    for cid in (1, 10)[:chains]:
        chain = ChainId(cid)
        specs.append(
            ChainSpec(
                chain,
                f"c{cid}",
                ("http://127.0.0.1:1",),
                0,
                1.0,
                contracts=tuple(
                    ContractSpec(chain, n, k, a, BlockNumber(0), None if x is None else AssetId(x))
                    for n, k, a, x in contracts
                ),
                tokens=(
                    TokenSpec(chain, "USDC", USDC, 6, AssetId("USDC"), AssetKind.STABLE),
                    TokenSpec(chain, "WETH", WETH, 18, AssetId("ETH"), AssetKind.WRAPPED),
                ),
            )
        )
    assets = (AssetSpec(AssetId("ETH"), "Ether"), AssetSpec(AssetId("USDC"), "USDC", peg="USD"))
    return Registry(chains=tuple(specs), assets=assets)


def _svi(atm: float, t_s: int) -> tuple[int, ...]:
    t = t_s / (365 * DAY)
    b, sigma = 0.12 * math.sqrt(t), 0.2
    return (round(atm * WAD), round((atm * atm * t - b * sigma) * WAD), round(b * WAD),
            round(-0.35 * WAD), 0, round(sigma * WAD))  # fmt: skip


def _rows(*, calendar_arbitrage: bool) -> ChainRows:
    """Alice borrows against WETH; Bob writes a put, holds a settled call, is long a perp."""
    t30, t60 = NOW + 30 * DAY, NOW + 60 * DAY
    vols = [("ETH", t30, NOW - 100, *_svi(0.8, 30 * DAY + 100))]
    vols.append(("ETH", t60, NOW - 100, *_svi(0.4 if calendar_arbitrage else 0.8, 60 * DAY)))
    options = [
        (BOB, OPTIONS, str(-2 * WAD), "ETH", t30, str(1800 * WAD), False, None),
        (BOB, OPTIONS, str(WAD), "ETH", NOW - DAY, str(2000 * WAD), True, str(2500 * WAD)),
    ]
    balances = [
        (ALICE, POOL, "lending", "collateral", WETH, str(2 * WAD)),
        (ALICE, POOL, "lending", "debt", USDC, str(3000 * 10**6)),
        (BOB, OPTIONS, "options", "collateral", USDC, str(10_000 * 10**6)),
        (BOB, PERPS, "perps", "margin", USDC, str(-500 * 10**6)),
    ]
    params = {
        (POOL, WETH, "liquidation_threshold_bps"): "8000",
        (POOL, WETH, "ltv_bps"): "7500",
        (POOL, WETH, "liquidation_bonus_bps"): "10500",
        (OPTIONS, USDC, "haircut_bps"): "0",
        (PERPS, "ETH-PERP", "feed"): FEED_ETH,
        (PERPS, "ETH-PERP", "mm_bps"): "600",
        (PERPS, "ETH-PERP", "im_bps"): "1200",
        (PERPS, "ETH-PERP", "liquidation_fee_bps"): "300",
    }
    perps = [(BOB, PERPS, "ETH-PERP", str(WAD), str(1900 * WAD), str(0))]
    return ChainRows(
        chain_id=1, block=100, now_s=NOW,
        balances=tuple(zip(*balances, strict=True)), options=tuple(zip(*options, strict=True)),
        perps=tuple(zip(*perps, strict=True)), vols=tuple(zip(*vols, strict=True)),
        params=params, feed_answers={FEED_ETH: 2000 * 10**8, FEED_USDC: 10**8},
        funding_index_wad={(PERPS, "ETH-PERP"): 10 * WAD},
    )  # fmt: skip


def _other_chain() -> ChainRows:
    return ChainRows(10, 7, NOW - 5, (), (), (), (), {}, {FEED_ETH: 2100 * 10**8}, {})


def test_build_snapshot_marks_and_books() -> None:
    snap = build_snapshot(_registry(), [_rows(calendar_arbitrage=False), _other_chain()])
    i = snap.inputs
    assert i.users == tuple(sorted((ALICE, BOB)))
    assert snap.underlyings == ("ETH",)
    assert snap.assets == ("ETH", "USDC", CASH_ASSET)
    assert snap.asset_canonical.tolist() == [0, 1, 2]
    assert snap.protocols == ("lending@1", "options@1", "perps@1", "lending@10", "options@10",
                              "perps@10")  # fmt: skip
    assert snap.watermark == {1: 100, 10: 7}
    assert snap.block_time_s == {1: NOW, 10: NOW - 5}
    assert i.spot_usd.tolist() == [2050.0]  # the median over the two chains' ETH feeds
    assert any("ETH: chains disagree" in w for w in snap.warnings)
    assert i.supplies.amount.tolist() == [2.0]
    assert i.supplies.liquidation_threshold.tolist() == [0.8]
    assert i.borrows.amount.tolist() == [3000.0]
    # options collateral, perps margin (signed) and the settled call's payoff as cash
    c = i.collateral
    assert sorted(zip(c.amount.tolist(), (snap.assets[a] for a in c.asset), strict=True)) == [
        (-500.0, "USDC"), (500.0, CASH_ASSET), (10_000.0, "USDC")
    ]  # fmt: skip
    assert i.options.size.tolist() == [-2.0]
    assert i.options.expiry_years.tolist() == [30 / 365]
    assert 0.7 < float(i.options.vol_annual[0]) < 0.9
    assert i.perps.funding_usd.tolist() == [-10.0]
    assert i.perps.open_notional_usd.tolist() == [1900.0]
    risk = unified_risk(i, derive_pmrm_grid())
    alice = i.users.index(ALICE)
    assert risk.health_factor[alice] == pytest.approx(2 * 2050 * 0.8 / 3000, rel=1e-14)


def test_snapshot_carries_each_markets_rules() -> None:
    snap = build_snapshot(_registry(), [_rows(calendar_arbitrage=False), _other_chain()])
    r, p = snap.inputs.rules, {name: k for k, name in enumerate(snap.protocols)}
    # options markets: the devnet's rates (no event reports them); perps: MarketListed
    assert r.option_mm_rate[p["options@1"]] == 0.09
    assert (r.option_im_rate[p["options@10"]], r.option_penalty_rate[p["options@10"]]) == (
        0.15, 0.10,
    )  # fmt: skip
    eth = snap.underlyings.index("ETH")
    assert r.perp_mm_rate[p["perps@1"], eth] == 0.06
    assert (r.perp_im_rate[p["perps@1"], eth], r.perp_fee_rate[p["perps@1"], eth]) == (0.12, 0.03)
    assert r.perp_mm_rate[p["perps@10"], eth] == 0.05  # nothing listed: the default
    assert r.collateral_at_par.tolist() == [False, False, True, False, False, True]
    # Bob: options account 10,000 USDC + 500 settled cash against 2 x 9 % x 2,050;
    # perps account: margin -500 + P&L (2,050 - 1,900 - 10) < 6 % x 2,050 -> liquidatable
    risk = unified_risk(snap.inputs, derive_pmrm_grid())
    bob = snap.inputs.users.index(BOB)
    assert risk.account_equity_usd[bob] == pytest.approx(10_500.0 - 360.0)
    assert risk.account_mm_usd[bob] == pytest.approx(2 * 0.09 * 2_050 + 0.06 * 2_050)
    assert risk.account_im_usd[bob] == pytest.approx(2 * 0.15 * 2_050 + 0.12 * 2_050)
    assert risk.liquidatable_accounts[bob] == 1
    custom = MarkParams(options_bps_by_protocol={"options@1": (1_000, 2_000, 500)})
    other = build_snapshot(_registry(1), [_rows(calendar_arbitrage=False)], marks=custom)
    k = other.protocols.index("options@1")
    assert (other.inputs.rules.option_mm_rate[k], other.inputs.rules.option_im_rate[k]) == (
        0.1, 0.2,
    )  # fmt: skip


def test_arbitrageable_surface_falls_back_to_atm_with_a_warning() -> None:
    snap = build_snapshot(_registry(1), [_rows(calendar_arbitrage=True)])
    assert any("calendar arbitrage" in w for w in snap.warnings)
    assert snap.inputs.options.vol_annual.tolist() == [0.8]  # the 30-day slice's ATM vol


def test_listed_users_and_unknown_address() -> None:
    nobody = _address(0xDEAD)
    snap = build_snapshot(_registry(1), [_rows(calendar_arbitrage=False)], users=[BOB, nobody])
    assert snap.inputs.users == tuple(sorted((BOB, nobody)))
    assert snap.inputs.supplies.user.size == 0  # Alice was not asked for
    report = user_risk_report(snap, nobody.lower())
    assert report.address == nobody
    assert not report.has_positions
    assert report.equity_usd == report.initial_margin_usd == report.debt_usd == 0.0
    assert report.health_factor == math.inf
    absent = user_risk_report(snap, ALICE)  # not in this snapshot of listed users: zeros too
    assert not absent.has_positions


def test_addresses_are_checked() -> None:
    assert checksummed(BOB.lower()) == BOB
    assert checksummed(BOB.upper().replace("0X", "0x")) == BOB
    bad_case = "0x" + "".join(ch.swapcase() if ch.isalpha() else ch for ch in ALICE[2:])
    with pytest.raises(InvalidAddressError, match="checksum"):
        checksummed(bad_case)
    with pytest.raises(InvalidAddressError, match="40 hex digits"):
        checksummed("0x1234")
    snap = build_snapshot(_registry(1), [_rows(calendar_arbitrage=False)])
    with pytest.raises(InvalidAddressError):
        user_risk_report(snap, bad_case)


# ---------------------------------------------------------------- on a real devnet


def _load(
    url: str,
    registry: Registry,
    cut: dict[int, int] | None = None,
    users: list[str] | None = None,
) -> Snapshot:
    store = open_store(url, migrate=False)
    try:
        with store.engine.connect() as conn:
            return load_snapshot(conn, registry, cut, users=users)
    finally:
        store.dispose()


def _stored_watermark(url: str) -> dict[int, int]:
    store = open_store(url, migrate=False)
    try:
        with store.engine.connect() as conn:
            return watermark(conn)
    finally:
        store.dispose()


def _assert_same(a: Any, b: Any, path: str = "snapshot") -> None:
    """Bit-identical arrays (NaN equal to NaN) in two snapshots or risk inputs."""
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype, path
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), path
    elif is_dataclass(a) and not isinstance(a, type):
        for f in fields(a):
            _assert_same(getattr(a, f.name), getattr(b, f.name), f"{path}.{f.name}")
    elif isinstance(a, tuple):
        assert len(a) == len(b), path
        for k, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{path}[{k}]")
    else:
        assert a == b, path


def _sums(rows: Any) -> dict[Any, float]:
    out: dict[Any, float] = defaultdict(float)
    for key, value in rows:
        out[key] += value
    return dict(out)


@pytest.mark.chain
def test_snapshot_matches_the_contracts(loader_devnet: Any, store_url: str) -> None:
    index_once(loader_devnet.config_path, store_url)
    registry = load_registry(Path(loader_devnet.config_path))
    snap = _load(store_url, registry)
    i, labels = snap.inputs, protocol_labels(registry.chains)
    assert snap.complete
    assert snap.chain_ids == (1, 10)
    for ci, node in enumerate(loader_devnet.nodes):
        spec = registry.chain(node.chain_id)
        one = replace(loader_devnet, nodes=(node,))
        truth = chain_truth(one, snap.watermark[node.chain_id], set(i.users))
        expected: dict[str, Any] = {"supplies": [], "borrows": [], "collateral": []}
        for (contract, user, kind, token), amount in truth["balances"].items():
            label, t = labels[(node.chain_id, contract)], spec.token_at(token)
            book = {"debt": "borrows", "margin": "collateral"}.get(kind, "collateral")
            book = "supplies" if label.startswith("lending") and kind == "collateral" else book
            expected[book].append(((label, user, t.asset_id), amount / 10**t.decimals))
        for name, rows in expected.items():
            book = getattr(i, name)
            mine = book.chain == ci
            got = _sums(
                ((snap.protocols[p], i.users[u], snap.assets[a]), x)
                for p, u, a, x in zip(book.protocol[mine], book.user[mine], book.asset[mine],
                                      book.amount[mine], strict=True)
            )  # fmt: skip
            want = _sums(rows)
            assert got.keys() == want.keys(), name
            for key, value in want.items():
                assert got[key] == pytest.approx(value, rel=1e-12, abs=1e-12), (name, key)
        sizes: dict[str, list[float]] = defaultdict(list)
        for (_, user, _), size in truth["options"].items():
            if size:
                sizes[user].append(size / WAD)
        o, mine = i.options, i.options.chain == ci
        got_sizes: dict[str, list[float]] = defaultdict(list)
        for u, size in zip(o.user[mine], o.size[mine], strict=True):
            got_sizes[i.users[u]].append(float(size))
        assert got_sizes.keys() == sizes.keys()
        for user, want_sizes in sizes.items():
            assert sorted(got_sizes[user]) == pytest.approx(sorted(want_sizes), rel=1e-15)
        perps = sorted((u, s / WAD, n / WAD) for (_, u, _), (s, n) in truth["perps"].items())
        p, mine = i.perps, i.perps.chain == ci
        got_perps = sorted(
            (i.users[u], float(s), float(n))
            for u, s, n in zip(p.user[mine], p.size[mine], p.open_notional_usd[mine], strict=True)
        )
        assert [x[0] for x in got_perps] == [x[0] for x in perps]
        for mine_row, want_row in zip(got_perps, perps, strict=True):  # float(int) / 1e18
            assert mine_row[1:] == pytest.approx(want_row[1:], rel=1e-15)  # rounds twice


@pytest.mark.chain
def test_as_of_read_ignores_later_writes(loader_devnet: Any, store_url: str) -> None:
    from chains.keeper import ChainContracts, crash

    index_once(loader_devnet.config_path, store_url)
    registry = load_registry(Path(loader_devnet.config_path))
    before_cut = _stored_watermark(store_url)
    before = _load(store_url, registry)
    node = loader_devnet.nodes[0]
    chain = ChainContracts(
        node.chain_id, node.rpc_url, loader_devnet.contracts[str(node.chain_id)],
        loader_devnet.tokens[str(node.chain_id)],
    )  # fmt: skip
    crash([chain], asset="ETH", move=-0.2, blocks=1)  # a new round, and liquidations
    index_once(loader_devnet.config_path, store_url)
    after_cut = _stored_watermark(store_url)
    assert after_cut[node.chain_id] > before_cut[node.chain_id]
    again = _load(store_url, registry, before_cut)
    _assert_same(again.inputs, before.inputs)
    assert (again.watermark, again.block_time_s, again.warnings) == (
        before.watermark, before.block_time_s, before.warnings,
    )  # fmt: skip
    _assert_same(again.history, before.history)
    now = _load(store_url, registry)
    assert now.inputs.spot_usd[0] < before.inputs.spot_usd[0]
    with pytest.raises(SnapshotError, match="above the indexed block"):
        _load(store_url, registry, {node.chain_id: after_cut[node.chain_id] + 1})


@pytest.mark.chain
def test_every_report_is_finite_and_margins_are_ordered(loader_devnet: Any, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'rtrm.db'}"
    index_once(loader_devnet.config_path, url)
    snap = _load(url, load_registry(Path(loader_devnet.config_path)))
    i = snap.inputs
    risk = unified_risk(i, derive_pmrm_grid())
    for name in ("equity_usd", "collateral_usd", "debt_usd", "im_usd", "mm_usd"):
        assert np.isfinite(getattr(risk, name)).all(), name
    assert (risk.im_usd >= risk.mm_usd).all()
    assert (risk.mm_usd >= 0).all()
    borrowers = {i.users[u] for u in i.borrows.user}
    assert borrowers
    for grid in (derive_pmrm_grid(), span16_grid()):
        for user in i.users:
            report = user_risk_report(snap, user, grid)
            numbers = [report.equity_usd, report.collateral_usd, report.debt_usd,
                       report.options_mtm_usd, report.initial_margin_usd,
                       report.maintenance_margin_usd]  # fmt: skip
            numbers += [v for g in report.greeks.values() for v in vars_of(g)]
            assert all(math.isfinite(x) for x in numbers), user
            assert report.initial_margin_usd >= report.maintenance_margin_usd >= 0.0
            assert report.has_positions
            if user in borrowers:
                assert math.isfinite(report.health_factor)
                assert report.health_factor > 0
                moves = [d for x in report.distance_to_liquidation.values()
                         for d in (x.down_pct, x.up_pct)]  # fmt: skip
                assert any(math.isfinite(m) for m in moves), user
            assert report.tail.var_99_usd is not None
            assert report.tail.var_99_usd >= 0.0
            assert report.tail.es_975_usd is not None


def vars_of(value: Any) -> list[float]:
    return [float(getattr(value, f.name)) for f in fields(value)]


@pytest.mark.chain
def test_sqlite_and_postgresql_agree(loader_devnet: Any, tmp_path: Path, postgres_url: str) -> None:
    sqlite_url = f"sqlite:///{tmp_path / 'rtrm.db'}"
    for url in (sqlite_url, postgres_url):
        index_once(loader_devnet.config_path, url)
    registry = load_registry(Path(loader_devnet.config_path))
    lite, pg = _load(sqlite_url, registry), _load(postgres_url, registry)
    _assert_same(lite.inputs, pg.inputs)
    _assert_same(lite.history, pg.history)
    assert lite.watermark == pg.watermark
    assert lite.warnings == pg.warnings
    for user in lite.inputs.users:
        assert dumps_json(user_risk_report(lite, user)) == dumps_json(user_risk_report(pg, user))
    # the incremental path: reading only some users' rows gives the same reports
    some = list(lite.inputs.users[::7])
    alone = _load(postgres_url, registry, users=[u.lower() for u in some])
    assert alone.inputs.users == tuple(some)
    assert not alone.complete
    for user in some:
        assert dumps_json(user_risk_report(alone, user)) == dumps_json(user_risk_report(lite, user))
