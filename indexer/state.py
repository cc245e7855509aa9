"""From decoded events to the store's rows: facts and block-range-versioned state.

:class:`ChainState` holds a chain's *current* derived state in memory (every open
version: key → row id and values), loaded from the store when the indexer starts and
after a rollback. Applying a range of decoded logs (:meth:`ChainState.apply`) produces a
:class:`Changes`: fact rows to insert, new versions to insert and old versions to close,
ready for :class:`indexer.store.BulkWriter`. Nothing touches the database here.

Versioning: a change at block ``b`` closes the key's open version with ``valid_to = b``
and opens a new one with ``valid_from = b``; several changes in the same block collapse
into one version (the state *after* the block); a value of zero closes the key without
a new version. So "as of block N" is ``valid_from <= N AND (valid_to IS NULL OR
valid_to > N)``.

How each protocol's events move balances (amounts in token units, sizes WAD):

- options: collateral ± deposits, withdrawals, seizures, credits, premiums (a buyer pays,
  a writer receives, in the quote token) and positive settlement payoffs; positions take
  ``newSize`` and go to zero when settled or liquidated;
- lending: supply/withdraw move collateral, borrow/repay debt; a liquidation repays
  ``debtToCover`` and seizes collateral; ``DeficitCreated`` writes the remaining debt off;
- perps: ``MarginBalance`` and ``PositionState`` carry the new values; a liquidation
  closes the position.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import Connection, text

__all__ = [
    "FACT_COLUMNS",
    "VERSION_COLUMNS",
    "ChainState",
    "Changes",
    "ContractInfo",
    "LogLike",
]

_FACT = ("chain_id", "block_number", "tx_hash", "log_index")
FACT_COLUMNS: dict[str, tuple[str, ...]] = {
    "oracle_price": (*_FACT, "feed", "round_id", "answer", "updated_at"),
    "vol_update": (
        *_FACT,
        "oracle",
        "underlying",
        "expiry",
        "atm_vol_wad",
        "svi_a_wad",
        "svi_b_wad",
        "svi_rho_wad",
        "svi_m_wad",
        "svi_sigma_wad",
        "updated_at",
    ),
    "funding_update": (
        *_FACT,
        "protocol",
        "market",
        "funding_rate_wad",
        "funding_index_wad",
        "price_wad",
    ),
    "option_series": (
        *_FACT,
        "protocol",
        "series_id",
        "underlying",
        "expiry",
        "strike_wad",
        "is_call",
    ),
    "series_settlement": (*_FACT, "protocol", "series_id", "settlement_price_wad"),
    "liquidation": (
        *_FACT,
        "protocol",
        "protocol_kind",
        "account",
        "liquidator",
        "debt_asset",
        "collateral_asset",
        "debt_repaid",
        "collateral_seized",
    ),
    "bad_debt": (*_FACT, "protocol", "protocol_kind", "account", "asset", "amount"),
    "insurance_event": (*_FACT, "fund", "kind", "account", "claim_id", "amount", "shares"),
    "protocol_param": (*_FACT, "protocol", "subject", "name", "value"),
}

_VERSION = ("chain_id", "row_id", "protocol", "account", "valid_from", "valid_to")
# Per versioned table: the key columns after (protocol, account), then the value columns.
_KEYS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "account_balance": (("kind", "asset"), ("protocol_kind", "amount")),
    "option_position": (("series_id",), ("size_wad",)),
    "perp_position": (("market",), ("size_wad", "open_notional_wad", "entry_funding_index_wad")),
}
VERSION_COLUMNS: dict[str, tuple[str, ...]] = {
    table: (*_VERSION, *keys, *values) for table, (keys, values) in _KEYS.items()
}
_ZERO_VALUE = {"account_balance": 1, "option_position": 0, "perp_position": 0}  # index of
# the value that, when zero, means "no position" (amount; size)

Key = tuple[Any, ...]  # (protocol, account, *key columns)


class LogLike(Protocol):
    """What the state needs of a decoded log (``indexer.decode.DecodedLog``)."""

    @property
    def block_number(self) -> int: ...
    @property
    def tx_hash(self) -> str: ...
    @property
    def log_index(self) -> int: ...
    @property
    def address(self) -> str: ...
    @property
    def event(self) -> str: ...
    @property
    def args(self) -> Mapping[str, Any]: ...


@dataclass(frozen=True, slots=True)
class ContractInfo:
    """What the state must know about an indexed contract: its kind (``options``,
    ``lending``, ``perps``, ``price_feed``, ``vol_oracle``, ``insurance_fund``, …) and,
    for markets that hold one, the quote token."""

    kind: str
    quote_token: str | None = None


@dataclass(slots=True)
class _Version:
    row_id: int
    valid_from: int
    values: tuple[Any, ...]
    pending: list[Any] | None = None  # the row to insert, while not yet written


@dataclass(slots=True)
class Changes:
    """Rows one indexed range writes."""

    facts: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)
    inserts: dict[str, list[list[Any]]] = field(default_factory=dict)
    closes: dict[str, list[tuple[int, int]]] = field(default_factory=dict)

    def fact(self, table: str, row: tuple[Any, ...]) -> None:
        self.facts.setdefault(table, []).append(row)

    @property
    def rows(self) -> int:
        return (
            sum(map(len, self.facts.values()))
            + sum(map(len, self.inserts.values()))
            + sum(map(len, self.closes.values()))
        )


class ChainState:
    """The open versions of one chain's derived state, and the rules that change them."""

    def __init__(self, chain_id: int, contracts: Mapping[str, ContractInfo]) -> None:
        self.chain_id = chain_id
        self.contracts = dict(contracts)
        self.current: dict[str, dict[Key, _Version]] = {t: {} for t in _KEYS}
        self.next_row_id = 1
        self._pending: list[_Version] = []  # versions whose row the current apply inserts
        self._handlers: dict[tuple[str, str], Callable[[Changes, LogLike, str], None]] = {
            ("options", "CollateralDeposited"): self._options_collateral(+1),
            ("options", "CollateralWithdrawn"): self._options_collateral(-1),
            ("options", "CollateralSeized"): self._options_collateral(-1),
            ("options", "CollateralCredited"): self._options_collateral(+1),
            ("options", "PositionOpened"): self._options_trade,
            ("options", "PositionClosed"): self._options_trade,
            ("options", "PositionSettled"): self._options_settled,
            ("options", "PositionLiquidated"): self._options_position_gone,
            ("options", "Liquidated"): self._options_liquidated,
            ("options", "BadDebt"): self._options_bad_debt,
            ("options", "SeriesCreated"): self._series_created,
            ("options", "SeriesSettled"): self._series_settled,
            ("options", "CollateralListed"): self._collateral_listed,
            ("options", "UnderlyingListed"): self._underlying_listed,
            ("lending", "Supply"): self._lending("collateral", "onBehalfOf", +1),
            ("lending", "Withdraw"): self._lending("collateral", "user", -1),
            ("lending", "Borrow"): self._lending("debt", "onBehalfOf", +1),
            ("lending", "Repay"): self._lending("debt", "user", -1),
            ("lending", "LiquidationCall"): self._lending_liquidation,
            ("lending", "DeficitCreated"): self._lending_deficit,
            ("lending", "ReserveInitialized"): self._reserve_initialized,
            ("perps", "MarginBalance"): self._perps_margin,
            ("perps", "PositionState"): self._perps_position,
            ("perps", "PositionLiquidated"): self._perps_liquidated_position,
            ("perps", "Liquidated"): self._perps_liquidated,
            ("perps", "FundingUpdated"): self._funding_updated,
            ("perps", "MarketListed"): self._market_listed,
            ("price_feed", "AnswerUpdated"): self._answer_updated,
            ("vol_oracle", "VolSurfaceUpdated"): self._vol_updated,
            ("insurance_fund", "Deposited"): self._insurance("deposit"),
            ("insurance_fund", "WithdrawalRequested"): self._insurance("withdrawal_request"),
            ("insurance_fund", "Withdrawn"): self._insurance("withdrawal"),
            ("insurance_fund", "ClaimPaid"): self._insurance("claim_paid"),
        }

    # ------------------------------------------------------------ loading

    def load(self, conn: Connection) -> None:
        """Read the open versions of this chain (after start or a rollback)."""
        self.next_row_id = 1
        for table, (keys, values) in _KEYS.items():
            current: dict[Key, _Version] = {}
            columns = ", ".join(("row_id", "valid_from", "protocol", "account", *keys, *values))
            rows = conn.execute(
                text(f"SELECT {columns} FROM {table} WHERE chain_id = :c AND valid_to IS NULL"),
                {"c": self.chain_id},
            )
            split = 4 + len(keys)
            for row in rows:
                key = tuple(_from_db(v) for v in row[2:split])
                current[key] = _Version(row[0], row[1], tuple(_from_db(v) for v in row[split:]))
            self.current[table] = current
            top = conn.execute(
                text(f"SELECT MAX(row_id) FROM {table} WHERE chain_id = :c"), {"c": self.chain_id}
            ).scalar()
            self.next_row_id = max(self.next_row_id, int(top or 0) + 1)

    # ------------------------------------------------------------ applying

    def apply(self, logs: Iterable[LogLike]) -> Changes:
        """The rows that ``logs`` (in block and log order) write."""
        changes = Changes()
        handlers = self._handlers
        contracts = self.contracts
        for log in logs:
            info = contracts.get(log.address)
            if info is None:
                continue
            handler = handlers.get((info.kind, log.event))
            if handler is not None:
                handler(changes, log, log.address)
        for version in self._pending:  # written by the caller from now on
            version.pending = None
        self._pending.clear()
        return changes

    def _value(self, table: str, key: Key, index: int = 0) -> int:
        version = self.current[table].get(key)
        return int(version.values[index]) if version is not None else 0

    def _set(
        self, changes: Changes, table: str, key: Key, values: tuple[Any, ...], block: int
    ) -> None:
        versions = self.current[table]
        old = versions.get(key)
        if old is not None and old.values == values:
            return
        gone = values[_ZERO_VALUE[table]] == 0
        if old is not None:
            if old.pending is not None and old.valid_from == block:
                if gone:  # born and dead in the same block: never written
                    changes.inserts[table].remove(old.pending)
                    del versions[key]
                else:
                    old.pending[len(_VERSION) + len(key) - 2 :] = values
                    old.values = values
                return
            if old.pending is not None:
                old.pending[5] = block  # valid_to of a row this range inserts
            else:
                changes.closes.setdefault(table, []).append((old.row_id, block))
            del versions[key]
        if gone:
            return
        row = [self.chain_id, self.next_row_id, *key[:2], block, None, *key[2:], *values]
        changes.inserts.setdefault(table, []).append(row)
        version = _Version(self.next_row_id, block, values, row)
        versions[key] = version
        self._pending.append(version)
        self.next_row_id += 1

    def _balance(  # noqa: PLR0917 - the six facts of a balance change
        self,
        changes: Changes,
        log: LogLike,
        protocol: str,
        account: str,
        kind: str,
        asset: str,
        delta: int,
    ) -> None:
        info = self.contracts[protocol]
        key = (protocol, account, kind, asset)
        amount = self._value("account_balance", key, 1) + delta
        self._set(changes, "account_balance", key, (info.kind, amount), log.block_number)

    def _fact_head(self, log: LogLike) -> tuple[Any, ...]:
        return (self.chain_id, log.block_number, log.tx_hash, log.log_index)

    # ------------------------------------------------------------ options

    def _options_collateral(self, sign: int) -> Callable[[Changes, LogLike, str], None]:
        def handle(changes: Changes, log: LogLike, protocol: str) -> None:
            a = log.args
            self._balance(
                changes, log, protocol, a["user"], "collateral", a["token"], sign * a["amount"]
            )

        return handle

    def _options_trade(self, changes: Changes, log: LogLike, protocol: str) -> None:
        a = log.args
        quote = self._quote(protocol)
        premium = -a["premium"] if a["sizeDelta"] > 0 else a["premium"]
        if premium:
            self._balance(changes, log, protocol, a["user"], "collateral", quote, premium)
        key = (protocol, a["user"], a["seriesId"])
        self._set(changes, "option_position", key, (a["newSize"],), log.block_number)

    def _options_settled(self, changes: Changes, log: LogLike, protocol: str) -> None:
        a = log.args
        if a["payoff"] > 0:
            quote = self._quote(protocol)
            self._balance(changes, log, protocol, a["user"], "collateral", quote, a["payoff"])
        self._options_position_gone(changes, log, protocol)

    def _options_position_gone(self, changes: Changes, log: LogLike, protocol: str) -> None:
        key = (protocol, log.args["user"], log.args["seriesId"])
        self._set(changes, "option_position", key, (0,), log.block_number)

    def _options_liquidated(self, changes: Changes, log: LogLike, protocol: str) -> None:
        a = log.args
        row = (protocol, "options", a["user"], a["liquidator"], self._quote(protocol), None)
        changes.fact("liquidation", (*self._fact_head(log), *row, a["penalty"], 0))

    def _options_bad_debt(self, changes: Changes, log: LogLike, protocol: str) -> None:
        a = log.args
        row = (protocol, "options", a["user"], self._quote(protocol), a["amount"])
        changes.fact("bad_debt", (*self._fact_head(log), *row))

    def _series_created(self, changes: Changes, log: LogLike, protocol: str) -> None:
        a = log.args
        row = (protocol, a["seriesId"], _text(a["underlying"]), a["expiry"], a["strikeWad"])
        changes.fact("option_series", (*self._fact_head(log), *row, a["isCall"]))

    def _series_settled(self, changes: Changes, log: LogLike, protocol: str) -> None:
        a = log.args
        row = (protocol, a["seriesId"], a["settlementPriceWad"])
        changes.fact("series_settlement", (*self._fact_head(log), *row))

    def _collateral_listed(self, changes: Changes, log: LogLike, protocol: str) -> None:
        a = log.args
        self._params(
            changes, log, protocol, a["token"], feed=a["feed"], haircut_bps=a["haircutBps"]
        )

    def _underlying_listed(self, changes: Changes, log: LogLike, protocol: str) -> None:
        a = log.args
        self._params(changes, log, protocol, _text(a["underlying"]), feed=a["feed"])

    def _quote(self, protocol: str) -> str:
        quote = self.contracts[protocol].quote_token
        if quote is None:
            raise KeyError(f"chain {self.chain_id}: market {protocol} has no quote token")
        return quote

    # ------------------------------------------------------------ lending

    def _lending(self, kind: str, who: str, sign: int) -> Callable[[Changes, LogLike, str], None]:
        def handle(changes: Changes, log: LogLike, protocol: str) -> None:
            a = log.args
            self._balance(changes, log, protocol, a[who], kind, a["reserve"], sign * a["amount"])

        return handle

    def _lending_liquidation(self, changes: Changes, log: LogLike, protocol: str) -> None:
        a = log.args
        user, debt_asset, coll_asset = a["user"], a["debtAsset"], a["collateralAsset"]
        repaid, seized = a["debtToCover"], a["liquidatedCollateralAmount"]
        self._balance(changes, log, protocol, user, "debt", debt_asset, -repaid)
        self._balance(changes, log, protocol, user, "collateral", coll_asset, -seized)
        row = (protocol, "lending", user, a["liquidator"], debt_asset, coll_asset, repaid, seized)
        changes.fact("liquidation", (*self._fact_head(log), *row))

    def _lending_deficit(self, changes: Changes, log: LogLike, protocol: str) -> None:
        a = log.args
        user, asset, amount = a["user"], a["debtAsset"], a["amountCreated"]
        self._balance(changes, log, protocol, user, "debt", asset, -amount)
        changes.fact("bad_debt", (*self._fact_head(log), protocol, "lending", user, asset, amount))

    def _reserve_initialized(self, changes: Changes, log: LogLike, protocol: str) -> None:
        a = log.args
        self._params(
            changes,
            log,
            protocol,
            a["asset"],
            feed=a["feed"],
            ltv_bps=a["ltvBps"],
            liquidation_threshold_bps=a["liquidationThresholdBps"],
            liquidation_bonus_bps=a["liquidationBonusBps"],
            borrowable=int(a["borrowable"]),
        )

    # ------------------------------------------------------------ perps

    def _perps_margin(self, changes: Changes, log: LogLike, protocol: str) -> None:
        a = log.args
        key = (protocol, a["user"], "margin", self._quote(protocol))
        self._set(changes, "account_balance", key, ("perps", a["margin"]), log.block_number)

    def _perps_position(self, changes: Changes, log: LogLike, protocol: str) -> None:
        a = log.args
        values = (a["sizeWad"], a["openNotionalWad"], a["entryFundingIndexWad"])
        key = (protocol, a["user"], _text(a["market"]))
        self._set(changes, "perp_position", key, values, log.block_number)

    def _perps_liquidated_position(self, changes: Changes, log: LogLike, protocol: str) -> None:
        key = (protocol, log.args["user"], _text(log.args["market"]))
        self._set(changes, "perp_position", key, (0, 0, 0), log.block_number)

    def _perps_liquidated(self, changes: Changes, log: LogLike, protocol: str) -> None:
        a = log.args
        quote = self._quote(protocol)
        row = (protocol, "perps", a["user"], a["liquidator"], quote, None, a["fee"], 0)
        changes.fact("liquidation", (*self._fact_head(log), *row))
        if a["badDebt"] > 0:
            bad = (protocol, "perps", a["user"], quote, a["badDebt"])
            changes.fact("bad_debt", (*self._fact_head(log), *bad))

    def _funding_updated(self, changes: Changes, log: LogLike, protocol: str) -> None:
        a = log.args
        row = (protocol, _text(a["market"]), a["fundingRateWad"], a["fundingIndexWad"])
        changes.fact("funding_update", (*self._fact_head(log), *row, a["priceWad"]))

    def _market_listed(self, changes: Changes, log: LogLike, protocol: str) -> None:
        a = log.args
        self._params(
            changes,
            log,
            protocol,
            _text(a["market"]),
            feed=a["feed"],
            mm_bps=a["mmBps"],
            im_bps=a["imBps"],
            liquidation_fee_bps=a["liquidationFeeBps"],
        )

    # ------------------------------------------------------------ oracles, insurance

    def _answer_updated(self, changes: Changes, log: LogLike, protocol: str) -> None:
        a = log.args
        row = (protocol, a["roundId"], a["current"], a["updatedAt"])
        changes.fact("oracle_price", (*self._fact_head(log), *row))

    def _vol_updated(self, changes: Changes, log: LogLike, protocol: str) -> None:
        a = log.args
        row = (
            protocol,
            _text(a["underlying"]),
            a["expiry"],
            a["atmVolWad"],
            a["sviA"],
            a["sviB"],
            a["sviRho"],
            a["sviM"],
            a["sviSigma"],
            a["updatedAt"],
        )
        changes.fact("vol_update", (*self._fact_head(log), *row))

    def _insurance(self, kind: str) -> Callable[[Changes, LogLike, str], None]:
        def handle(changes: Changes, log: LogLike, protocol: str) -> None:
            a = log.args
            account = a.get("underwriter") or a["recipient"]
            claim = a.get("claimId")
            row = (protocol, kind, account, claim, a.get("amount", 0), a.get("shares", 0))
            changes.fact("insurance_event", (*self._fact_head(log), *row))

        return handle

    def _params(
        self, changes: Changes, log: LogLike, protocol: str, subject: str, **params: object
    ) -> None:
        for name, value in params.items():
            row = (protocol, subject, name, str(value))
            changes.fact("protocol_param", (*self._fact_head(log), *row))


def _text(value: str) -> str:
    """A bytes32 id (0x-hex, as decoded) as the short ASCII text it encodes ("ETH")."""
    raw = bytes.fromhex(value[2:]).rstrip(b"\0")
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        return value


def _from_db(value: Any) -> Any:
    """Int256 columns come back as text on SQLite and Decimal on PostgreSQL."""
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    if type(value).__name__ == "Decimal":
        return int(value)
    return value
