"""Who does what in the seeded world: a pure, deterministic plan drawn from ``--seed``.

Users are addresses derived from the seed; each is active on a random subset of chains
(the same address everywhere) and takes roles there: supplier and borrower (near to and far
from liquidation), options buyer, options writer, perps trader, insurance underwriter, and
on the home chain rvETH vault depositor, some of whom bridge their shares to another chain
and borrow against them. Amounts are exact integer token units sized at the opening prices
so that every planned transaction passes the contracts' checks.

Nothing here touches a chain: :mod:`chains.seed` turns the plan into transactions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from eth_utils.crypto import keccak

from chains.deploy import SeriesPlan
from chains.types import ChainId
from chains.world import (
    ATM_VOL,
    INITIAL_PRICES_USD,
    LENDING_RESERVES,
    OPTIONS_IM_BPS,
    TOKENS,
    WAD,
    ChainPlan,
)

__all__ = [
    "ChainScenario",
    "LendingPlan",
    "OptionsAccountPlan",
    "PerpTradePlan",
    "VaultPlan",
    "black76_price",
    "build_scenario",
    "user_addresses",
]

PARTICIPATION = 0.55  # chance a user is active on any one chain
_DECIMALS = {t.symbol: t.decimals for t in TOKENS}
_ASSET = {t.symbol: t.asset_id for t in TOKENS}
_RESERVES = {r.symbol: r for r in LENDING_RESERVES}
_SECONDS_PER_YEAR = 365 * 86_400


@dataclass(frozen=True, slots=True)
class LendingPlan:
    user: str
    collateral: tuple[tuple[str, int], ...]  # (token symbol, units)
    borrow: tuple[str, int] | None


@dataclass(frozen=True, slots=True)
class OptionTradePlan:
    series_id: int
    size_wad: int  # > 0 buy, < 0 write
    premium_units: int  # USDC units


@dataclass(frozen=True, slots=True)
class OptionsAccountPlan:
    user: str
    deposits: tuple[tuple[str, int], ...]
    trades: tuple[OptionTradePlan, ...]


@dataclass(frozen=True, slots=True)
class PerpTradePlan:
    user: str
    margin_units: int
    market: str
    size_wad: int


@dataclass(frozen=True, slots=True)
class VaultPlan:
    user: str
    weth_units: int
    bridge_to: ChainId | None


@dataclass(slots=True)
class ChainScenario:
    chain_id: ChainId
    users: list[str] = field(default_factory=list)
    lending: list[LendingPlan] = field(default_factory=list)
    options: list[OptionsAccountPlan] = field(default_factory=list)
    perps: list[PerpTradePlan] = field(default_factory=list)
    underwriters: list[tuple[str, int]] = field(default_factory=list)
    vault: list[VaultPlan] = field(default_factory=list)  # home chain only
    bridged_in: list[tuple[str, int]] = field(default_factory=list)  # rvETH minted here

    def faucet(self) -> dict[str, dict[str, int]]:
        """symbol -> user -> units each user needs minted to carry out its plan."""
        need: dict[str, dict[str, int]] = {}

        def add(symbol: str, user: str, units: int) -> None:
            per_user = need.setdefault(symbol, {})
            per_user[user] = per_user.get(user, 0) + units

        for plan in self.lending:
            for symbol, units in plan.collateral:
                if symbol != "rvETH":  # bridged in, not minted by the faucet
                    add(symbol, plan.user, units)
        for account in self.options:
            for symbol, units in account.deposits:
                add(symbol, account.user, units)
        for perp in self.perps:
            add("USDC", perp.user, perp.margin_units)
        for user, units in self.underwriters:
            add("USDC", user, units)
        for vault in self.vault:
            add("WETH", vault.user, vault.weth_units)
        return need


def user_addresses(seed: int, count: int) -> list[str]:
    """``count`` deterministic user addresses (lower-case hex) for ``seed``."""
    prefix = b"rtrm-user" + seed.to_bytes(8, "big", signed=True)
    return ["0x" + keccak(prefix + i.to_bytes(8, "big")).hex()[24:] for i in range(count)]


def units(symbol: str, usd: float) -> int:
    """Token units of ``symbol`` worth ``usd`` at the opening price (rounded down)."""
    price = INITIAL_PRICES_USD[_ASSET[symbol]]
    return int(usd / price * 10 ** _DECIMALS[symbol])


def black76_price(
    forward: float, strike: float, t_years: float, vol: float, is_call: bool
) -> float:
    """Undiscounted Black-76 price (rate 0), used only to quote premiums when seeding."""
    if t_years <= 0 or vol <= 0:
        return max(0.0, forward - strike) if is_call else max(0.0, strike - forward)
    sd = vol * math.sqrt(t_years)
    d1 = (math.log(forward / strike) + 0.5 * sd * sd) / sd
    d2 = d1 - sd
    n = _norm_cdf
    if is_call:
        return forward * n(d1) - strike * n(d2)
    return strike * n(-d2) - forward * n(-d1)


def _norm_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def build_scenario(
    *,
    users: int,
    seed: int,
    chains: Sequence[ChainPlan],
    series: Mapping[ChainId, Sequence[SeriesPlan]],
    start_time: int,
) -> dict[ChainId, ChainScenario]:
    """Plan the whole world; the first chain in ``chains`` is the home chain."""
    addresses = user_addresses(seed, users)
    membership = np.random.default_rng([seed, 0]).random((users, len(chains))) < PARTICIPATION
    orphans = ~membership.any(axis=1)
    membership[np.flatnonzero(orphans), np.flatnonzero(orphans) % len(chains)] = True

    scenarios: dict[ChainId, ChainScenario] = {}
    for c, plan in enumerate(chains):
        rng = np.random.default_rng([seed, plan.chain_id])
        members = [addresses[i] for i in np.flatnonzero(membership[:, c])]
        scenario = ChainScenario(chain_id=plan.chain_id, users=members)
        _plan_chain(scenario, rng, home=c == 0, series=series[plan.chain_id], start_time=start_time)
        scenarios[plan.chain_id] = scenario
    if len(chains) > 1:
        _plan_vault(scenarios, chains, seed)
    return scenarios


def _notional_usd(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.clip(rng.lognormal(mean=math.log(5_000), sigma=1.1, size=n), 100.0, 2_000_000.0)


@dataclass(frozen=True, slots=True)
class _Draws:
    """Every random number one chain's plan needs, drawn up front as arrays (fast, and the
    plan stays the same however the loop below is written)."""

    roles: np.ndarray
    notional: np.ndarray
    uniforms: np.ndarray  # general-purpose U(0, 1) columns
    utilisation: np.ndarray
    series: np.ndarray  # three series picks per user
    trades: np.ndarray  # 1..3 trades per buyer

    @classmethod
    def draw(cls, rng: np.random.Generator, n: int, n_series: int) -> _Draws:
        return cls(
            roles=rng.random((n, 5)),
            notional=_notional_usd(rng, n),
            uniforms=rng.random((n, 8)),
            utilisation=0.35 + 0.635 * rng.beta(2.0, 1.3, size=(n, 2)),
            series=rng.integers(0, n_series, size=(n, 3)),
            trades=rng.integers(1, 4, size=n),
        )


def _plan_chain(
    scenario: ChainScenario,
    rng: np.random.Generator,
    *,
    home: bool,
    series: Sequence[SeriesPlan],
    start_time: int,
) -> None:
    n = len(scenario.users)
    d = _Draws.draw(rng, n, len(series))
    collateral_symbols = ["WETH", "WBTC", "wstETH", "USDC"] + ([] if home else ["USDC.e"])
    weights = np.array([0.4, 0.2, 0.2, 0.1] + ([] if home else [0.1]))
    cumulative = np.cumsum(weights / weights.sum())
    debt_for_volatile = ["USDC"] if home else ["USDC", "USDC.e"]
    # plain lists: indexing numpy arrays element by element costs ~20x more
    first_pick = np.searchsorted(cumulative, d.uniforms[:, 0]).tolist()
    roles, notional, uniforms = d.roles.tolist(), d.notional.tolist(), d.uniforms.tolist()
    utilisation, series_picks, trades = d.utilisation.tolist(), d.series.tolist(), d.trades.tolist()
    for i, user in enumerate(scenario.users):
        usd = notional[i]
        u = uniforms[i]
        picks = [series[k] for k in series_picks[i]]
        if roles[i][0] < 0.55:  # noqa: PLR2004 - role shares are the scenario's tuning
            chosen = [collateral_symbols[first_pick[i]]]
            if u[1] < 0.3:  # noqa: PLR2004
                others = [s for s in collateral_symbols if s != chosen[0]]
                chosen.append(others[int(u[2] * len(others))])
            collateral = tuple((s, units(s, usd / len(chosen))) for s in chosen)
            borrow = None
            if u[3] < 0.75:  # noqa: PLR2004 - a quarter only supply
                stable = {"USDC", "USDC.e"} & set(chosen)
                debts = (
                    [s for s in ("WETH", "WBTC") if s not in chosen]
                    if stable
                    else debt_for_volatile
                )
                debt = debts[int(u[4] * len(debts))]
                borrow = (debt, _borrow_units(collateral, debt, utilisation[i][0]))
            scenario.lending.append(LendingPlan(user, collateral, borrow))
        bought: set[int] = set()
        if roles[i][1] < 0.20:  # noqa: PLR2004
            buys = picks[: trades[i]]
            bought = {s.series_id for s in buys}
            scenario.options.append(_options_buyer(user, usd, buys, start_time))
        # a writer never writes a series it holds long (the market forbids flipping a position)
        mirrored = [series[(k + len(series) // 2) % len(series)] for k in series_picks[i][:2]]
        writes = [s for s in dict.fromkeys(mirrored) if s.series_id not in bought]
        writes = writes[: 1 + int(u[5] < 0.5)]  # noqa: PLR2004
        if roles[i][2] < 0.12 and writes:  # noqa: PLR2004
            cushion = 1.05 + 1.95 * u[6]  # haircut collateral / initial margin
            symbol = "WETH" if u[7] < 0.5 else "USDC"  # noqa: PLR2004
            scenario.options.append(_options_writer(user, usd, writes, symbol, cushion, start_time))
        if roles[i][3] < 0.25:  # noqa: PLR2004
            scenario.perps.append(_perp(user, usd, u[0], u[1], u[2]))
        if roles[i][4] < 0.04:  # noqa: PLR2004
            scenario.underwriters.append((user, units("USDC", usd * 20)))


def _borrow_units(collateral: tuple[tuple[str, int], ...], debt: str, utilisation: float) -> int:
    """Borrow ``utilisation`` of the LTV capacity: near 1 is near liquidation."""
    capacity_usd = sum(
        units_ * INITIAL_PRICES_USD[_ASSET[s]] / 10 ** _DECIMALS[s] * _RESERVES[s].ltv_bps / 10_000
        for s, units_ in collateral
    )
    return max(1, int(units(debt, capacity_usd * utilisation) * 0.999))


def _vol(s: SeriesPlan) -> float:
    skew = 1.0 + 0.25 * max(0.0, 1.0 - s.strike_usd / INITIAL_PRICES_USD[s.underlying])
    return ATM_VOL[s.underlying] * skew


def _premium_units(s: SeriesPlan, size_wad: int, start_time: int, spread: float) -> int:
    spot = INITIAL_PRICES_USD[s.underlying]
    t_years = (s.expiry - start_time) / _SECONDS_PER_YEAR
    per_unit = black76_price(spot, s.strike_usd, t_years, _vol(s), s.is_call)
    return max(1, int(per_unit * spread * size_wad / WAD * 10**6))


def _size_wad(size: float) -> int:
    return int(size * WAD) // 10**12 * 10**12  # whole micro-units: tidy, exact sizes


def _options_buyer(
    user: str, usd: float, picks: Sequence[SeriesPlan], start_time: int
) -> OptionsAccountPlan:
    trades = []
    for s in picks:
        size_wad = _size_wad(usd / INITIAL_PRICES_USD[s.underlying])
        trades.append(
            OptionTradePlan(s.series_id, size_wad, _premium_units(s, size_wad, start_time, 1.02))
        )
    budget = sum(t.premium_units for t in trades)
    return OptionsAccountPlan(user, (("USDC", budget + budget // 10 + 10**6),), tuple(trades))


def _options_writer(  # noqa: PLR0917
    user: str, usd: float, picks: Sequence[SeriesPlan], symbol: str, cushion: float, start_time: int
) -> OptionsAccountPlan:
    haircut_usd = usd * (0.85 if symbol == "WETH" else 1.0)
    trades = []
    for s in picks:
        spot = INITIAL_PRICES_USD[s.underlying]
        intrinsic = max(0.0, spot - s.strike_usd) if s.is_call else max(0.0, s.strike_usd - spot)
        im_per_unit = spot * OPTIONS_IM_BPS / 10_000 + intrinsic
        if not s.is_call:
            im_per_unit = min(im_per_unit, s.strike_usd)
        size_wad = _size_wad(haircut_usd / len(picks) / cushion / im_per_unit)
        trades.append(
            OptionTradePlan(s.series_id, -size_wad, _premium_units(s, size_wad, start_time, 0.98))
        )
    return OptionsAccountPlan(user, ((symbol, units(symbol, usd)),), tuple(trades))


def _perp(
    user: str, usd: float, u_market: float, u_leverage: float, u_side: float
) -> PerpTradePlan:
    market, asset = ("ETH-PERP", "ETH") if u_market < 0.7 else ("BTC-PERP", "BTC")  # noqa: PLR2004
    leverage = 1.0 + 8.0 * u_leverage
    direction = 1 if u_side < 0.55 else -1  # noqa: PLR2004
    size_wad = _size_wad(usd * leverage / INITIAL_PRICES_USD[asset])
    return PerpTradePlan(user, units("USDC", usd), market, direction * size_wad)


def _plan_vault(
    scenarios: dict[ChainId, ChainScenario], chains: Sequence[ChainPlan], seed: int
) -> None:
    """Some home-chain users deposit WETH into the rvETH vault; most of those bridge the
    shares to a remote chain and borrow USDC.e there against them."""
    home = scenarios[chains[0].chain_id]
    rng = np.random.default_rng([seed, 1])
    remotes = [c.chain_id for c in chains[1:]]
    for user in home.users:
        if rng.random() >= 0.08:  # noqa: PLR2004
            continue
        weth = units("WETH", float(_notional_usd(rng, 1)[0]))
        bridge_to = remotes[int(rng.integers(len(remotes)))] if rng.random() < 0.6 else None  # noqa: PLR2004
        home.vault.append(VaultPlan(user, weth, bridge_to))
        if bridge_to is None:
            continue
        remote = scenarios[bridge_to]
        shares = weth  # the vault starts at one share per WETH and earns nothing while seeding
        remote.bridged_in.append((user, shares))
        collateral = (("rvETH", shares),)
        utilisation = 0.35 + 0.635 * float(rng.beta(2.0, 1.3))
        remote.lending.append(
            LendingPlan(
                user, collateral, ("USDC.e", _borrow_units(collateral, "USDC.e", utilisation))
            )
        )
