"""The insurance backstop and its attestations, read from the store.

- ``GET /v1/insurance/pool``: :class:`insurance.status.InsuranceStatus` (``rtrm insurance
  status --json``): pools per chain, requirement, coverage ratio and alert, deficit and
  payout counts, IOUs, the last attestation;
- ``GET /v1/insurance/deficits[?status=open][&limit=N][&offset=N]``: deficits, newest
  block first, with ``total`` for paging;
- ``GET /v1/insurance/payouts[?state=S][&epoch=N][&limit=N][&offset=N]``: payouts
  (:class:`insurance.payouts.PayoutView`), newest epoch first;
- ``POST /v1/insurance/payouts/{claim_id}/approve`` (bearer token; body ``{"by": NAME}``
  optional): approve a payout awaiting approval; the next trigger pays it. 401 without a
  token, 403 with a wrong one, 404 for an unknown claim, 409 when it is not awaiting;
- ``GET /v1/attestations/latest``: the last published Merkle-sum root of the fund's
  liabilities (404 ``unknown_epoch`` before the first);
- ``GET /v1/attestations/{epoch}/proofs/{address}``: the leaf of ``address`` (a protocol
  that was owed money in that epoch) and its inclusion proof, verified against the
  published root before it is sent.

Amounts are integers in the fund asset's smallest unit (``decimals`` says how to show
them). Answers carry the store's watermark at the read (attestations: the watermark
they were computed at).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import web
from sqlalchemy import func, select

from api.errors import HttpError
from api.http import (
    address_param,
    context,
    int_param,
    json_body,
    json_response,
    require_token,
)
from indexer.status import watermark
from insurance.attestation import verify_proof
from insurance.models import ATTESTATIONS, DEFICIT_STATUSES, DEFICITS, PAYOUT_STATES, PAYOUTS
from insurance.payouts import approve, load_payout
from insurance.planning import epoch_tree, fund_decimals
from insurance.status import insurance_status

__all__ = ["routes"]

T = TypeVar("T")
_CLAIM = re.compile(r"0x[0-9a-fA-F]{64}")
_MAX_LIMIT = 1000


async def _in_thread(read: Callable[[], T]) -> T:
    """Run a blocking store read or write in a worker thread."""
    return await asyncio.get_running_loop().run_in_executor(None, read)


def _status_filter(request: web.Request, name: str, allowed: tuple[str, ...]) -> str | None:
    value = request.query.get(name)
    if value is not None and value not in allowed:
        raise HttpError(
            400,
            "bad_parameter",
            f"query parameter {name}={value[:40]!r}: expected one of {', '.join(allowed)}",
        )
    return value


async def pool(request: web.Request) -> web.Response:
    ctx = context(request)

    def read() -> Any:
        with ctx.store.engine.connect() as conn:
            return insurance_status(conn, ctx.registry, ctx.insurance)

    return json_response(await _in_thread(read))


async def deficits(request: web.Request) -> web.Response:
    ctx = context(request)
    status = _status_filter(request, "status", DEFICIT_STATUSES)
    limit = int_param(request, "limit", default=100, low=1, high=_MAX_LIMIT)
    offset = int_param(request, "offset", default=0)
    where = [] if status is None else [DEFICITS.c.status == status]

    def read() -> dict[str, Any]:
        with ctx.store.engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(DEFICITS).where(*where))
            rows = conn.execute(
                select(DEFICITS)
                .where(*where)
                .order_by(DEFICITS.c.block_number.desc(), DEFICITS.c.deficit_id)
                .limit(limit)
                .offset(offset)
            )
            items = [
                {
                    "deficit_id": r.deficit_id,
                    "chain_id": int(r.chain_id),
                    "block_number": int(r.block_number),
                    "tx_hash": r.tx_hash,
                    "protocol": r.protocol,
                    "protocol_kind": r.protocol_kind,
                    "account": r.account,
                    "asset": r.asset,
                    "amount": int(r.amount),
                    "fund_amount": int(r.fund_amount),
                    "status": r.status,
                    "epoch": None if r.epoch is None else int(r.epoch),
                }
                for r in rows
            ]
            return {
                "watermark": watermark(conn),
                "decimals": fund_decimals(ctx.registry),
                "total": int(total.scalar_one()),
                "deficits": items,
            }

    return json_response(await _in_thread(read))


async def payouts(request: web.Request) -> web.Response:
    ctx = context(request)
    state = _status_filter(request, "state", PAYOUT_STATES)
    epoch = int_param(request, "epoch")
    limit = int_param(request, "limit", default=100, low=1, high=_MAX_LIMIT)
    offset = int_param(request, "offset", default=0)
    where = []
    if state is not None:
        where.append(PAYOUTS.c.state == state)
    if epoch is not None:
        where.append(PAYOUTS.c.epoch == epoch)

    def read() -> dict[str, Any]:
        with ctx.store.engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(PAYOUTS).where(*where))
            claims = conn.execute(
                select(PAYOUTS.c.claim_id)
                .where(*where)
                .order_by(PAYOUTS.c.epoch.desc(), PAYOUTS.c.chain_id, PAYOUTS.c.claim_id)
                .limit(limit)
                .offset(offset)
            ).scalars()
            return {
                "watermark": watermark(conn),
                "decimals": fund_decimals(ctx.registry),
                "total": int(total.scalar_one()),
                "payouts": [load_payout(conn, str(claim)) for claim in list(claims)],
            }

    return json_response(await _in_thread(read))


async def approve_payout(request: web.Request) -> web.Response:
    require_token(request)
    ctx = context(request)
    claim = request.match_info["claim_id"]
    if not _CLAIM.fullmatch(claim):
        raise HttpError(
            404, "unknown_claim", f"{claim[:80]!r} is not a claim id (0x and 64 hex digits)"
        )
    body = await json_body(request, required=False)
    by = body.get("by", "api")
    if not isinstance(by, str) or not by.strip() or len(by) > 64:  # noqa: PLR2004
        raise HttpError(422, "bad_parameter", '"by" must be a name of 1 to 64 characters')

    def write() -> dict[str, Any]:
        with ctx.store.transaction() as conn:
            payout = approve(conn, claim, by=by.strip())
            return {"watermark": watermark(conn), "payout": payout}

    return json_response(await _in_thread(write))


def _attestation(row: Any) -> dict[str, Any]:
    try:
        cut = {int(k): int(v) for k, v in json.loads(row.watermark).items()}
    except (ValueError, AttributeError):
        cut = {}
    return {
        "epoch": int(row.epoch),
        "root": row.root,
        "liabilities": int(row.total),
        "assets": int(row.assets),
        "leaf_count": int(row.leaf_count),
        "watermark": cut,
    }


async def latest_attestation(request: web.Request) -> web.Response:
    ctx = context(request)

    def read() -> dict[str, Any] | None:
        with ctx.store.engine.connect() as conn:
            row = conn.execute(
                select(ATTESTATIONS).order_by(ATTESTATIONS.c.epoch.desc()).limit(1)
            ).first()
            if row is None:
                return None
            return {**_attestation(row), "decimals": fund_decimals(ctx.registry)}

    found = await _in_thread(read)
    if found is None:
        raise HttpError(
            404, "unknown_epoch", "no attestation yet: one is published with each payout epoch"
        )
    return json_response(found)


async def proof(request: web.Request) -> web.Response:
    ctx = context(request)
    epoch = int_param(request, "epoch", path=True, low=1)
    address = address_param(request)

    def read() -> dict[str, Any] | None:
        with ctx.store.engine.connect() as conn:
            row = conn.execute(select(ATTESTATIONS).where(ATTESTATIONS.c.epoch == epoch)).first()
            if row is None:
                return None
            tree = epoch_tree(conn, int(row.epoch))
        leaf, steps = tree.proof(address)  # AttestationError -> 404 no_leaf
        root = "0x" + tree.root.hex()
        return {
            **_attestation(row),
            "computed_root": root,
            "leaf": {"address": leaf.address, "amount": leaf.amount},
            "proof": [
                {
                    "sibling_hash": step.sibling_hash,
                    "sibling_sum": step.sibling_sum,
                    "sibling_on_left": step.sibling_on_left,
                }
                for step in steps
            ],
            "verified": root == row.root
            and tree.total == int(row.total)
            and verify_proof(tree.root, tree.total, leaf, steps),
        }

    found = await _in_thread(read)
    if found is None:
        raise HttpError(404, "unknown_epoch", f"no attestation for epoch {epoch}")
    return json_response(found)


def routes() -> list[web.RouteDef]:
    return [
        web.get("/v1/insurance/pool", pool),
        web.get("/v1/insurance/deficits", deficits),
        web.get("/v1/insurance/payouts", payouts),
        web.post("/v1/insurance/payouts/{claim_id}/approve", approve_payout),
        web.get("/v1/attestations/latest", latest_attestation),
        web.get("/v1/attestations/{epoch}/proofs/{address}", proof),
    ]
