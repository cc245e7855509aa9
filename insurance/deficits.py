"""Deficit detection: indexed ``bad_debt`` facts -> one :class:`~insurance.models.Deficit` each.

Concept. A deficit is debt a liquidation left uncovered, per (chain, protocol, account,
block, asset). Its id is ``keccak("rtrm.deficit.v1" || chain id || protocol || account ||
block || asset)`` (fixed-width, :func:`deficit_id`), so the same on-chain event always
gets the same id: replaying blocks, re-indexing from scratch or running detection twice
never adds a second row (insert only if the id is absent). Several ``bad_debt`` rows with
one key (one liquidation writing off in two logs) add up into one deficit.

Sources: lending ``DeficitCreated``, options ``BadDebt`` and perps ``Liquidated`` with a
non-zero ``badDebt``, as the indexer stores them. The amounts are already net of the
liquidation's proceeds (the protocols write off what the seized collateral did not
repay), so the waterfall gets ``proceeds = 0``. Lending ``DeficitCovered`` (someone paid
a reserve deficit through ``eliminateReserveDeficit``) is not indexed and names only a
reserve, not an account; it is therefore not netted here: a protocol that covers its own
deficits should set the ``deductible`` in ``[insurance]`` instead, and payouts go to the
protocol contract, which books them against its reserve deficit.

Value: ``fund_amount`` is the deficit in the chain's insurance-fund asset (smallest
units) at the oracle answers of the deficit's block: ``amount x p_debt x 10^fund_dec /
(10^debt_dec x p_fund)``, rounded down; a deficit in the fund's own asset (or one sharing
its canonical asset, USDC.e for USDC) converts by decimals only, without prices.

Reorgs. Detection compares the table with the ``bad_debt`` facts as they are now:

- a deficit whose source rows are gone (rolled back) and that has no payout sent or
  confirmed is deleted with its ledger and unsent payouts (it comes back with the same id
  if the event is mined again);
- one with a payout already sent or confirmed is marked ``orphaned``: the on-chain
  payment stands (never un-paid; the contract has no clawback), its unsent payouts are
  cancelled, and the row stays for review. ``pay_after_finality`` (the default) makes
  this impossible short of a reorg deeper than the chain's finality depth;
- a deficit whose amount changed (same key, different logs) is re-opened for a new
  allocation when nothing was sent yet, else orphaned the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from eth_utils.crypto import keccak
from sqlalchemy import Connection, delete, insert, select, text, update

from chains.exceptions import ConfigError
from chains.spec import ChainSpec, ContractSpec, Registry, TokenSpec
from chains.types import ContractKind
from insurance.exceptions import DeficitError
from insurance.models import DEFICITS, LEDGER, PAYOUTS

__all__ = [
    "DeficitSync",
    "FundInfo",
    "Valuer",
    "claim_id",
    "deficit_id",
    "fund_info",
    "funded_chains",
    "sync_deficits",
]

log = logging.getLogger(__name__)

PAID_STATES = ("sent", "confirmed")
UNSENT_STATES = ("planned", "approval_required", "approved", "failed")
_LATEST_ANSWER = (
    "SELECT answer FROM oracle_price WHERE chain_id = :c AND feed = :f AND block_number <= :b "
    "ORDER BY block_number DESC, log_index DESC LIMIT 1"
)
_BAD_DEBT = (
    "SELECT chain_id, block_number, tx_hash, log_index, protocol, protocol_kind, account, "
    "asset, amount FROM bad_debt ORDER BY chain_id, block_number, log_index"
)


def _word(value: int) -> bytes:
    return value.to_bytes(32, "big")


def _address_bytes(address: str) -> bytes:
    return bytes.fromhex(address[2:].lower())


def deficit_id(chain_id: int, protocol: str, account: str, block: int, asset: str) -> str:
    """The stable id of a deficit (``0x`` + 64 hex digits); address case does not matter."""
    payload = b"rtrm.deficit.v1" + _word(chain_id) + _address_bytes(protocol)
    payload += _address_bytes(account) + _word(block) + _address_bytes(asset)
    return "0x" + keccak(payload).hex()


def claim_id(deficit: str, layer: str) -> str:
    """The bytes32 claim id ``InsuranceFund.payClaim`` records for one layer of a deficit."""
    return "0x" + keccak(b"rtrm.claim.v1" + bytes.fromhex(deficit[2:]) + layer.encode()).hex()


@dataclass(frozen=True, slots=True)
class FundInfo:
    """A chain's insurance fund: its contract, and the token it pays in."""

    chain_id: int
    fund: ContractSpec
    token: TokenSpec


def fund_info(chain: ChainSpec) -> FundInfo:
    """The first ``insurance_fund`` contract of ``chain`` and its payment token."""
    funds = chain.contracts_of(ContractKind.INSURANCE_FUND)
    if not funds:
        raise DeficitError(
            f"chain {chain.label} has no insurance_fund contract in rtrm.toml; add one "
            f'(kind = "insurance_fund", asset = "USDC") or its deficits cannot be paid'
        )
    fund = funds[0]
    if fund.asset_id is None:
        raise DeficitError(
            f'chains.{chain.chain_id}.contracts.{fund.name}: no asset; add asset = "USDC" '
            "(the token the fund pays claims in)"
        )
    tokens = [t for t in chain.tokens if t.asset_id == fund.asset_id]
    tokens.sort(key=lambda t: t.symbol != fund.asset_id)  # the canonical symbol first
    if not tokens:
        raise DeficitError(
            f"chain {chain.label}: no token of asset {fund.asset_id}, the fund's asset; add it "
            f"under [chains.{chain.chain_id}.tokens]"
        )
    return FundInfo(chain.chain_id, fund, tokens[0])


def funded_chains(registry: Registry) -> tuple[ChainSpec, ...]:
    """The chains with an insurance fund; deficits elsewhere are not the backstop's."""
    return tuple(c for c in registry.chains if c.contracts_of(ContractKind.INSURANCE_FUND))


class Valuer:
    """Values amounts of any token of a chain in that chain's fund asset, at a block."""

    def __init__(self, conn: Connection, registry: Registry) -> None:
        self.conn = conn
        self.registry = registry
        self._funds: dict[int, FundInfo] = {}

    def fund(self, chain_id: int) -> FundInfo:
        if chain_id not in self._funds:
            self._funds[chain_id] = fund_info(self.registry.chain(chain_id))
        return self._funds[chain_id]

    def _answer(self, chain: ChainSpec, asset_id: str, block: int) -> int:
        feeds = [f for f in chain.contracts_of(ContractKind.PRICE_FEED) if f.asset_id == asset_id]
        for feed in feeds:
            answer = self.conn.execute(
                text(_LATEST_ANSWER), {"c": chain.chain_id, "f": feed.address, "b": block}
            ).scalar()
            if answer is not None and int(answer) > 0:
                return int(answer)
        raise DeficitError(
            f"chain {chain.label}: no positive {asset_id} price at or below block {block} "
            f"(feeds: {', '.join(f.address for f in feeds) or 'none configured'}); add the "
            "asset's price_feed to rtrm.toml and index it"
        )

    def value(self, chain_id: int, asset: str, amount: int, block: int) -> int:
        """``amount`` of token ``asset`` in fund-asset units at ``block`` (rounded down)."""
        chain = self.registry.chain(chain_id)
        info = self.fund(chain_id)
        try:
            token = chain.token_at(asset)
        except ConfigError as exc:
            raise DeficitError(f"cannot value a deficit in {asset}: {exc}") from None
        scale_up: int = 10**info.token.decimals
        scale_down: int = 10**token.decimals
        if token.asset_id == info.token.asset_id:
            return amount * scale_up // scale_down
        price = self._answer(chain, token.asset_id, block)
        fund_price = self._answer(chain, info.token.asset_id, block)
        return amount * price * scale_up // (scale_down * fund_price)


@dataclass(frozen=True, slots=True)
class DeficitSync:
    """What one detection pass changed (deficit ids)."""

    added: tuple[str, ...]
    reopened: tuple[str, ...]
    removed: tuple[str, ...]
    orphaned: tuple[str, ...]

    @property
    def changed(self) -> bool:
        return bool(self.added or self.reopened or self.removed or self.orphaned)


@dataclass(slots=True)
class _Found:
    chain_id: int
    block: int
    tx_hash: str
    protocol: str
    protocol_kind: str
    account: str
    asset: str
    amount: int


def _found(rows: Iterable[Sequence[object]], chains: set[int]) -> dict[str, _Found]:
    found: dict[str, _Found] = {}
    for chain, block, tx, _, protocol, kind, account, asset, amount in rows:
        chain_id = int(str(chain))
        if chain_id not in chains:
            continue
        key = deficit_id(chain_id, str(protocol), str(account), int(str(block)), str(asset))
        if key in found:
            found[key].amount += int(str(amount))
        else:
            found[key] = _Found(
                chain_id,
                int(str(block)),
                str(tx),
                str(protocol),
                str(kind),
                str(account),
                str(asset),
                int(str(amount)),
            )
    return found


def sync_deficits(conn: Connection, registry: Registry) -> DeficitSync:
    """Bring the ``deficit`` table in line with the indexed ``bad_debt`` facts (see the
    module docstring); run inside one transaction. Only chains of ``registry`` that have an
    insurance fund are considered."""
    chains = {int(c.chain_id) for c in funded_chains(registry)}
    found = _found(conn.execute(text(_BAD_DEBT)), chains)
    existing = {
        row.deficit_id: (int(row.amount), str(row.status))
        for row in conn.execute(select(DEFICITS.c.deficit_id, DEFICITS.c.amount, DEFICITS.c.status))
    }
    paid = {
        str(d)
        for (d,) in conn.execute(
            select(PAYOUTS.c.deficit_id).where(PAYOUTS.c.state.in_(PAID_STATES)).distinct()
        )
    }
    valuer = Valuer(conn, registry)
    added = [key for key in found if key not in existing]
    changed = [k for k, (amount, _) in existing.items() if k in found and found[k].amount != amount]
    gone = [k for k, (_, status) in existing.items() if k not in found and status != "orphaned"]
    reopened = [k for k in changed if k not in paid]
    orphaned = [k for k in [*changed, *gone] if k in paid and existing[k][1] != "orphaned"]
    removed = [k for k in gone if k not in paid]

    if added:
        conn.execute(insert(DEFICITS), [_row(key, found[key], valuer) for key in added])
    _forget(conn, [*reopened, *removed])
    if removed:
        conn.execute(delete(DEFICITS).where(DEFICITS.c.deficit_id.in_(removed)))
    for key in reopened:
        item = found[key]
        conn.execute(
            update(DEFICITS)
            .where(DEFICITS.c.deficit_id == key)
            .values(
                amount=item.amount,
                fund_amount=valuer.value(item.chain_id, item.asset, item.amount, item.block),
                status="open",
                epoch=None,
            )
        )
    if orphaned:
        conn.execute(
            update(PAYOUTS)
            .where(PAYOUTS.c.deficit_id.in_(orphaned), PAYOUTS.c.state.in_(UNSENT_STATES))
            .values(state="cancelled")
        )
        conn.execute(
            update(DEFICITS).where(DEFICITS.c.deficit_id.in_(orphaned)).values(status="orphaned")
        )
        log.warning(
            "%d paid deficit(s) lost their source event in a reorg and are now orphaned "
            "(payments stand; review them): %s",
            len(orphaned),
            ", ".join(orphaned),
        )
    result = DeficitSync(tuple(added), tuple(reopened), tuple(removed), tuple(orphaned))
    if result.changed:
        log.info(
            "deficits: %d new, %d re-opened, %d removed, %d orphaned",
            len(added),
            len(reopened),
            len(removed),
            len(orphaned),
        )
    return result


def _row(key: str, item: _Found, valuer: Valuer) -> dict[str, object]:
    return {
        "deficit_id": key,
        "chain_id": item.chain_id,
        "block_number": item.block,
        "tx_hash": item.tx_hash,
        "protocol": item.protocol,
        "protocol_kind": item.protocol_kind,
        "account": item.account,
        "asset": item.asset,
        "amount": item.amount,
        "fund_amount": valuer.value(item.chain_id, item.asset, item.amount, item.block),
        "status": "open",
        "epoch": None,
    }


def _forget(conn: Connection, keys: Sequence[str]) -> None:
    """Drop the allocation (ledger rows and unsent payouts) of ``keys``."""
    if not keys:
        return
    conn.execute(delete(LEDGER).where(LEDGER.c.deficit_id.in_(keys)))
    conn.execute(delete(PAYOUTS).where(PAYOUTS.c.deficit_id.in_(keys)))
