"""The cascade predicts the liquidations the contracts make, account by account (issue 5).

On a real two-chain devnet (120 users; seeds 3 and 5): index it, load the snapshot at
that watermark, crash ETH -35 % with keepers (``chains.keeper.crash``, what ``rtrm devnet
crash --asset ETH --move -0.35`` runs: the oracles of ETH, wstETH and rvETH move together
over 3 blocks and the keepers liquidate after each), index again -- and then a second
crash of -35 % from there, because the first one liquidates no options account on these
worlds (the option writers are well covered; the second one reaches them). For each
crash:

- every liquidation that happened on chain -- the indexed ``liquidation`` rows between
  the two watermarks, lending, options and perps alike -- is an account ``(chain, user,
  protocol)`` that :func:`aggregation.cascade.cascade` liquidates for ETH -35 % on the
  snapshot before the crash (variants follow at their pegs; infinite depth: the devnet's
  oracles do not react to sales); and the cascade predicts nothing more (equality);
- a zero shock liquidates nothing, before or after: the keepers stop only when no
  account is liquidatable, and :func:`aggregation.risk.unified_risk` counts none either.

The cross-margined model this replaced (one margin account per user) found liquidatable
users at zero shock after the first crash (2 with seed 5, 3 with seed 3) and let collateral
on one chain cover a position on another.

Why this can be exact: margin is per (user, protocol, chain) under each market's own rule
(``aggregation.accounts``: options mmBps and haircuts, perps mmBps per market, perps
margin at par); every chain's oracles follow one price path, so the snapshot's median
price is each chain's price; and the crash's steps do not change who fails without price
impact (HF is linear and the margin rule concave in the price, and no short put sits near
its strike cap). What remains is rounding: the contracts compute in WAD integers,
truncating at each step, while the model uses floats -- an account within a few wei of
its boundary could come out differently. The test checks that no account (margin:
equity against maintenance; lending: collateral x LT against debt) sits within a tenth
of a cent of its boundary at the crash's price (``-s`` prints the closest: dollars, not
wei). A world with such an account would need the contracts' integer arithmetic to decide.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
from rtrm_testing import index_once
from sqlalchemy import text

from aggregation.accounts import account_state
from aggregation.cascade import LENDING, cascade
from aggregation.lending import LendingBook, account_health, lending_accounts
from aggregation.risk import unified_risk
from aggregation.scenarios import derive_pmrm_grid
from aggregation.snapshot import Snapshot, checksummed

pytestmark = pytest.mark.chain

CRASH = -0.35
Account = tuple[int, str, str]  # (chain id, user, protocol kind)


@dataclass(frozen=True, slots=True)
class CrashRun:
    """Snapshots before, between and after the two crashes, and what each crash
    liquidated on chain."""

    seed: int
    snapshots: tuple[Snapshot, Snapshot, Snapshot]
    on_chain: tuple[frozenset[Account], frozenset[Account]]


@pytest.fixture(scope="module", params=[3, 5], ids=lambda s: f"seed{s}")
def run(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CrashRun]:
    from aggregation.loader import load_snapshot
    from chains.devnet import DevnetOptions, up
    from chains.keeper import ChainContracts, crash
    from chains.registry import load_registry
    from indexer.status import watermark
    from indexer.store import open_store

    seed = int(request.param)
    home = tmp_path_factory.mktemp(f"devnet{seed}")
    state, nodes = up(DevnetOptions(chains=2, users=120, seed=seed, block_time_s=0, state_dir=home))
    try:
        config = Path(state.config_path)
        registry = load_registry(config)
        chains = [
            ChainContracts(n.chain_id, n.rpc_url, state.contracts[str(n.chain_id)],
                           state.tokens[str(n.chain_id)])
            for n in state.nodes
        ]  # fmt: skip
        store = open_store(registry.database_url, migrate=False)
        snapshots, cuts = [], []
        for leg in range(3):
            if leg:
                crash(chains, asset="ETH", move=CRASH)
            index_once(str(config), registry.database_url)
            with store.engine.connect() as conn:
                cuts.append(dict(watermark(conn)))
                snapshots.append(load_snapshot(conn, registry, cuts[-1]))
        with store.engine.connect() as conn:
            rows = conn.execute(
                text("SELECT chain_id, account, protocol_kind, block_number FROM liquidation")
            ).all()
        store.dispose()
        legs = tuple(
            frozenset(
                (int(c), checksummed(a), str(k))
                for c, a, k, b in rows
                if cuts[leg][int(c)] < int(b) <= cuts[leg + 1][int(c)]
            )
            for leg in range(2)
        )
        yield CrashRun(seed, (snapshots[0], snapshots[1], snapshots[2]), (legs[0], legs[1]))
    finally:
        for node in nodes:
            node.stop()


def predicted(snapshot: Snapshot, move: float) -> set[Account]:
    """Accounts the cascade liquidates when ETH (and so its variants) moves by ``move``."""
    shock = np.zeros(len(snapshot.assets))
    shock[snapshot.assets.index("ETH")] = move
    r = cascade(snapshot.inputs, snapshot.asset_canonical, shock)
    assert r.converged
    ev = r.accounts
    return {
        (snapshot.chain_ids[c], snapshot.inputs.users[u],
         "lending" if k == LENDING else snapshot.protocols[p].split("@")[0])
        for u, p, c, k in zip(ev.user, ev.protocol, ev.chain, ev.kind, strict=True)
    }  # fmt: skip


def boundary_gap_usd(snapshot: Snapshot, move: float) -> float:
    """How close any account comes to its boundary at the crash's final price (the book
    before the crash): the smallest |equity - maintenance| of a margin account with a
    requirement and |collateral x LT - debt| of a lending account with debt."""
    x = snapshot.inputs
    eth = snapshot.underlyings.index("ETH")
    moved = np.where(x.asset_underlying == eth, 1.0 + move, 1.0)
    spot = x.spot_usd * np.where(np.arange(x.n_underlyings) == eth, 1.0 + move, 1.0)
    shocked = replace(x, spot_usd=spot, asset_price_usd=x.asset_price_usd * moved)
    st = account_state(shocked)
    margin = np.abs(st.equity_usd - st.mm_usd)[st.mm_usd > 0.0]
    s, b = x.supplies, x.borrows
    acc = lending_accounts((s.user, s.protocol, s.chain), (b.user, b.protocol, b.chain),
                           x.n_protocols, x.n_chains)  # fmt: skip
    book = LendingBook(acc.user.shape[0], acc.supply_account, s.asset, s.amount,
                       s.liquidation_threshold, s.ltv, s.liquidation_bonus, acc.borrow_account,
                       b.asset, b.amount)  # fmt: skip
    h = account_health(book, shocked.asset_price_usd)
    lending = np.abs(h.collateral_adjusted_usd - h.debt_usd)[h.debt_usd > 0.0]
    return float(min(margin.min(initial=np.inf), lending.min(initial=np.inf)))


def test_every_onchain_liquidation_was_predicted(run: CrashRun) -> None:
    kinds = {kind for leg in run.on_chain for _, _, kind in leg}
    assert kinds == {"lending", "options", "perps"}, run.seed
    for leg, on_chain in enumerate(run.on_chain):
        guess = predicted(run.snapshots[leg], CRASH)
        missed, extra = on_chain - guess, guess - on_chain
        assert not missed, f"seed {run.seed}, crash {leg + 1}: missed {sorted(missed)}"
        assert not extra, f"seed {run.seed}, crash {leg + 1}: not liquidated {sorted(extra)}"
        gap = boundary_gap_usd(run.snapshots[leg], CRASH)
        print(f"seed {run.seed}, crash {leg + 1}: {len(on_chain)} accounts liquidated on "
              f"chain, {sorted((k, sum(a[2] == k for a in on_chain)) for k in kinds)}; "
              f"closest account to its boundary at the crash price: ${gap:,.4f}")  # fmt: skip
        # the crash's answers are rounded to 1e-8 USD and the contracts truncate WADs:
        # far below a tenth of a cent on these books, so no account is a rounding call
        assert gap > 1e-3


def test_nothing_liquidatable_without_a_move(run: CrashRun) -> None:
    for snapshot in run.snapshots:
        assert predicted(snapshot, 0.0) == set()
        risk = unified_risk(snapshot.inputs, derive_pmrm_grid())
        assert int(risk.liquidatable_accounts.sum()) == 0


def test_distance_to_liquidation_agrees(run: CrashRun) -> None:
    """Every user liquidated by a crash had a first ETH move down within it."""
    for leg, on_chain in enumerate(run.on_chain):
        snapshot = run.snapshots[leg]
        risk = unified_risk(snapshot.inputs, derive_pmrm_grid())
        eth = snapshot.underlyings.index("ETH")
        for _, user, _ in on_chain:
            i = snapshot.inputs.users.index(user)
            assert risk.liq_move_down[i, eth] >= CRASH - 1e-12, (leg, user)
