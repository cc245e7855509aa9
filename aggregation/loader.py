"""Read the store at a watermark vector: the one module of ``aggregation`` that does I/O.

Concept: :func:`load_snapshot` reads a *consistent cut* of the store -- every chain ``c``
as of its block ``b = watermark[c]`` (default: the store's published watermark) -- into one
:class:`~aggregation.snapshot.ChainRows` per chain, and hands them to the pure
:func:`~aggregation.snapshot.build_snapshot` (marks, vols, books; see that module).

As-of reads: a versioned row counts when ``valid_from <= b AND (valid_to IS NULL OR
valid_to > b)``, a fact when ``block_number <= b``; the latest fact per key wins (oracle
round per feed, SVI slice per (underlying, expiry), funding index per market,
``protocol_param`` per (protocol, subject, name)). Rows written above the watermark are
invisible, so indexers may keep writing while a snapshot loads. A rollback *below* the
watermark during the read (a reorg deeper than the cut's distance to the head) is detected
through the ``reorg`` table and raises :class:`SnapshotChangedError`: load again.

"Now" of a chain is the watermark block's timestamp in the ``block`` ledger; for a cut
inside an indexed batch (no timestamp recorded), the later of the last ledger timestamp
and the last oracle ``updated_at`` at or below the block, both lower bounds of its time.
Never the wall clock.

Cost: a handful of indexed queries per chain (balances, options joined to their series,
perps, latest vols, params, one per feed and per perp market), then oracle history per
underlying for tail risk. With ``users`` only those accounts' rows are read (the
incremental path: one user's report reads that user's positions).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sqlalchemy import Connection, bindparam, text

from aggregation.exceptions import AggregationError
from aggregation.snapshot import (
    ChainRows,
    MarkParams,
    PriceHistory,
    Snapshot,
    Table,
    build_snapshot,
    checksummed,
)
from chains.spec import ChainSpec, Registry
from chains.types import ContractKind
from indexer.status import watermark as stored_watermark

__all__ = ["SnapshotChangedError", "SnapshotError", "load_snapshot"]

_AS_OF = "{p}chain_id = :c AND {p}valid_from <= :b AND ({p}valid_to IS NULL OR {p}valid_to > :b)"
_BALANCES = (
    "SELECT account, protocol, protocol_kind, kind, asset, amount FROM account_balance WHERE "
    + _AS_OF.format(p="")
)
_OPTIONS = (
    "SELECT p.account, p.protocol, p.size_wad, s.underlying, s.expiry, s.strike_wad, s.is_call, "
    "(SELECT t.settlement_price_wad FROM series_settlement t WHERE t.chain_id = p.chain_id "
    "AND t.protocol = p.protocol AND t.series_id = p.series_id AND t.block_number <= :b "
    "ORDER BY t.block_number DESC, t.log_index DESC LIMIT 1) "
    "FROM option_position p JOIN option_series s ON s.chain_id = p.chain_id "
    "AND s.protocol = p.protocol AND s.series_id = p.series_id AND s.block_number <= :b "
    "WHERE " + _AS_OF.format(p="p.")
)
_PERPS = (
    "SELECT account, protocol, market, size_wad, open_notional_wad, entry_funding_index_wad "
    "FROM perp_position WHERE " + _AS_OF.format(p="")
)
_VOLS = (
    "SELECT v.underlying, v.expiry, v.updated_at, v.atm_vol_wad, v.svi_a_wad, v.svi_b_wad, "
    "v.svi_rho_wad, v.svi_m_wad, v.svi_sigma_wad FROM vol_update v WHERE v.chain_id = :c "
    "AND v.block_number <= :b AND v.expiry > :now AND NOT EXISTS (SELECT 1 FROM vol_update w "
    "WHERE w.chain_id = v.chain_id AND w.underlying = v.underlying AND w.expiry = v.expiry "
    "AND w.block_number <= :b AND (w.block_number > v.block_number OR "
    "(w.block_number = v.block_number AND w.log_index > v.log_index)))"
)
_PARAMS = (
    "SELECT protocol, subject, name, value FROM protocol_param WHERE chain_id = :c "
    "AND block_number <= :b ORDER BY block_number, log_index"
)
_LATEST_ANSWER = (
    "SELECT answer FROM oracle_price WHERE chain_id = :c AND feed = :f AND block_number <= :b "
    "ORDER BY block_number DESC, log_index DESC LIMIT 1"
)
_LATEST_FUNDING = (
    "SELECT funding_index_wad FROM funding_update WHERE chain_id = :c AND protocol = :p AND "
    "market = :m AND block_number <= :b ORDER BY block_number DESC, log_index DESC LIMIT 1"
)
_HISTORY = (
    "SELECT updated_at, answer FROM oracle_price WHERE chain_id = :c AND feed = :f AND "
    "block_number <= :b AND updated_at >= :since ORDER BY block_number, log_index"
)


class SnapshotError(AggregationError):
    """The store cannot give a snapshot at the requested watermark."""


class SnapshotChangedError(SnapshotError):
    """A rollback below the watermark happened while the snapshot was read; load again."""


def load_snapshot(
    conn: Connection,
    registry: Registry,
    watermark: Mapping[int, int] | None = None,
    *,
    users: Sequence[str] | None = None,
    marks: MarkParams | None = None,
) -> Snapshot:
    """Every account's (or only ``users``') positions as of ``watermark``.

    ``watermark`` defaults to the store's (:func:`indexer.status.watermark`); registry
    chains missing from it are left out. Listed ``users`` are all in the snapshot, with or
    without positions. Raises :class:`SnapshotError` for a watermark the store cannot serve,
    :class:`~aggregation.snapshot.InvalidAddressError` for a malformed or mis-checksummed
    address, :class:`~aggregation.snapshot.MissingPriceError` for a held asset no feed
    prices.
    """
    wanted = None if users is None else sorted({checksummed(u) for u in users})
    cut = _check_watermark(registry, stored_watermark(conn), watermark)
    marks = marks or MarkParams()
    last_reorg = _last_reorg(conn)
    specs = [spec for spec in registry.chains if spec.chain_id in cut]
    chains = [_read_chain(conn, spec, cut[spec.chain_id], wanted) for spec in specs]
    history = [
        _history(conn, specs, chains, asset.asset_id, marks)
        for asset in registry.assets
        if asset.is_root and asset.peg is None
    ]
    if _rolled_back_below(conn, last_reorg, cut):
        raise SnapshotChangedError(
            f"a reorg rolled the store back below the watermark {cut} while it was read; "
            "load the snapshot again"
        )
    return build_snapshot(registry, chains, users=wanted, history=history, marks=marks)


def _check_watermark(
    registry: Registry, current: Mapping[int, int], asked: Mapping[int, int] | None
) -> dict[int, int]:
    configured = set(registry.chain_ids)
    cut = {c: b for c, b in current.items() if c in configured} if asked is None else dict(asked)
    if not cut:
        raise SnapshotError(
            "nothing indexed yet for the chains in rtrm.toml; run `rtrm index --once` first"
        )
    for chain_id, block in cut.items():
        if chain_id not in configured:
            raise SnapshotError(f"watermark names chain {chain_id}, which is not in rtrm.toml")
        if chain_id not in current or block > current[chain_id]:
            raise SnapshotError(
                f"chain {chain_id}: watermark block {block} is above the indexed block "
                f"{current.get(chain_id, 'none')}; use a watermark the store has published"
            )
    return cut


def _last_reorg(conn: Connection) -> int:
    return int(conn.execute(text("SELECT COALESCE(MAX(id), 0) FROM reorg")).scalar_one())


def _rolled_back_below(conn: Connection, after_id: int, cut: Mapping[int, int]) -> bool:
    rows = conn.execute(
        text("SELECT chain_id, ancestor FROM reorg WHERE id > :i"), {"i": after_id}
    ).all()
    return any(int(chain) in cut and int(anc) < cut[int(chain)] for chain, anc in rows)


def _table(
    conn: Connection, sql: str, users: list[str] | None, account: str, **values: Any
) -> Table:
    """Columns of ``sql`` (restricted to ``users`` when given); ``()`` without rows."""
    if users is None:
        statement = text(sql)
    else:
        statement = text(f"{sql} AND {account} IN :users").bindparams(
            bindparam("users", expanding=True)
        )
        values["users"] = users
    rows = conn.execute(statement, values).all()
    return tuple(zip(*rows, strict=True)) if rows else ()


def _block_time(conn: Connection, chain_id: int, block: int) -> int:
    where = {"c": chain_id, "b": block}
    exact = conn.execute(
        text("SELECT timestamp FROM block WHERE chain_id = :c AND number = :b"), where
    ).scalar()
    if exact is not None:
        return int(exact)
    bounds = conn.execute(
        text(
            "SELECT (SELECT MAX(timestamp) FROM block WHERE chain_id = :c AND number <= :b), "
            "(SELECT MAX(updated_at) FROM oracle_price WHERE chain_id = :c AND block_number <= :b)"
        ),
        where,
    ).one()
    known = [int(v) for v in bounds if v is not None]
    if not known:
        raise SnapshotError(
            f"chain {chain_id}: no block time at or below block {block} in the store; "
            "index further (`rtrm index --once`) or use a later watermark"
        )
    return max(known)


def _read_chain(
    conn: Connection, spec: ChainSpec, block: int, users: list[str] | None
) -> ChainRows:
    c = spec.chain_id
    now = _block_time(conn, c, block)
    perps = _table(conn, _PERPS, users, "account", c=c, b=block)
    markets = sorted(set(zip(perps[1], perps[2], strict=True))) if perps else []
    funding = {
        (protocol, market): conn.execute(
            text(_LATEST_FUNDING), {"c": c, "p": protocol, "m": market, "b": block}
        ).scalar()
        for protocol, market in markets
    }
    answers = {
        feed.address: conn.execute(
            text(_LATEST_ANSWER), {"c": c, "f": feed.address, "b": block}
        ).scalar()
        for feed in spec.contracts_of(ContractKind.PRICE_FEED)
    }
    params = conn.execute(text(_PARAMS), {"c": c, "b": block}).all()
    return ChainRows(
        chain_id=c,
        block=block,
        now_s=now,
        balances=_table(conn, _BALANCES, users, "account", c=c, b=block),
        options=_table(conn, _OPTIONS, users, "p.account", c=c, b=block),
        perps=perps,
        vols=_table(conn, _VOLS, None, "", c=c, b=block, now=now),
        params={(p, s, n): v for p, s, n, v in params},  # later rows win
        feed_answers={f: int(a) for f, a in answers.items() if a is not None},
        funding_index_wad={k: int(v) for k, v in funding.items() if v is not None},
    )


def _history(
    conn: Connection,
    specs: Sequence[ChainSpec],
    chains: Sequence[ChainRows],
    asset_id: str,
    marks: MarkParams,
) -> PriceHistory:
    """The oracle rounds of ``asset_id`` over ``marks.history_days`` on the chain that has
    the most of them (ties: registry order)."""
    best: list[Any] = []
    chain_of_best = 0
    for spec, rows in zip(specs, chains, strict=True):
        for feed in spec.contracts_of(ContractKind.PRICE_FEED):
            if feed.asset_id != asset_id:
                continue
            since = rows.now_s - int(marks.history_days * 86_400)
            found = conn.execute(
                text(_HISTORY), {"c": rows.chain_id, "f": feed.address, "b": rows.block,
                                 "since": since},
            ).all()  # fmt: skip
            if len(found) > len(best):
                best, chain_of_best = list(found), rows.chain_id
    times = np.asarray([int(t) for t, _ in best], dtype=np.int64)
    prices = np.asarray([a for _, a in best], dtype=np.float64).reshape(len(best))
    return PriceHistory(asset_id, chain_of_best, times, prices / 10.0**marks.feed_decimals)
