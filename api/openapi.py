"""The OpenAPI 3.1 description of the API (served at ``/openapi.json``).

The paths, parameters and bodies are written here as data, the API's own answer shapes in
:mod:`api.openapi_schemas`.
The schemas of the library reports the API returns as they are (``RiskReport``,
``ExposureReport``, ``StressReport``, ``InsuranceStatus``, ``PayoutView``,
``ChainStatus``, …) are derived from those frozen dataclasses' type hints by
:func:`dataclass_schema`, so the description cannot drift from the code: ``int`` is an
integer (exact, never a float), ``float`` a number or null (NaN and infinities are
null), ``dict[K, V]`` an object with string keys, ``tuple[X, ...]`` an array, ``X | None``
nullable. A test checks that every route is described and every described route exists.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Mapping
from typing import Any

from aggregation.systemic import ExposureReport, NetworkContagion, StressReport
from aggregation.user_report import RiskReport
from api.openapi_schemas import OWN_SCHEMAS, ref
from indexer.status import ChainStatus
from insurance.payouts import PayoutView
from insurance.status import InsuranceStatus

__all__ = ["dataclass_schema", "openapi_spec"]

Schema = dict[str, Any]
_REPORTS: tuple[type, ...] = (
    RiskReport,
    ExposureReport,
    StressReport,
    NetworkContagion,
    InsuranceStatus,
    PayoutView,
    ChainStatus,
)


def _type_schema(hint: Any, found: dict[str, Schema]) -> Schema:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is type(None):
        return {"type": "null"}
    if hint is bool:
        return {"type": "boolean"}
    if hint is int:
        return {"type": "integer"}
    if hint is float:
        return {"type": ["number", "null"]}  # NaN and infinities are written as null
    if hint is str:
        return {"type": "string"}
    if origin in (types.UnionType, typing.Union):
        options = [_type_schema(a, found) for a in args]
        return {"anyOf": options}
    if origin in (dict, Mapping) or origin is typing.get_origin(Mapping[str, int]):
        return {"type": "object", "additionalProperties": _type_schema(args[1], found)}
    if origin in (tuple, list):
        item = args[0] if args else Any
        return {"type": "array", "items": _type_schema(item, found)}
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        dataclass_schema(hint, found)
        return ref(hint.__name__)
    return {}


def dataclass_schema(cls: type, found: dict[str, Schema] | None = None) -> dict[str, Schema]:
    """Schemas of ``cls`` and of every dataclass it holds, by class name."""
    found = {} if found is None else found
    if cls.__name__ in found:
        return found
    found[cls.__name__] = {}  # a placeholder breaks cycles
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    found[cls.__name__] = {
        "type": "object",
        "description": (cls.__doc__ or cls.__name__).strip().splitlines()[0],
        "required": names,
        "properties": {name: _type_schema(hints[name], found) for name in names},
    }
    return found


# ------------------------------------------------------------------------- parameters
_ADDRESS = {
    "name": "address",
    "in": "path",
    "required": True,
    "description": "EIP-55 checksummed, or all lowercase (skips the checksum)",
    "schema": {"type": "string", "example": "0x1d3c2c1A142E0696219FBAC8C5dE2864831c0049"},
}
_TOP = {
    "name": "top",
    "in": "query",
    "description": "top holders to list (1-100, default 10)",
    "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 10},
}
_LIMIT = {
    "name": "limit",
    "in": "query",
    "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
}
_OFFSET = {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}}


def _json(schema: Schema, description: str) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Schema]:
    return {str(s): {"$ref": f"#/components/responses/E{s}"} for s in statuses}


_ERROR_TEXT = {
    400: "malformed input (bad_address, bad_parameter, bad_json)",
    401: "no bearer token",
    403: "a wrong bearer token, or none configured",
    404: "unknown resource (unknown_asset, unknown_claim, unknown_epoch, no_leaf)",
    409: "the payout is not awaiting approval",
    413: "the body is too large",
    415: "the body is not JSON",
    422: "input that cannot be applied (bad_shock, bad_parameter)",
    429: "rate limited: see Retry-After",
    503: "nothing indexed yet (not_ready): see Retry-After",
}


def _op(
    summary: str,
    ok: Schema,
    *statuses: int,
    parameters: list[Schema] | None = None,
    tags: tuple[str, ...] = (),
    **extra: Any,
) -> Schema:
    return {
        "summary": summary,
        "tags": list(tags),
        "parameters": parameters or [],
        "responses": {"200": ok, **_errors(*statuses)},
        **extra,
    }


_PATHS: dict[str, Schema] = {
    "/v1/users/{address}/risk": {
        "get": _op(
            "One address's unified risk across chains and protocols",
            _json(ref("RiskReport"), "the risk report (rtrm risk --json)"),
            400, 429, 503,
            parameters=[
                _ADDRESS,
                {"name": "grid", "in": "query",
                 "schema": {"enum": ["derive", "deribit", "span"], "default": "derive"}},
                {"name": "contagion", "in": "query",
                 "description": "add the share of systemic losses in historical scenarios",
                 "schema": {"type": "boolean", "default": False}},
            ],
            tags=("users",),
        )
    },
    "/v1/users/{address}/positions": {
        "get": _op(
            "One address's positions at the watermark, exact",
            _json(ref("Positions"), "balances, options and perps per chain"),
            400, 429, 503, parameters=[_ADDRESS], tags=("users",),
        )
    },
    "/v1/assets/exposure": {
        "get": _op(
            "Systemic exposure of every asset, with liquidation ladders",
            _json(ref("ExposureReport"), "rtrm exposure --json"),
            400, 429, 503, parameters=[_TOP], tags=("systemic",),
        )
    },
    "/v1/assets/{asset}/exposure": {
        "get": _op(
            "Systemic exposure of one asset (a variant answers for its root)",
            _json(ref("ExposureReport"), "rtrm exposure --asset ASSET --json"),
            400, 404, 429, 503,
            parameters=[
                {"name": "asset", "in": "path", "required": True,
                 "schema": {"type": "string", "example": "ETH"}},
                _TOP,
            ],
            tags=("systemic",),
        )
    },
    "/v1/systemic/contagion": {
        "get": _op(
            "Contagion through the protocol network in historical scenarios",
            _json(ref("Contagion"), "per scenario DebtRank and clearing; the network"),
            400, 422, 429, 503,
            parameters=[
                {"name": "scenario", "in": "query", "style": "form", "explode": True,
                 "description": "scenario names or dates (repeatable; default three)",
                 "schema": {"type": "array", "items": {"type": "string"}, "maxItems": 8}},
                {"name": "depth", "in": "query",
                 "description": "ASSET=USD[,ASSET=USD]: linear market depth (fire-sale edges)",
                 "schema": {"type": "string", "example": "ETH=5e7"}},
            ],
            tags=("systemic",),
        )
    },
    "/v1/stress": {
        "post": _op(
            "Run a price shock through the liquidation cascade",
            _json(ref("StressReport"), "rtrm stress --json"),
            400, 413, 415, 422, 429, 503,
            requestBody={"required": True,
                         "content": {"application/json": {"schema": ref("StressRequest")}}},
            tags=("systemic",),
        )
    },
    "/v1/insurance/pool": {
        "get": _op(
            "Insurance pools, requirement, coverage, deficits and payouts",
            _json(ref("InsuranceStatus"), "rtrm insurance status --json"),
            429, tags=("insurance",),
        )
    },
    "/v1/insurance/deficits": {
        "get": _op(
            "Deficits (bad debt the backstop tracks), newest first",
            _json(ref("Deficits"), "a page of deficits"),
            400, 429,
            parameters=[
                {"name": "status", "in": "query",
                 "schema": {"enum": ["open", "allocated", "settled", "orphaned"]}},
                _LIMIT, _OFFSET,
            ],
            tags=("insurance",),
        )
    },
    "/v1/insurance/payouts": {
        "get": _op(
            "Payouts (on-chain claims), newest epoch first",
            _json(ref("Payouts"), "a page of payouts"),
            400, 429,
            parameters=[
                {"name": "state", "in": "query",
                 "schema": {"enum": ["planned", "approval_required", "approved", "sent",
                                     "confirmed", "failed", "cancelled"]}},
                {"name": "epoch", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                _LIMIT, _OFFSET,
            ],
            tags=("insurance",),
        )
    },
    "/v1/insurance/payouts/{claim_id}/approve": {
        "post": _op(
            "Approve a payout awaiting approval (bearer token)",
            _json(ref("Approved"), "the approved payout"),
            400, 401, 403, 404, 409, 413, 415, 422, 429,
            parameters=[{"name": "claim_id", "in": "path", "required": True,
                         "schema": {"type": "string", "pattern": "^0x[0-9a-fA-F]{64}$"}}],
            requestBody={"required": False, "content": {"application/json": {"schema": {
                "type": "object",
                "properties": {"by": {"type": "string", "minLength": 1, "maxLength": 64}},
            }}}},
            security=[{"bearer": []}],
            tags=("insurance",),
        )
    },
    "/v1/attestations/latest": {
        "get": _op(
            "The last published Merkle-sum root of the fund's liabilities",
            _json(ref("Attestation"), "epoch, root, liabilities, assets"),
            404, 429, tags=("insurance",),
        )
    },
    "/v1/attestations/{epoch}/proofs/{address}": {
        "get": _op(
            "An inclusion proof of one protocol's liability in an epoch",
            _json(ref("Proof"), "the leaf, its proof, and whether it verifies"),
            400, 404, 429,
            parameters=[
                {"name": "epoch", "in": "path", "required": True,
                 "schema": {"type": "integer", "minimum": 1}},
                _ADDRESS,
            ],
            tags=("insurance",),
        )
    },
    "/v1/status": {
        "get": _op(
            "Indexing status per chain (head, indexed, lag, reorgs) and the cached snapshot",
            _json(ref("Status"), "rtrm status --json, plus the snapshot"),
            429, tags=("operations",),
        )
    },
    "/healthz": {
        "get": _op(
            "Liveness and readiness (never rate-limited)",
            _json(ref("Health"), "a snapshot is loaded"),
            503, tags=("operations",),
        )
    },
    "/metrics": {
        "get": {
            "summary": "Prometheus metrics: rtrm_indexer_* and rtrm_api_* (never rate-limited)",
            "tags": ["operations"],
            "parameters": [],
            "responses": {"200": {"description": "Prometheus text exposition format",
                                  "content": {"text/plain": {"schema": {"type": "string"}}}}},
        }
    },
    "/openapi.json": {
        "get": _op(
            "This description",
            _json({"type": "object"}, "OpenAPI 3.1"),
            429, tags=("operations",),
        )
    },
}  # fmt: skip


@functools.cache
def _spec() -> Schema:
    schemas: dict[str, Schema] = {}
    for cls in _REPORTS:
        dataclass_schema(cls, schemas)
    for name in ("RiskReport", "ExposureReport", "StressReport", "InsuranceStatus"):
        schemas[name]["properties"]["watermark"] = ref("Watermark")
    schemas.update(OWN_SCHEMAS)
    responses = {
        f"E{status}": {
            "description": text,
            "content": {"application/json": {"schema": ref("Error")}},
            **(
                {"headers": {"Retry-After": {"schema": {"type": "string"}}}}
                if status in (429, 503)
                else {}
            ),
        }
        for status, text in _ERROR_TEXT.items()
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "RTRM",
            "version": "1",
            "description": (
                "Real-time, cross-chain risk engine: unified risk per address, systemic "
                "exposure, stress and contagion, the insurance backstop. Every answer "
                "carries the watermark {chain id: block} it was computed at. Integers are "
                "exact (token amounts in smallest units); NaN and infinities are null."
            ),
        },
        "servers": [{"url": "/"}],
        "paths": _PATHS,
        "components": {
            "schemas": schemas,
            "responses": responses,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def openapi_spec() -> Schema:
    """The description (built once; do not mutate it)."""
    return _spec()
