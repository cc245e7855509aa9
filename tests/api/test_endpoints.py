"""Every endpoint on a crashed, indexed devnet: answers, watermarks, errors and auth."""

from __future__ import annotations

import json
from typing import Any

import pytest

from aggregation.loader import load_snapshot
from aggregation.user_report import user_risk_report
from api.encoding import dumps
from indexer.status import watermark
from indexer.store import open_store

pytestmark = pytest.mark.chain


def _cut(world: Any) -> dict[str, int]:
    store = open_store(world.url, migrate=False)
    try:
        with store.engine.connect() as conn:
            return {str(c): b for c, b in watermark(conn).items()}
    finally:
        store.dispose()


def _holder(api: Any) -> str:
    exposure = api.get("/v1/assets/exposure").json()
    return str(exposure["assets"][0]["top_holders"][0]["address"])


def _error(response: Any, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    return str(body["error"]["message"])


def test_risk_equals_the_library_report(api: Any, world: Any) -> None:
    address = _holder(api)
    answer = api.get(f"/v1/users/{address}/risk")
    assert answer.status_code == 200
    body = answer.json()
    assert body["watermark"] == _cut(world)
    store = open_store(world.url, migrate=False)
    with store.engine.connect() as conn:
        snapshot = load_snapshot(conn, world.registry)
    store.dispose()
    expected = json.loads(dumps(user_risk_report(snapshot, address)))
    assert body == expected
    assert body["has_positions"] is True
    lower = api.get(f"/v1/users/{address.lower()}/risk").json()
    assert lower == body  # lowercase skips the checksum, same answer


def test_risk_options(api: Any) -> None:
    address = _holder(api)
    span = api.get(f"/v1/users/{address}/risk", params={"grid": "span"}).json()
    assert span["grid"] != api.get(f"/v1/users/{address}/risk").json()["grid"]
    with_contagion = api.get(f"/v1/users/{address}/risk", params={"contagion": "true"}).json()
    assert [s["scenario"] for s in with_contagion["contagion"]["scenarios"]]
    nobody = api.get("/v1/users/0x000000000000000000000000000000000000dEaD/risk").json()
    assert nobody["has_positions"] is False


def test_positions_are_exact_integers(api: Any, world: Any) -> None:
    address = _holder(api)
    body = api.get(f"/v1/users/{address}/positions").json()
    assert body["address"] == address
    assert body["watermark"] == _cut(world)
    balances = [b for chain in body["chains"] for b in chain["balances"]]
    assert balances
    assert all(isinstance(b["amount"], int) for b in balances)
    assert {b["kind"] for b in balances} <= {"collateral", "debt", "margin"}


@pytest.mark.parametrize(
    ("address", "fragment"),
    [
        ("0x1D3c2c1A142E0696219FBAC8C5dE2864831c0049", "checksum"),  # one letter's case flipped
        ("0x1234", "not an address"),
        ("hello", "not an address"),
    ],
)
def test_bad_addresses(api: Any, address: str, fragment: str) -> None:
    for path in ("risk", "positions"):
        message = _error(api.get(f"/v1/users/{address}/{path}"), 400, "bad_address")
        assert fragment in message


def test_bad_query_parameters(api: Any) -> None:
    address = _holder(api)
    message = _error(api.get(f"/v1/users/{address}/risk?grid=cme"), 400, "bad_parameter")
    assert "derive" in message
    _error(api.get(f"/v1/users/{address}/risk?contagion=maybe"), 400, "bad_parameter")
    _error(api.get("/v1/assets/exposure?top=0"), 400, "bad_parameter")
    _error(api.get("/v1/assets/exposure?top=ten"), 400, "bad_parameter")
    _error(api.get("/v1/insurance/deficits?status=lost"), 400, "bad_parameter")
    _error(api.get("/v1/insurance/payouts?epoch=-1"), 400, "bad_parameter")


def test_exposure(api: Any, world: Any) -> None:
    every = api.get("/v1/assets/exposure").json()
    assert every["watermark"] == _cut(world)
    assert {a["asset"] for a in every["assets"]} >= {"ETH", "USDC"}
    eth = api.get("/v1/assets/wstETH/exposure", params={"top": 3}).json()
    (asset,) = eth["assets"]
    assert asset["asset"] == "ETH"
    assert len(asset["top_holders"]) <= 3
    assert len(asset["ladder"]) > 10
    message = _error(api.get("/v1/assets/ETC/exposure"), 404, "unknown_asset")
    assert "ETH" in message  # did you mean


def test_contagion(api: Any, world: Any) -> None:
    body = api.get("/v1/systemic/contagion").json()
    assert body["watermark"] == _cut(world)
    assert len(body["scenarios"]) == 3
    assert body["network"]["nodes"]
    assert body["network"]["edges"] == []  # no market depth: no fire-sale edges
    deep = api.get("/v1/systemic/contagion", params={"scenario": "2020-03-12", "depth": "ETH=1e5"})
    one = deep.json()
    assert [s["scenario"] for s in one["scenarios"]] == ["black-thursday-2020"]
    assert one["depth_usd"] == {"ETH": 100000.0}
    assert one["network"]["edges"]
    _error(api.get("/v1/systemic/contagion?scenario=1929-10-29"), 422, "bad_shock")
    _error(api.get("/v1/systemic/contagion?depth=ETH"), 400, "bad_parameter")
    _error(api.get("/v1/systemic/contagion?depth=ETH=-5"), 422, "bad_parameter")


def test_stress(api: Any, world: Any) -> None:
    text = api.post("/v1/stress", json={"shock": "ETH=-0.30"}).json()
    mapping = api.post("/v1/stress", json={"shock": {"ETH": -0.3}}).json()
    assert text["watermark"] == _cut(world)
    assert text["moves"] == {"ETH": -0.3}
    assert mapping["bad_debt_usd"] == text["bad_debt_usd"]
    dated = api.post("/v1/stress", json={"scenario": "2020-03-12", "depth": {"ETH": 1e6}}).json()
    assert dated["scenario"] == "black-thursday-2020"
    assert dated["depth_usd"] == {"ETH": 1e6}


@pytest.mark.parametrize(
    ("body", "status", "code", "fragment"),
    [
        ({"shock": "ETH=-abc"}, 422, "bad_shock", "not a number"),
        ({"shock": "ETH=-1.5"}, 422, "bad_shock", "> -1"),
        ({"shock": "DOGE=-0.1"}, 422, "bad_shock", "unknown asset"),
        ({"shock": {"ETH": "down"}}, 422, "bad_parameter", "number"),
        ({"shock": []}, 422, "bad_shock", "shock must be"),
        ({}, 422, "bad_shock", "exactly one"),
        ({"shock": "ETH=-0.3", "scenario": "2020-03-12"}, 422, "bad_shock", "exactly one"),
        ({"scenario": "the-big-one"}, 422, "bad_shock", "unknown scenario"),
        ({"shock": "ETH=-0.3", "depth": {"ETH": 0}}, 422, "bad_parameter", "> 0"),
        ({"shock": "ETH=-0.3", "colour": "red"}, 422, "bad_parameter", "colour"),
    ],
)
def test_stress_refusals(
    api: Any, body: dict[str, Any], status: int, code: str, fragment: str
) -> None:
    assert fragment in _error(api.post("/v1/stress", json=body), status, code)


def test_stress_bad_bodies(api: Any) -> None:
    headers = {"Content-Type": "application/json"}
    _error(api.post("/v1/stress", data="{not json", headers=headers), 400, "bad_json")
    _error(api.post("/v1/stress", data="[1, 2]", headers=headers), 400, "bad_json")
    _error(api.post("/v1/stress", data='{"shock": NaN}', headers=headers), 400, "bad_json")
    _error(api.post("/v1/stress"), 400, "bad_json")
    form = {"Content-Type": "text/plain"}
    _error(api.post("/v1/stress", data='{"shock": "ETH=-0.3"}', headers=form), 415,
           "unsupported_media_type")  # fmt: skip
    _error(api.post("/v1/stress", data=b"x" * 100_000, headers=headers), 413, "too_large")


def test_insurance(api: Any, world: Any) -> None:
    pool = api.get("/v1/insurance/pool").json()
    assert pool["watermark"] == _cut(world)
    assert isinstance(pool["pool_total"], int)
    assert pool["pool_total"] > 0
    assert pool["attestation"]["epoch"] == 1
    deficits = api.get("/v1/insurance/deficits").json()
    assert deficits["total"] == len(deficits["deficits"]) > 0
    assert all(isinstance(d["fund_amount"], int) for d in deficits["deficits"])
    assert api.get("/v1/insurance/deficits?status=settled").json()["deficits"] == []
    payouts = api.get("/v1/insurance/payouts").json()
    assert payouts["watermark"] == _cut(world)
    assert payouts["total"] == len(payouts["payouts"]) > 0
    page = api.get("/v1/insurance/payouts", params={"limit": 1, "offset": 1}).json()
    assert page["payouts"] == payouts["payouts"][1:2]


def test_attestations(api: Any) -> None:
    latest = api.get("/v1/attestations/latest").json()
    assert latest["epoch"] == 1
    assert latest["root"].startswith("0x")
    assert isinstance(latest["liabilities"], int)
    assert latest["watermark"]
    deficits = api.get("/v1/insurance/deficits").json()["deficits"]
    protocol = deficits[0]["protocol"]
    proof = api.get(f"/v1/attestations/1/proofs/{protocol}").json()
    assert proof["verified"] is True
    assert proof["computed_root"] == latest["root"]
    assert proof["leaf"]["address"].lower() == protocol.lower()
    _error(api.get(f"/v1/attestations/9/proofs/{protocol}"), 404, "unknown_epoch")
    _error(api.get("/v1/attestations/0/proofs/" + protocol), 400, "bad_parameter")
    _error(api.get("/v1/attestations/1/proofs/0x000000000000000000000000000000000000dEaD"),
           404, "no_leaf")  # fmt: skip
    _error(api.get("/v1/attestations/x/proofs/" + protocol), 400, "bad_parameter")


def test_approve_needs_the_token(api: Any, token: str) -> None:
    waiting = api.get("/v1/insurance/payouts?state=approval_required").json()["payouts"]
    claim = waiting[0]["claim_id"]
    path = f"/v1/insurance/payouts/{claim}/approve"
    message = _error(api.post(path), 401, "unauthorized")
    assert "Bearer" in message
    _error(api.post(path, headers={"Authorization": "Basic abc"}), 401, "unauthorized")
    _error(api.post(path, headers={"Authorization": "Bearer wrong"}), 403, "forbidden")
    auth = {"Authorization": f"Bearer {token}"}
    _error(api.post("/v1/insurance/payouts/0x12/approve", headers=auth), 404, "unknown_claim")
    _error(api.post(f"/v1/insurance/payouts/0x{'ab' * 32}/approve", headers=auth), 404,
           "unknown_claim")  # fmt: skip
    _error(api.post(path, json={"by": ""}, headers=auth), 422, "bad_parameter")
    approved = api.post(path, json={"by": "risk desk"}, headers=auth)
    assert approved.status_code == 200, approved.text
    body = approved.json()
    assert body["payout"]["state"] == "approved"
    assert body["payout"]["approved_by"] == "risk desk"
    assert body["watermark"]
    again = api.post(path, headers=auth)  # idempotent
    assert again.json()["payout"]["state"] == "approved"
    confirmed = api.get("/v1/insurance/payouts?state=approved").json()["payouts"]
    assert claim in [p["claim_id"] for p in confirmed]


def test_status_health_metrics(api: Any, world: Any) -> None:
    status = api.get("/v1/status").json()
    assert status["watermark"] == _cut(world)
    assert {c["chain_id"] for c in status["chains"]} == set(world.registry.chain_ids)
    assert all(c["lag_blocks"] >= 0 for c in status["chains"])
    assert status["snapshot"]["watermark"] == _cut(world)
    health = api.get("/healthz")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    metrics = api.get("/metrics")
    assert metrics.headers["Content-Type"].startswith("text/plain")
    assert 'rtrm_api_requests_total{method="GET",route="/v1/status",status="200"}' in metrics.text
    assert "rtrm_api_snapshot_reloads_total" in metrics.text


def test_unknown_paths_and_methods(api: Any) -> None:
    assert "openapi" in _error(api.get("/v2/everything"), 404, "not_found")
    assert "GET" in _error(api.post("/v1/status"), 405, "method_not_allowed")
