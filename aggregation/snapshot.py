"""A store snapshot as risk arrays: marks, vols and position books from raw store columns.

Concept: :mod:`aggregation.loader` reads each chain of a watermark vector as
:class:`ChainRows` (plain columns, exactly as stored); :func:`build_snapshot` turns them,
with the registry, into a frozen :class:`Snapshot`: the
:class:`~aggregation.risk.RiskInputs` the math takes plus the labels of its index spaces.
Pure: no I/O, no clock, no logging -- "now" of each chain is its watermark block's time.

Marks:

- asset prices: each chain's latest round of the asset's feed (registry ``price_feed``
  contracts with that asset, ``answer / 10**feed_decimals``); when chains disagree the
  **median** over chains is used (robust to one stale or broken feed), and a spread above
  ``price_tolerance`` is reported in ``warnings``. An asset without a round is at par (1)
  if it has a peg, else at its root asset's price (warning);
- underlyings are the root assets without a peg (ETH, BTC) that have a price; tokens roll
  up through ``Registry.root_asset`` (wstETH -> ETH); a pegged root (USDC) is tied to no
  underlying. Forward = spot x e^(carry T), carry per underlying from :class:`MarkParams`;
- option vols: the option's chain's SVI surface for its underlying (latest slice per
  expiry, ``VolSurface.from_wad`` at that chain's now, interpolated in T). An invalid or
  arbitrageable surface is not fatal: options fall back to the ATM vol of the nearest
  published expiry, with a warning; an underlying without any slice uses
  ``fallback_vol_annual`` (warning).

Options past expiry: a *settled* series is no longer an option -- its payoff ``size x
intrinsic(settlement price)`` counts as cash collateral (asset ``USD``, price 1, no haircut)
in the user's options account, as ``settlePosition`` will book it; an expired series not yet
settled stays an option with ``T = 0`` (Black-76 then values it at intrinsic on spot).

On-chain rules (:class:`~aggregation.accounts.ProtocolRules`, what decides liquidations):
a perps market's mmBps, imBps and liquidation fee per market come from its
``protocol_param`` rows (``MarketListed``), mapped to the market feed's underlying; its
margin counts at par (quote units, as ``PerpsMarket`` does). An options market's mmBps,
imBps and penaltyBps are constructor immutables that no event reports: they come from
:class:`MarkParams` (default: what the devnet deploys, ``chains/world.py``), per protocol
label if listed there. Collateral haircuts are the ``haircut_bps`` params, as before.

Units: token amounts become float token units divided by the token's decimals (the only
place that happens); option sizes, strikes, perp notionals and funding indices are WAD /
1e18; LT, LTV, bonus and haircuts are ``protocol_param`` basis points / 1e4; perp margin
(signed, quote token) is margin collateral without haircut; accrued perp funding received
is ``-size x (index now - entry index)``. Construction is vectorised per chain and table
(dict look-ups per distinct key only) and deterministic: books are ordered by integer keys,
so SQLite and PostgreSQL rows give bit-identical arrays.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from eth_utils.address import to_checksum_address
from numpy.typing import NDArray

from aggregation.accounts import OnchainRates, ProtocolRules
from aggregation.exceptions import AggregationError, InvalidSurfaceError
from aggregation.risk import (
    BorrowPositions,
    CollateralPositions,
    OptionPositions,
    PerpPositions,
    RiskInputs,
    SupplyPositions,
)
from aggregation.volsurface import SECONDS_PER_YEAR, WAD, VolSurface
from chains.spec import ChainSpec, Registry
from chains.types import ContractKind
from chains.world import OPTIONS_IM_BPS, OPTIONS_MM_BPS, OPTIONS_PENALTY_BPS

__all__ = [
    "CASH_ASSET",
    "ChainRows",
    "InvalidAddressError",
    "MarkParams",
    "MissingPriceError",
    "PriceHistory",
    "Snapshot",
    "build_snapshot",
    "checksummed",
]

CASH_ASSET = "USD"
"""Asset of settled-but-unclaimed option payoffs (price 1, tied to no underlying)."""
PROTOCOL_KINDS = {
    ContractKind.OPTIONS_MARKET: "options",
    ContractKind.LENDING_POOL: "lending",
    ContractKind.PERPS_MARKET: "perps",
}
_HEX_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_BPS = 1e4
Float = NDArray[np.float64]
Index = NDArray[np.intp]
Table = tuple[tuple[Any, ...], ...]  # columns of a query result (empty tuple: no rows)


class InvalidAddressError(AggregationError, ValueError):
    """A user address that is not an address, or has a bad EIP-55 checksum."""


class MissingPriceError(AggregationError):
    """A position needs a price that no chain's oracle has published by the watermark."""


def checksummed(address: str) -> str:
    """``address`` EIP-55 checksummed; all-lower/upper case is accepted, bad mixed case not."""
    if not _HEX_ADDRESS.fullmatch(address):
        raise InvalidAddressError(
            f"{address!r} is not an address; write 0x followed by 40 hex digits"
        )
    good = str(to_checksum_address(address))
    digits = address[2:]
    if address != good and digits not in (digits.lower(), digits.upper()):
        raise InvalidAddressError(
            f"{address} has a bad EIP-55 checksum (letter case), so it probably has a typo; "
            "copy it again, or write it all-lowercase to skip the checksum"
        )
    return good


@dataclass(frozen=True, slots=True)
class MarkParams:
    """How positions are marked (defaults: Chainlink-style 8-decimal USD feeds, no carry)."""

    carry_annual: Mapping[str, float] = field(default_factory=dict)  # per underlying, else 0
    feed_decimals: int = 8
    fallback_vol_annual: float = 0.8  # only for an underlying without any vol slice
    price_tolerance: float = 0.01  # cross-chain price spread that is reported
    history_days: float = 730.0  # oracle history the loader keeps for tail risk
    # options markets' (mmBps, imBps, penaltyBps): not in any event; per protocol label
    options_bps: tuple[int, int, int] = (OPTIONS_MM_BPS, OPTIONS_IM_BPS, OPTIONS_PENALTY_BPS)
    options_bps_by_protocol: Mapping[str, tuple[int, int, int]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, eq=False)
class PriceHistory:
    """Oracle rounds of one underlying on one chain, oldest first (block time, USD)."""

    underlying: str
    chain_id: int
    updated_at_s: NDArray[np.int64]
    price_usd: Float


@dataclass(frozen=True, slots=True, eq=False)
class ChainRows:
    """What one chain's store holds at its watermark block, as read (no conversion yet).

    Tables are columns: ``balances`` (account, protocol, protocol_kind, kind, asset,
    amount), ``options`` (account, protocol, size_wad, underlying, expiry, strike_wad,
    is_call, settlement_price_wad or None), ``perps`` (account, protocol, market, size_wad,
    open_notional_wad, entry_funding_index_wad), ``vols`` (underlying, expiry, updated_at,
    atm, a, b, rho, m, sigma; latest per expiry, live expiries only).
    """

    chain_id: int
    block: int
    now_s: int
    balances: Table
    options: Table
    perps: Table
    vols: Table
    params: Mapping[tuple[str, str, str], str]  # (protocol, subject, name) -> latest value
    feed_answers: Mapping[str, int]  # feed address -> latest answer
    funding_index_wad: Mapping[tuple[str, str], int]  # (protocol, market) -> latest index


@dataclass(frozen=True, slots=True, eq=False)
class Snapshot:
    """Risk inputs at ``watermark`` and the labels of their index spaces.

    ``inputs.users`` are checksummed and sorted; chain index ``i`` is ``chain_ids[i]``,
    protocol ``j`` is ``protocols[j]`` (``"lending@42161"``), underlying ``u`` is
    ``underlyings[u]``, asset ``a`` is ``assets[a]`` (``asset_canonical`` feeds
    ``aggregation.exposure.CanonicalMap.of``). ``complete`` is False when only listed users
    were read; ``block_time_s`` is each watermark block's time ("now").
    """

    inputs: RiskInputs
    watermark: Mapping[int, int]
    block_time_s: Mapping[int, int]
    chain_ids: tuple[int, ...]
    protocols: tuple[str, ...]
    underlyings: tuple[str, ...]
    assets: tuple[str, ...]
    asset_canonical: Index  # (A,) asset index of each asset's root (wstETH -> ETH)
    history: tuple[PriceHistory, ...]
    warnings: tuple[str, ...]
    complete: bool

    @property
    def now_s(self) -> int:
        """The latest block time of the cut (unix seconds)."""
        return max(self.block_time_s.values(), default=0)


def protocol_labels(chains: Sequence[ChainSpec]) -> dict[tuple[int, str], str]:
    """``(chain id, contract address) -> "options@42161"`` (the contract name when a chain
    has two markets of one kind)."""
    labels: dict[tuple[int, str], str] = {}
    for chain in chains:
        for contract in chain.contracts:
            kind = PROTOCOL_KINDS.get(contract.kind)
            if kind is not None:
                twins = len(chain.contracts_of(contract.kind)) > 1
                label = f"{contract.name if twins else kind}@{chain.chain_id}"
                labels[(chain.chain_id, contract.address)] = label
    return labels


def build_snapshot(
    registry: Registry,
    chains: Sequence[ChainRows],
    *,
    users: Sequence[str] | None = None,
    history: Sequence[PriceHistory] = (),
    marks: MarkParams | None = None,
) -> Snapshot:
    """The snapshot of ``chains`` (in registry order): every account found, or ``users``.

    Raises :class:`MissingPriceError` when a held asset or underlying has no price.
    """
    builder = _Builder(registry, chains, marks or MarkParams())
    for i, rows in enumerate(chains):
        builder.add_chain(i, rows)
    inputs = builder.inputs(None if users is None else sorted({checksummed(u) for u in users}))
    by_name = {h.underlying: h for h in history}
    empty = np.zeros(0, dtype=np.int64)
    return Snapshot(
        inputs=inputs,
        watermark={r.chain_id: r.block for r in chains},
        block_time_s={r.chain_id: r.now_s for r in chains},
        chain_ids=tuple(r.chain_id for r in chains),
        protocols=tuple(builder.protocols),
        underlyings=tuple(builder.underlyings),
        assets=(*builder.assets, CASH_ASSET),
        asset_canonical=builder.asset_canonical,
        history=tuple(
            by_name.get(u, PriceHistory(u, 0, empty, np.zeros(0))) for u in builder.underlyings
        ),
        warnings=tuple(builder.warnings),
        complete=users is None,
    )


# ---------------------------------------------------------------- vectorised helpers


def _floats(values: Sequence[Any]) -> Float:
    """Int256 values (decimal text on SQLite, Decimal on PostgreSQL) as float64."""
    return np.asarray(values, dtype=np.float64).reshape(len(values))


def _lookup(keys: Any, table: Mapping[Any, Any], default: Any = -1) -> NDArray[Any]:
    """``table[key]`` per key, with one dict look-up per *distinct* key."""
    if len(keys) == 0:
        return np.asarray([], dtype=np.asarray(default).dtype)
    distinct, inverse = np.unique(np.asarray(keys, dtype=str), return_inverse=True)
    return np.asarray([table.get(str(k), default) for k in distinct])[inverse]


def _pairs(a: Sequence[Any], b: Sequence[Any]) -> NDArray[np.str_]:
    """Keys ``"a|b"`` per row, vectorised."""
    return np.char.add(np.char.add(np.asarray(a, dtype=str), "|"), np.asarray(b, dtype=str))


def _columns(table: Table, n: int) -> tuple[tuple[Any, ...], ...]:
    return table if table else ((),) * n


def _full(n: int, value: int) -> Index:
    return np.full(n, value, dtype=np.intp)


_BOOKS: dict[str, tuple[type[Any], tuple[str, ...]]] = {
    # book -> (class, sort keys after user: a total order of the rows, whatever the database)
    "options": (
        OptionPositions,
        ("chain", "protocol", "underlying", "expiry_years", "strike_usd", "is_call", "size"),
    ),
    "perps": (PerpPositions, ("chain", "protocol", "underlying", "size", "open_notional_usd")),
    "collateral": (CollateralPositions, ("chain", "protocol", "asset", "amount")),
    "supplies": (SupplyPositions, ("chain", "protocol", "asset", "amount")),
    "borrows": (BorrowPositions, ("chain", "protocol", "asset", "amount")),
}


class _Builder:
    """Marks over all chains, then books chain by chain, then one :class:`RiskInputs`."""

    def __init__(self, registry: Registry, chains: Sequence[ChainRows], marks: MarkParams):
        self.registry, self.marks = registry, marks
        self.specs = {c.chain_id: registry.chain(c.chain_id) for c in chains}
        self.chains = chains
        self.warnings: list[str] = []
        self.assets = [a.asset_id for a in registry.assets]
        labels = protocol_labels(list(self.specs.values()))
        self.protocols = list(labels.values())
        self.protocol_of = {key: i for i, key in enumerate(labels)}
        self.price = self._asset_prices()
        root = [self.assets.index(registry.root_asset(a).asset_id) for a in self.assets]
        self.asset_canonical = np.array([*root, len(root)], dtype=np.intp)  # CASH: its own root
        risky = [
            i for i, a in enumerate(registry.assets)
            if a.is_root and a.peg is None and np.isfinite(self.price[i])
        ]  # fmt: skip
        self.underlyings = [self.assets[i] for i in risky]
        self.spot = self.price[risky]
        self.carry = np.array([marks.carry_annual.get(u, 0.0) for u in self.underlyings])
        self.asset_underlying = np.array(
            [risky.index(r) if r in risky else -1 for r in root] + [-1], dtype=np.intp
        )  # the last entry is CASH_ASSET's
        # asset id (also an option underlying's text) -> underlying index, -1: none
        self.underlying_of: dict[str, int] = {
            a: int(self.asset_underlying[i]) for i, a in enumerate(self.assets)
        }
        self.unpriced = {
            a.asset_id
            for i, a in enumerate(registry.assets)
            if a.is_root and np.isnan(self.price[i])
        }
        self.books: dict[str, dict[str, list[NDArray[Any]]]] = {b: {} for b in _BOOKS}
        self.rules = self._rules(labels)

    def _rules(self, labels: Mapping[tuple[int, str], str]) -> ProtocolRules:
        """Default rates; options markets' from ``marks``; perps margin at par."""
        rules = ProtocolRules.uniform(max(1, len(labels)), len(self.underlyings), OnchainRates())
        kinds: dict[tuple[int, str], ContractKind] = {
            (c.chain_id, c.address): c.kind for s in self.specs.values() for c in s.contracts
        }
        for i, (key, label) in enumerate(labels.items()):
            kind = kinds[key]
            if kind == ContractKind.OPTIONS_MARKET:
                bps = self.marks.options_bps_by_protocol.get(label, self.marks.options_bps)
                rules.option_mm_rate[i], rules.option_im_rate[i] = bps[0] / _BPS, bps[1] / _BPS
                rules.option_penalty_rate[i] = bps[2] / _BPS
            rules.collateral_at_par[i] = kind == ContractKind.PERPS_MARKET
        return rules

    def _perp_rules(self, rows: ChainRows, protocols: Mapping[str, int]) -> None:
        """Each listed perps market's rates, on its protocol and underlying."""
        feeds = self.specs[rows.chain_id].contracts_of(ContractKind.PRICE_FEED)
        feed_asset: dict[str, str | None] = {f.address: f.asset_id for f in feeds}
        r = self.rules
        for (protocol, market, name), value in rows.params.items():
            p = protocols.get(protocol, -1)
            if name != "mm_bps" or p < 0 or not r.collateral_at_par[p]:
                continue
            asset = feed_asset.get(rows.params.get((protocol, market, "feed"), "")) or market
            u = self.underlying_of.get(str(asset).split("-")[0], -1)
            if u < 0:
                continue
            get = rows.params.get
            r.perp_mm_rate[p, u] = float(value) / _BPS
            r.perp_im_rate[p, u] = float(get((protocol, market, "im_bps"), value)) / _BPS
            fee = get((protocol, market, "liquidation_fee_bps"), r.perp_fee_rate[p, u] * _BPS)
            r.perp_fee_rate[p, u] = float(fee) / _BPS

    def _asset_prices(self) -> Float:
        quotes: dict[str, list[float]] = {}
        scale = 10.0**self.marks.feed_decimals
        for rows in self.chains:
            for feed in self.specs[rows.chain_id].contracts_of(ContractKind.PRICE_FEED):
                if feed.asset_id is not None and feed.address in rows.feed_answers:
                    answer = float(rows.feed_answers[feed.address]) / scale
                    quotes.setdefault(feed.asset_id, []).append(answer)
        price = np.full(len(self.assets) + 1, np.nan)
        price[-1] = 1.0  # CASH_ASSET
        for i, asset in enumerate(self.registry.assets):
            q = quotes.get(asset.asset_id, [])
            if q:
                price[i] = float(np.median(q))
                if max(q) > min(q) * (1.0 + self.marks.price_tolerance):
                    self.warnings.append(
                        f"{asset.asset_id}: chains disagree ({min(q):.6g} to {max(q):.6g} "
                        f"USD); using the median {price[i]:.6g}"
                    )
            elif asset.peg is not None:
                price[i] = 1.0
        for i, asset in enumerate(self.registry.assets):
            root = self.registry.root_asset(asset.asset_id).asset_id
            if np.isnan(price[i]) and root != asset.asset_id:
                price[i] = price[self.assets.index(root)]
                self.warnings.append(f"{asset.asset_id}: no oracle round; priced as {root}")
        return price

    def _add(self, book: str, **columns: NDArray[Any]) -> None:
        for name, values in columns.items():
            self.books[book].setdefault(name, []).append(values)

    def _known(self, ok: NDArray[np.bool_], what: str, chain_id: int, keys: Any) -> None:
        if not ok.all() and (gone := self.unpriced.intersection(map(str, keys[~ok]))):
            raise MissingPriceError(
                f"chain {chain_id}: no oracle price for {', '.join(sorted(gone))} on any chain "
                "at the watermark; index its feed (feed_<asset>_usd) or list one in rtrm.toml"
            )
        if not ok.all():
            bad = sorted({str(k) for k in np.asarray(keys, dtype=str)[~ok]})
            self.warnings.append(
                f"chain {chain_id}: {int((~ok).sum())} row(s) skipped, unknown {what} "
                f"{', '.join(bad[:3])}; add it to rtrm.toml"
            )

    # ------------------------------------------------------------ books of one chain

    def add_chain(self, ci: int, rows: ChainRows) -> None:
        spec, c = self.specs[rows.chain_id], rows.chain_id
        protocols = {a: i for (cc, a), i in self.protocol_of.items() if cc == c}
        token_asset = {t.address: self.assets.index(t.asset_id) for t in spec.tokens}
        token_decimals = {t.address: t.decimals for t in spec.tokens}
        account, protocol, pkind, kind, asset, amount = _columns(rows.balances, 6)
        p, a = _lookup(protocol, protocols), _lookup(asset, token_asset)
        keys = _pairs(protocol, asset)
        ok = (p >= 0) & (a >= 0)
        self._known(ok, "protocol or token", c, keys)
        decimals = _lookup(asset, token_decimals, 0).astype(np.float64)
        units = _floats(amount) / 10.0**decimals
        kinds, pkinds = np.asarray(kind, dtype=str), np.asarray(pkind, dtype=str)

        def param(name: str, default: float, mask: NDArray[np.bool_]) -> Float:
            table = {
                f"{r}|{s}": float(v) / _BPS for (r, s, n), v in rows.params.items() if n == name
            }
            out: Float = _lookup(keys[mask], table, default).astype(np.float64)
            return out

        margin = kinds == "margin"
        for book, mask in (
            ("supplies", ok & (kinds == "collateral") & (pkinds == "lending")),
            ("borrows", ok & (kinds == "debt")),
            ("collateral", ok & (((kinds == "collateral") & (pkinds == "options")) | margin)),
        ):
            cols = {
                "account": np.asarray(account, dtype=str)[mask], "protocol": p[mask],
                "chain": _full(int(mask.sum()), ci), "asset": a[mask], "amount": units[mask],
            }  # fmt: skip
            if book == "supplies":  # missing reserve settings count the supply for nothing
                cols["liquidation_threshold"] = param("liquidation_threshold_bps", 0.0, mask)
                cols["ltv"] = param("ltv_bps", 0.0, mask)
                cols["liquidation_bonus"] = param("liquidation_bonus_bps", 1.0, mask)
            elif book == "collateral":  # perps margin has no haircut
                haircut = param("haircut_bps", 1.0, mask)
                cols["haircut"] = np.where(margin[mask], 0.0, haircut)
            self._add(book, **cols)
        self._options(ci, rows, protocols)
        self._perps(ci, rows, protocols)
        self._perp_rules(rows, protocols)

    def _options(self, ci: int, rows: ChainRows, protocols: Mapping[str, int]) -> None:
        account, protocol, size_wad, und, expiry, strike_wad, is_call, settle = _columns(
            rows.options, 8
        )
        p, u = _lookup(protocol, protocols), _lookup(und, self.underlying_of)
        ok = (p >= 0) & (u >= 0)
        self._known(ok, "market or underlying", rows.chain_id, np.asarray(und, dtype=str))
        size, strike = _floats(size_wad) / WAD, _floats(strike_wad) / WAD
        calls = np.asarray(is_call, dtype=np.bool_).reshape(len(account))
        settled = np.asarray([s is not None for s in settle], dtype=np.bool_)
        at = _floats([0 if s is None else s for s in settle]) / WAD
        expiry_s = np.asarray(expiry, dtype=np.int64).reshape(len(account))
        users = np.asarray(account, dtype=str)
        cash = ok & settled
        n_cash = int(cash.sum())
        payoff = np.maximum(np.where(calls, at - strike, strike - at), 0.0)
        self._add(
            "collateral", account=users[cash], chain=_full(n_cash, ci), protocol=p[cash],
            asset=_full(n_cash, len(self.assets)), amount=(size * payoff)[cash],
            haircut=np.zeros(n_cash),
        )  # fmt: skip
        live = ok & ~settled
        u, k, e = u[live].astype(np.intp), strike[live], expiry_s[live]
        t = np.maximum((e - rows.now_s) / SECONDS_PER_YEAR, 0.0)
        forward = self.spot[u] * np.exp(self.carry[u] * t)
        self._add(
            "options", account=users[live], underlying=u, chain=_full(u.shape[0], ci),
            protocol=p[live], size=size[live], strike_usd=k, expiry_years=t,
            is_call=calls[live], vol_annual=self._vols(rows, u, k, forward, t, e),
        )  # fmt: skip

    def _vols(  # noqa: PLR0917 - one option book, column by column
        self, rows: ChainRows, u: Index, strike: Float, forward: Float, t: Float,
        expiry_s: NDArray[np.int64],
    ) -> Float:  # fmt: skip
        vol = np.full(u.shape[0], self.marks.fallback_vol_annual)
        und, *params = (np.asarray(col, dtype=object) for col in _columns(rows.vols, 9))
        slice_u = _lookup(tuple(und), self.underlying_of)
        for k in np.unique(u):
            on, mine = u == k, slice_u == k
            name = f"chain {rows.chain_id} {self.underlyings[k]}"
            if not mine.any():
                if (t[on] > 0).any():
                    self.warnings.append(f"{name}: no vol surface; fallback vol used")
                continue
            expiry, updated, atm, a, b, rho, m, sigma = ([int(v) for v in c[mine]] for c in params)
            try:
                surface = VolSurface.from_wad(
                    expiry_s=expiry, updated_at_s=updated, atm_vol_wad=atm, svi_a=a, svi_b=b,
                    svi_rho=rho, svi_m=m, svi_sigma=sigma, now_s=rows.now_s,
                )  # fmt: skip
                problem = "; ".join(str(v) for v in surface.arbitrage)
            except InvalidSurfaceError as exc:
                problem = str(exc)
            if not problem:
                vol[on] = surface.vol(strike[on], forward[on], t[on])
                continue
            self.warnings.append(f"{name}: vol surface rejected ({problem}); ATM vols used")
            published = np.asarray(expiry, dtype=np.int64)
            order = np.argsort(published)
            after = np.searchsorted(published[order], expiry_s[on])
            before = np.clip(after - 1, 0, order.size - 1)
            after = np.clip(after, 0, order.size - 1)
            gap = np.abs(published[order][after] - expiry_s[on])
            nearest = np.where(
                gap <= np.abs(expiry_s[on] - published[order][before]), after, before
            )
            vol[on] = _floats(atm)[order][nearest] / WAD
        return vol

    def _perps(self, ci: int, rows: ChainRows, protocols: Mapping[str, int]) -> None:
        account, protocol, market, size_wad, notional_wad, entry_wad = _columns(rows.perps, 6)
        feeds = self.specs[rows.chain_id].contracts_of(ContractKind.PRICE_FEED)
        feed_asset: dict[str, str | None] = {f.address: f.asset_id for f in feeds}
        keys = _pairs(protocol, market)
        asset: dict[str, str] = {}
        index: dict[str, float] = {}
        for key in map(str, np.unique(keys)):  # per market: its feed's asset, its index now
            pr, mk = key.split("|", 1)
            feed = feed_asset.get(rows.params.get((pr, mk, "feed"), ""))
            asset[key] = feed or mk.split("-")[0]  # "ETH-PERP" -> ETH without a listed feed
            index[key] = float(rows.funding_index_wad.get((pr, mk), 0)) / WAD
        names = _lookup(keys, asset, "")
        p, u = _lookup(protocol, protocols), _lookup(names, self.underlying_of)
        ok = (p >= 0) & (u >= 0)
        self._known(ok, "market", rows.chain_id, names)
        size = _floats(size_wad) / WAD
        owed = size * (_lookup(keys, index, 0.0).astype(np.float64) - _floats(entry_wad) / WAD)
        self._add(
            "perps", account=np.asarray(account, dtype=str)[ok], underlying=u[ok],
            chain=_full(int(ok.sum()), ci), protocol=p[ok], size=size[ok],
            open_notional_usd=(_floats(notional_wad) / WAD)[ok], funding_usd=-owed[ok],
        )  # fmt: skip

    # ------------------------------------------------------------ one RiskInputs

    def inputs(self, users: Sequence[str] | None) -> RiskInputs:
        books = {
            b: {n: np.concatenate(parts) for n, parts in c.items()} for b, c in self.books.items()
        }
        if users is None:
            users = sorted(set().union(*(set(c["account"].tolist()) for c in books.values())))
        ordered = np.asarray(users, dtype=str)
        built: dict[str, Any] = {}
        for book, (cls, keys) in _BOOKS.items():
            cols = books[book]
            account = cols.pop("account")
            at = np.minimum(np.searchsorted(ordered, account), max(len(users) - 1, 0))
            mine = ordered[at] == account if users else np.zeros(account.shape, np.bool_)
            user = at.astype(np.intp)[mine]
            cols = {n: v[mine] for n, v in cols.items()}
            order = np.lexsort([cols[k] for k in reversed(keys)] + [user])
            built[book] = cls(user=user[order], **{n: v[order] for n, v in cols.items()})
        self._check_prices(built)
        return RiskInputs.build(
            tuple(users), spot_usd=self.spot, carry_annual=self.carry,
            asset_price_usd=np.nan_to_num(self.price), asset_underlying=self.asset_underlying,
            n_chains=max(1, len(self.chains)), n_protocols=max(1, len(self.protocols)),
            rules=self.rules, **built,
        )  # fmt: skip

    def _check_prices(self, built: Mapping[str, Any]) -> None:
        held = np.concatenate([built[b].asset for b in ("collateral", "supplies", "borrows")])
        missing = {self.assets[a] for a in np.unique(held) if not np.isfinite(self.price[a])}
        if missing:
            raise MissingPriceError(
                f"no oracle price for {', '.join(sorted(missing))} on any chain at the "
                "watermark; index its feed (feed_<asset>_usd) or list one in rtrm.toml"
            )
