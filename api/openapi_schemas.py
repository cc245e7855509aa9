"""The schemas of the API's own answers and bodies, for :mod:`api.openapi`.

What handlers build themselves (positions, the contagion network, pages of deficits and
payouts, attestations and proofs, status and health, the error shape and the stress
request) is described here as data; the library reports are derived from their
dataclasses in :mod:`api.openapi`. Integers are exact; numbers that can be NaN or
infinite are ``["number", "null"]``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["OWN_SCHEMAS", "WATERMARK", "ref"]

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


WATERMARK: Schema = {
    "type": "object",
    "description": "The cut the answer was computed at: {chain id: last indexed block}",
    "propertyNames": {"pattern": "^[0-9]+$"},
    "additionalProperties": {"type": "integer"},
}
_NULLABLE_INT = {"type": ["integer", "null"]}
_NULLABLE_STR = {"type": ["string", "null"]}
OWN_SCHEMAS: dict[str, Schema] = {
    "Watermark": WATERMARK,
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string", "description": "stable, snake_case"},
                    "message": {"type": "string", "description": "what was wrong, what to do"},
                },
            }
        },
    },
    "Positions": {
        "type": "object",
        "required": ["address", "watermark", "chains"],
        "properties": {
            "address": {"type": "string"},
            "watermark": ref("Watermark"),
            "chains": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["chain_id", "block", "balances", "options", "perps"],
                    "properties": {
                        "chain_id": {"type": "integer"},
                        "block": {"type": "integer"},
                        "balances": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["protocol", "kind", "token", "amount"],
                                "properties": {
                                    "protocol": {"type": "string"},
                                    "protocol_address": {"type": "string"},
                                    "protocol_kind": {"type": "string"},
                                    "kind": {"enum": ["collateral", "debt", "margin"]},
                                    "token": {"type": "string"},
                                    "symbol": _NULLABLE_STR,
                                    "asset": _NULLABLE_STR,
                                    "decimals": _NULLABLE_INT,
                                    "amount": {
                                        "type": "integer",
                                        "description": "token's smallest unit, exact",
                                    },
                                },
                            },
                        },
                        "options": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["protocol", "series_id", "size_wad"],
                                "properties": {
                                    "protocol": {"type": "string"},
                                    "series_id": {"type": "integer"},
                                    "underlying": {"type": "string"},
                                    "expiry": {"type": "integer"},
                                    "strike_wad": {"type": "integer"},
                                    "is_call": {"type": "boolean"},
                                    "size_wad": {"type": "integer"},
                                },
                            },
                        },
                        "perps": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["protocol", "market", "size_wad"],
                                "properties": {
                                    "protocol": {"type": "string"},
                                    "market": {"type": "string"},
                                    "size_wad": {"type": "integer"},
                                    "open_notional_wad": {"type": "integer"},
                                    "entry_funding_index_wad": {"type": "integer"},
                                },
                            },
                        },
                    },
                },
            },
        },
    },
    "Contagion": {
        "type": "object",
        "required": ["watermark", "depth_usd", "scenarios", "network"],
        "properties": {
            "watermark": ref("Watermark"),
            "depth_usd": {"type": "object", "additionalProperties": {"type": "number"}},
            "scenarios": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["scenario", "moves", "bad_debt_usd", "contagion"],
                    "properties": {
                        "scenario": {"type": "string"},
                        "start": {"type": "string"},
                        "end": {"type": "string"},
                        "moves": {"type": "object", "additionalProperties": {"type": "number"}},
                        "liquidated_collateral_usd": {"type": ["number", "null"]},
                        "bad_debt_usd": {"type": ["number", "null"]},
                        "users_affected": {"type": "integer"},
                        "contagion": ref("NetworkContagion"),
                        "warnings": {"type": "array", "items": {"type": "string"}},
                    },
                },
            },
            "network": {
                "type": "object",
                "required": ["nodes", "edges"],
                "properties": {
                    "nodes": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["id", "chain_id", "collateral_usd", "debt_usd"],
                            "properties": {
                                "id": {"type": "string", "description": "e.g. lending@42161"},
                                "chain_id": {"type": "integer"},
                                "collateral_usd": {"type": ["number", "null"]},
                                "debt_usd": {"type": ["number", "null"]},
                                "equity_usd": {"type": ["number", "null"]},
                            },
                        },
                    },
                    "edges": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["source", "target", "direct_usd", "fire_sale_usd"],
                            "properties": {
                                "source": {"type": "string"},
                                "target": {"type": "string"},
                                "direct_usd": {"type": ["number", "null"]},
                                "fire_sale_usd": {"type": ["number", "null"]},
                            },
                        },
                    },
                },
            },
        },
    },
    "StressRequest": {
        "type": "object",
        "description": "Exactly one of shock and scenario.",
        "additionalProperties": False,
        "properties": {
            "shock": {
                "oneOf": [
                    {"type": "string", "example": "ETH=-0.30,stETH=-8%"},
                    {
                        "type": "object",
                        "minProperties": 1,
                        "additionalProperties": {"type": "number", "exclusiveMinimum": -1},
                        "example": {"ETH": -0.3},
                    },
                ]
            },
            "scenario": {"type": "string", "example": "2020-03-12"},
            "depth": {
                "type": "object",
                "description": "linear market depth per asset, USD (> 0)",
                "additionalProperties": {"type": "number", "exclusiveMinimum": 0},
            },
        },
        "example": {"shock": "ETH=-0.30"},
    },
    "Deficits": {
        "type": "object",
        "required": ["watermark", "decimals", "total", "deficits"],
        "properties": {
            "watermark": ref("Watermark"),
            "decimals": {"type": "integer"},
            "total": {"type": "integer"},
            "deficits": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["deficit_id", "chain_id", "amount", "fund_amount", "status"],
                    "properties": {
                        "deficit_id": {"type": "string"},
                        "chain_id": {"type": "integer"},
                        "block_number": {"type": "integer"},
                        "tx_hash": {"type": "string"},
                        "protocol": {"type": "string"},
                        "protocol_kind": {"type": "string"},
                        "account": {"type": "string"},
                        "asset": {"type": "string"},
                        "amount": {"type": "integer"},
                        "fund_amount": {"type": "integer"},
                        "status": {"enum": ["open", "allocated", "settled", "orphaned"]},
                        "epoch": _NULLABLE_INT,
                    },
                },
            },
        },
    },
    "Payouts": {
        "type": "object",
        "required": ["watermark", "decimals", "total", "payouts"],
        "properties": {
            "watermark": ref("Watermark"),
            "decimals": {"type": "integer"},
            "total": {"type": "integer"},
            "payouts": {"type": "array", "items": ref("PayoutView")},
        },
    },
    "Approved": {
        "type": "object",
        "required": ["watermark", "payout"],
        "properties": {"watermark": ref("Watermark"), "payout": ref("PayoutView")},
    },
    "Attestation": {
        "type": "object",
        "required": ["epoch", "root", "liabilities", "assets", "leaf_count", "watermark"],
        "properties": {
            "epoch": {"type": "integer"},
            "root": {"type": "string"},
            "liabilities": {"type": "integer"},
            "assets": {"type": "integer"},
            "leaf_count": {"type": "integer"},
            "watermark": ref("Watermark"),
            "decimals": {"type": "integer"},
        },
    },
    "Proof": {
        "allOf": [ref("Attestation")],
        "type": "object",
        "required": ["leaf", "proof", "verified", "computed_root"],
        "properties": {
            "computed_root": {"type": "string"},
            "leaf": {
                "type": "object",
                "required": ["address", "amount"],
                "properties": {"address": {"type": "string"}, "amount": {"type": "integer"}},
            },
            "proof": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["sibling_hash", "sibling_sum", "sibling_on_left"],
                    "properties": {
                        "sibling_hash": {"type": "string"},
                        "sibling_sum": {"type": "integer"},
                        "sibling_on_left": {"type": "boolean"},
                    },
                },
            },
            "verified": {"type": "boolean"},
        },
    },
    "SnapshotInfo": {
        "type": "object",
        "required": ["watermark", "users", "overlay_users", "last_error"],
        "properties": {
            "watermark": ref("Watermark"),
            "base_watermark": {"anyOf": [ref("Watermark"), {"type": "null"}]},
            "users": _NULLABLE_INT,
            "overlay_users": {"type": "integer"},
            "age_s": {"type": ["number", "null"]},
            "block_time_s": {"anyOf": [ref("Watermark"), {"type": "null"}]},
            "last_error": _NULLABLE_STR,
        },
    },
    "Status": {
        "type": "object",
        "required": ["watermark", "chains", "snapshot", "live_indexers"],
        "properties": {
            "watermark": ref("Watermark"),
            "chains": {"type": "array", "items": ref("ChainStatus")},
            "snapshot": ref("SnapshotInfo"),
            "live_indexers": {"type": "boolean"},
        },
    },
    "Health": {
        "allOf": [ref("SnapshotInfo")],
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"enum": ["ok", "degraded"]}},
    },
}
