"""Turn a :mod:`chains.scenario` plan into real transactions on the devnet's chains.

Per chain, in blocks: faucet mints (batched ``mintBatch``), liquidity providers fund the
pools, users approve, deposit, borrow and trade; then a stretch of market activity (oracle
rounds on a shared random walk, funding, vol surface updates, repayments, withdrawals,
partial closes, withdrawal requests, vault redemptions), and finally the shortest option
expiry passes and its positions are cash-settled. Every transaction comes from the account
that would send it on a real chain (users from their own addresses), and every one is
checked to have succeeded (:class:`~chains.sender.TxSender`).

Determinism: the plan depends only on the seed, the transactions of a chain are queued in
a fixed order and mined at fixed timestamps, so the same seed gives the same events.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from chains.abi import encode_call
from chains.deploy import DEPLOYER, ChainDeployment, svi_params
from chains.scenario import ChainScenario, OptionsAccountPlan
from chains.sender import TxSender
from chains.types import Address, ChainId
from chains.world import (
    ASSETS,
    ATM_VOL,
    FEED_DECIMALS,
    INITIAL_PRICES_USD,
    LENDING_RESERVES,
    OPTIONS_UNDERLYINGS,
    PERP_MARKETS,
    WAD,
    asset_id_bytes32,
    feed_name,
)

__all__ = ["LIQUIDATOR", "LIQUIDITY_PROVIDER", "PricePath", "seed_chain", "seed_vault"]

log = logging.getLogger(__name__)

LIQUIDATOR = Address("0x70997970C51812dc3A010C7d01b50e0d17dc79C8")  # anvil dev account 1
LIQUIDITY_PROVIDER = Address("0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC")  # anvil dev account 2
MAX_UINT = 2**256 - 1
FAUCET_CHUNK = 400
ACTIVITY_BLOCKS = 24
_WHALE_USD = 20_000_000_000.0  # what the LP and the liquidator hold of each token

Progress = Callable[[ChainId, str, int], None]  # (chain, step, transactions mined so far)


@dataclass(frozen=True, slots=True)
class PricePath:
    """Multiplicative moves per activity block, shared by every chain's oracles."""

    eth: tuple[float, ...]
    btc: tuple[float, ...]
    usdc: tuple[float, ...]

    @classmethod
    def draw(cls, seed: int, steps: int = ACTIVITY_BLOCKS) -> PricePath:
        rng = np.random.default_rng([seed, 2])
        eth = np.cumprod(np.exp(rng.normal(0.0, 0.004, steps)))
        btc = np.cumprod(np.exp(rng.normal(0.0, 0.003, steps)))
        usdc = 1.0 + rng.normal(0.0, 0.0002, steps)
        return cls(tuple(eth.tolist()), tuple(btc.tolist()), tuple(usdc.tolist()))

    def prices_at(self, step: int) -> dict[str, float]:
        eth = INITIAL_PRICES_USD["ETH"] * self.eth[step]
        return {
            "ETH": eth,
            "BTC": INITIAL_PRICES_USD["BTC"] * self.btc[step],
            "USDC": self.usdc[step],
            "WSTETH": eth * INITIAL_PRICES_USD["WSTETH"] / INITIAL_PRICES_USD["ETH"],
            "RVETH": eth,  # one WETH per share: the vault earns nothing on the devnet
        }


class _Chain:
    """Helpers bound to one chain's deployment and sender."""

    def __init__(
        self, sender: TxSender, deployment: ChainDeployment, progress: Progress | None
    ) -> None:
        self.sender = sender
        self.deployment = deployment
        self.progress = progress
        self._approved: set[tuple[str, str, str]] = set()

    def call(self, sender: str, to: str, signature: str, *args: object, gas: int = 600_000) -> None:
        self.sender.send(sender, to, encode_call(signature, *args), gas=gas)

    def approve(self, owner: str, symbol: str, spender: str) -> None:
        key = (owner, symbol, spender)
        if key not in self._approved:
            self._approved.add(key)
            self.call(
                owner, self.deployment.token(symbol), "approve(address,uint256)", spender, MAX_UINT
            )

    def mint_batch(self, symbol: str, amounts: dict[str, int]) -> None:
        token = self.deployment.token(symbol)
        items = list(amounts.items())
        for i in range(0, len(items), FAUCET_CHUNK):
            chunk = items[i : i + FAUCET_CHUNK]
            self.call(
                DEPLOYER,
                token,
                "mintBatch(address[],uint256[])",
                [user for user, _ in chunk],
                [amount for _, amount in chunk],
                gas=60_000 + 40_000 * len(chunk),
            )

    def mine(self, step: str, *, advance_s: int | None = None) -> None:
        stats = self.sender.mine(advance_s=advance_s)
        log.debug(
            "chain %s: %s mined up to block %s", self.deployment.chain_id, step, stats.last_block
        )
        if self.progress is not None:
            self.progress(self.deployment.chain_id, step, stats.transactions)

    def address(self, name: str) -> str:
        return self.deployment.address(name)


def seed_vault(
    sender: TxSender,
    deployment: ChainDeployment,
    scenario: ChainScenario,
    progress: Progress | None = None,
) -> None:
    """Home chain, before the others: vault deposits and bridge locks of rvETH shares."""
    chain = _Chain(sender, deployment, progress)
    if not scenario.vault:
        return
    vault = chain.address("vault_rveth")
    escrow = chain.address("bridge_escrow")
    chain.mint_batch("WETH", {plan.user: plan.weth_units for plan in scenario.vault})
    chain.mine("faucet")
    for plan in scenario.vault:
        chain.approve(plan.user, "WETH", vault)
        chain.call(plan.user, vault, "deposit(uint256,address)", plan.weth_units, plan.user)
        if plan.bridge_to is not None:
            chain.approve(plan.user, "rvETH", escrow)
            chain.call(
                plan.user,
                escrow,
                "lock(address,uint256,uint256,address)",
                vault,
                plan.weth_units,
                plan.bridge_to,
                plan.user,
            )
    chain.mine("vault")


def seed_chain(
    sender: TxSender,
    deployment: ChainDeployment,
    scenario: ChainScenario,
    path: PricePath,
    progress: Progress | None = None,
) -> None:
    """Seed one chain with its scenario (after :func:`seed_vault` on the home chain)."""
    chain = _Chain(sender, deployment, progress)
    _faucet(chain, scenario)
    _liquidity(chain)
    _open_positions(chain, scenario)
    _activity(chain, scenario, path)
    _settle_first_expiry(chain, scenario)


def _faucet(chain: _Chain, scenario: ChainScenario) -> None:
    for symbol, per_user in sorted(scenario.faucet().items()):
        chain.mint_batch(symbol, per_user)
    whales = {}
    for symbol, (plan, _) in chain.deployment.tokens.items():
        if symbol != "rvETH":
            whale_units = int(_WHALE_USD / INITIAL_PRICES_USD[plan.asset_id] * 10**plan.decimals)
            whales[symbol] = whale_units
            chain.mint_batch(symbol, {LIQUIDITY_PROVIDER: whale_units, LIQUIDATOR: whale_units})
    rveth = chain.deployment.token("rvETH")
    if not chain.deployment.home:  # the bridge relayer mints what was locked on the home chain
        for user, shares in scenario.bridged_in:
            chain.call(DEPLOYER, rveth, "mint(address,uint256)", user, shares)
    chain.mine("faucet")


def _liquidity(chain: _Chain) -> None:
    options, perps, pool = (
        chain.address("options_market"),
        chain.address("perps_market"),
        chain.address("lending_pool"),
    )
    usdc_units = int(_WHALE_USD / 10 * 10**6)
    for spender in (options, perps):
        chain.approve(LIQUIDITY_PROVIDER, "USDC", spender)
        chain.call(LIQUIDITY_PROVIDER, spender, "fundPool(uint256)", usdc_units)
    for reserve in LENDING_RESERVES:
        if not reserve.borrowable or reserve.symbol not in chain.deployment.tokens:
            continue
        plan, token = chain.deployment.tokens[reserve.symbol]
        supply_units = int(_WHALE_USD / 4 / INITIAL_PRICES_USD[plan.asset_id] * 10**plan.decimals)
        chain.approve(LIQUIDITY_PROVIDER, reserve.symbol, pool)
        chain.call(
            LIQUIDITY_PROVIDER,
            pool,
            "supply(address,uint256,address)",
            token,
            supply_units,
            LIQUIDITY_PROVIDER,
        )
        chain.approve(LIQUIDATOR, reserve.symbol, pool)
    chain.mine("liquidity")


def _open_positions(chain: _Chain, scenario: ChainScenario) -> None:  # noqa: PLR0912 - one loop per role
    d = chain.deployment
    pool, options, perps, fund = (
        chain.address("lending_pool"),
        chain.address("options_market"),
        chain.address("perps_market"),
        chain.address("insurance_fund"),
    )
    for plan in scenario.lending:
        for symbol, _ in plan.collateral:
            chain.approve(plan.user, symbol, pool)
        if plan.borrow is not None:
            chain.approve(plan.user, plan.borrow[0], pool)
    for account in scenario.options:
        for symbol, _ in account.deposits:
            chain.approve(account.user, symbol, options)
    for perp in scenario.perps:
        chain.approve(perp.user, "USDC", perps)
    for user, _ in scenario.underwriters:
        chain.approve(user, "USDC", fund)
    chain.mine("approvals")

    for plan in scenario.lending:
        for symbol, amount in plan.collateral:
            chain.call(
                plan.user,
                pool,
                "supply(address,uint256,address)",
                d.token(symbol),
                amount,
                plan.user,
            )
    for account in scenario.options:
        for symbol, amount in account.deposits:
            chain.call(
                account.user, options, "depositCollateral(address,uint256)", d.token(symbol), amount
            )
    for perp in scenario.perps:
        chain.call(perp.user, perps, "depositMargin(uint256)", perp.margin_units)
    for user, amount in scenario.underwriters:
        chain.call(user, fund, "deposit(uint256)", amount)
    chain.mine("deposits")

    for plan in scenario.lending:
        if plan.borrow is not None:
            symbol, amount = plan.borrow
            chain.call(
                plan.user,
                pool,
                "borrow(address,uint256,address)",
                d.token(symbol),
                amount,
                plan.user,
            )
    for account in scenario.options:
        for trade in account.trades:
            chain.call(
                account.user,
                options,
                "trade(uint256,int256,uint256)",
                trade.series_id,
                trade.size_wad,
                trade.premium_units,
            )
    for perp in scenario.perps:
        chain.call(
            perp.user,
            perps,
            "modifyPosition(bytes32,int256)",
            asset_id_bytes32(perp.market),
            perp.size_wad,
        )
    chain.mine("positions")


def _activity(chain: _Chain, scenario: ChainScenario, path: PricePath) -> None:
    """Oracle rounds, funding and vol updates every block, plus a trickle of user actions."""
    d = chain.deployment
    pool, options, perps, fund = (
        chain.address("lending_pool"),
        chain.address("options_market"),
        chain.address("perps_market"),
        chain.address("insurance_fund"),
    )
    borrowers = [p for p in scenario.lending if p.borrow is not None]
    savers = [p for p in scenario.lending if p.borrow is None]
    buyers = [a for a in scenario.options if a.trades[0].size_wad > 0]
    for step in range(ACTIVITY_BLOCKS):
        prices = path.prices_at(step)
        for asset in ASSETS:
            answer = round(prices[asset.asset_id] * 10**FEED_DECIMALS)
            chain.call(
                DEPLOYER, chain.address(feed_name(asset.asset_id)), "updateAnswer(int256)", answer
            )
        if step % 4 == 3:  # noqa: PLR2004 - funding every fourth block
            for perp_plan in PERP_MARKETS:
                rate = round((0.0001 if step % 8 == 3 else -0.00005) * WAD)  # noqa: PLR2004
                chain.call(
                    DEPLOYER,
                    perps,
                    "updateFunding(bytes32,int256)",
                    asset_id_bytes32(perp_plan.market),
                    rate,
                )
        if step % 8 == 7:  # noqa: PLR2004 - vol surfaces every eighth block
            _update_vols(chain, step)
        # a trickle of user activity, about 1 in 20 of each group over the whole stretch
        for plan in borrowers[step :: ACTIVITY_BLOCKS * 20]:
            assert plan.borrow is not None
            symbol, amount = plan.borrow
            chain.call(
                plan.user,
                pool,
                "repay(address,uint256,address)",
                d.token(symbol),
                amount * 3 // 10,
                plan.user,
            )
        for plan in savers[step :: ACTIVITY_BLOCKS * 20]:
            symbol, amount = plan.collateral[0]
            chain.call(
                plan.user,
                pool,
                "withdraw(address,uint256,address)",
                d.token(symbol),
                amount // 2,
                plan.user,
            )
        for account in buyers[step :: ACTIVITY_BLOCKS * 10]:
            trade = account.trades[0]
            half = trade.size_wad // 2
            chain.call(
                account.user,
                options,
                "trade(uint256,int256,uint256)",
                trade.series_id,
                -half,
                trade.premium_units * 47 // 100,
            )
        for perp in scenario.perps[step :: ACTIVITY_BLOCKS * 10]:
            chain.call(
                perp.user,
                perps,
                "modifyPosition(bytes32,int256)",
                asset_id_bytes32(perp.market),
                -(perp.size_wad // 2),
            )
        for user, amount in scenario.underwriters[step :: ACTIVITY_BLOCKS * 10]:
            chain.call(user, fund, "requestWithdrawal(uint256)", amount // 2)
        for vault_plan in scenario.vault[step :: ACTIVITY_BLOCKS * 10]:
            if vault_plan.bridge_to is None:
                vault = chain.address("vault_rveth")
                chain.call(
                    vault_plan.user,
                    vault,
                    "redeem(uint256,address,address)",
                    vault_plan.weth_units // 2,
                    vault_plan.user,
                    vault_plan.user,
                )
        chain.mine("activity")


def _update_vols(chain: _Chain, step: int) -> None:
    oracle = chain.address("vol_oracle")
    bump = 1.0 + 0.02 * ((step // 8) % 3 - 1)
    for underlying in OPTIONS_UNDERLYINGS:
        expiries = sorted({s.expiry for s in chain.deployment.series if s.underlying == underlying})
        for expiry in expiries:
            remaining = max(1, expiry - chain.sender.timestamp)
            atm = ATM_VOL[underlying] * bump
            chain.call(
                DEPLOYER,
                oracle,
                "setSurface(bytes32,uint64,uint256,int256[5])",
                asset_id_bytes32(underlying),
                expiry,
                round(atm * WAD),
                svi_params(atm, remaining),
            )


def _settle_first_expiry(chain: _Chain, scenario: ChainScenario) -> None:
    """Let the shortest expiry pass, settle its series and cash-settle every position in it."""
    d = chain.deployment
    options = chain.address("options_market")
    first_expiry = min(s.expiry for s in d.series)
    expiring = [s.series_id for s in d.series if s.expiry == first_expiry]
    chain.mine("expiry", advance_s=max(1, first_expiry - chain.sender.timestamp + 1))
    for series_id in expiring:
        chain.call(DEPLOYER, options, "settleSeries(uint256)", series_id)
    expiring_set = set(expiring)
    for user, series_id in _open_positions_in(scenario.options, expiring_set):
        chain.call(DEPLOYER, options, "settlePosition(address,uint256)", user, series_id)
    chain.mine("settlement")


def _open_positions_in(
    accounts: list[OptionsAccountPlan], series_ids: set[int]
) -> list[tuple[str, int]]:
    """(user, series) pairs with a non-zero position (the activity stretch only halves some)."""
    sizes: dict[tuple[str, int], int] = {}
    for account in accounts:
        for trade in account.trades:
            if trade.series_id in series_ids:
                key = (account.user, trade.series_id)
                sizes[key] = sizes.get(key, 0) + trade.size_wad
    return [key for key, size in sizes.items() if size != 0]
