"""RPC faults injected by a real proxy in front of anvil: the store ends up identical.

Each run indexes the same seeded, crashed chain through a :class:`FaultProxy` that
answers with HTTP 429/5xx, timeouts, truncated JSON, dropped connections, malformed
headers and logs, provider-style range-limit errors (with and without a suggested range)
and answers capped by log count below what one block holds; the result must equal the
fault-free index, and the faults must really have happened.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from rtrm_testing import index_once, store_fingerprint

from chains import faultplan
from chains.endpoints import RpcPolicy
from chains.faultplan import Fault, FaultPlan, FaultRule, RangeLimitStyle
from chains.faultproxy import FaultProxy
from indexer.pipeline import IndexerOptions

pytestmark = pytest.mark.chain

FAST_RPC = RpcPolicy(
    request_timeout_s=1.0,
    call_timeout_s=60.0,
    max_attempts=12,
    backoff_base_s=0.01,
    backoff_max_s=0.2,
    bench_base_s=0.05,
    bench_max_s=0.2,
)


@pytest.fixture(scope="module")
def reference(small_devnet: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    url = f"sqlite:///{tmp_path_factory.mktemp('reference') / 'rtrm.db'}"
    index_once(small_devnet.config_path, url)
    fingerprint: dict[str, Any] = store_fingerprint(url, small_devnet.nodes[0].chain_id)
    return fingerprint


PLANS = {
    "chaos": FaultPlan.chaos(0.3, seed=7, timeout_hold_s=1.2, retry_after_s=0.05),
    "alchemy-hint": FaultPlan(range_limit_blocks=3, range_limit_style=RangeLimitStyle.ALCHEMY),
    "infura-hint": FaultPlan(range_limit_blocks=2, range_limit_style=RangeLimitStyle.INFURA),
    "infura-no-hint": FaultPlan(
        range_limit_blocks=2, range_limit_style=RangeLimitStyle.INFURA, range_limit_hint=False
    ),
    "quicknode": FaultPlan(range_limit_blocks=4, range_limit_style=RangeLimitStyle.QUICKNODE),
    "generic": FaultPlan(range_limit_blocks=1, range_limit_style=RangeLimitStyle.GENERIC),
}
# Providers that cap an answer's log count (Infura, Alchemy: 10,000) below what one block
# holds: such blocks are read from their receipts, by block or by transaction.
RESULT_CAPS = {
    "block-receipts": FaultPlan(result_limit=5),
    "transaction-receipts": FaultPlan(
        result_limit=5,
        range_limit_hint=False,
        unsupported_methods=frozenset({"eth_getBlockReceipts"}),
    ),
}


@pytest.mark.parametrize("plan", sorted(PLANS))
def test_faults_change_nothing(
    small_devnet: Any, reference: dict[str, Any], plan: str, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'rtrm.db'}"
    upstream = small_devnet.nodes[0].rpc_url
    options = IndexerOptions(rpc=FAST_RPC, max_span=64)
    with FaultProxy.start(upstream, PLANS[plan]) as proxy:
        outcomes = index_once(small_devnet.config_path, url, rpc_urls=(proxy.url,), options=options)
        injected = proxy.stats()
    assert [o.status for o in outcomes] == ["ok"]
    assert injected.injected_total() > 0, f"the {plan} plan injected nothing"
    assert store_fingerprint(url, small_devnet.nodes[0].chain_id) == reference


@pytest.mark.parametrize("plan", sorted(RESULT_CAPS))
def test_a_block_with_more_logs_than_the_provider_answers_is_read_from_its_receipts(
    small_devnet: Any, reference: dict[str, Any], plan: str, tmp_path: Path
) -> None:
    from indexer.metrics import IndexerMetrics

    url = f"sqlite:///{tmp_path / 'rtrm.db'}"
    metrics = IndexerMetrics()
    with FaultProxy.start(small_devnet.nodes[0].rpc_url, RESULT_CAPS[plan]) as proxy:
        outcomes = index_once(
            small_devnet.config_path,
            url,
            rpc_urls=(proxy.url,),
            options=IndexerOptions(rpc=FAST_RPC, max_span=64),
            metrics=metrics,
        )
        stats = proxy.stats()
    assert [o.status for o in outcomes] == ["ok"]
    assert stats.injected[Fault.RESULT_LIMIT] > 0
    chain = str(small_devnet.nodes[0].chain_id)
    assert metrics.registry.get_sample_value(
        "rtrm_indexer_receipt_blocks_total", {"chain_id": chain}
    )
    receipts = stats.forwarded_calls
    if plan == "block-receipts":
        assert receipts["eth_getBlockReceipts"] > 0
    else:
        assert stats.injected[Fault.UNSUPPORTED] > 0
        assert receipts["eth_getTransactionReceipt"] > 0
    assert store_fingerprint(url, small_devnet.nodes[0].chain_id) == reference


def test_every_transient_fault_kind_is_survived(
    small_devnet: Any, reference: dict[str, Any], store_url: str
) -> None:
    """Every fault kind, on the first requests of each kind, on both stores."""
    from chains.faultplan import TRANSIENT_FAULTS

    every = (7, 11, 13, 17, 29, 19, 23)  # timeouts (the 5th) are the slowest: rarest
    rules = tuple(FaultRule(f, every_k=k) for f, k in zip(TRANSIENT_FAULTS, every, strict=True))
    plan = FaultPlan(rules=rules, timeout_hold_s=1.2, retry_after_s=0.05, range_limit_blocks=3)
    with FaultProxy.start(small_devnet.nodes[0].rpc_url, plan) as proxy:
        outcomes = index_once(
            small_devnet.config_path,
            store_url,
            rpc_urls=(proxy.url,),
            options=IndexerOptions(rpc=FAST_RPC),
        )
        injected = proxy.stats()
    assert [o.status for o in outcomes] == ["ok"]
    assert store_fingerprint(store_url, small_devnet.nodes[0].chain_id) == reference
    assert {Fault(k) for k, n in injected.injected.items() if n} >= set(TRANSIENT_FAULTS)


def test_malformed_headers_and_logs_are_read_again_never_trusted(
    small_devnet: Any, reference: dict[str, Any], store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Headers with a null hash or a non-hex number, logs that are null or lack fields: no
    false reorg, no dropped chain, no crash; the store equals the fault-free index."""
    methods = frozenset({"eth_getLogs", "eth_getBlockByNumber"})
    plan = FaultPlan(rules=(FaultRule(Fault.MALFORMED, 0.15, methods=methods),), seed=5)
    with FaultProxy.start(small_devnet.nodes[0].rpc_url, plan) as proxy:
        outcomes = index_once(
            small_devnet.config_path,
            store_url,
            rpc_urls=(proxy.url,),
            options=IndexerOptions(rpc=FAST_RPC, max_span=4),
        )
        injected = proxy.stats().injected
    assert [(o.status, o.reorgs) for o in outcomes] == [("ok", 0)]
    assert injected.get("malformed", 0) >= 3
    assert store_fingerprint(store_url, small_devnet.nodes[0].chain_id) == reference
    assert "malformed" in caplog.text
    assert "unexpected" not in caplog.text  # every break was recognised for what it is


@pytest.fixture(
    params=[value for key, value in faultplan._LOG_BREAKS if key == "blockHash"],
    ids=["null", "not-hex", "upper-case"],
)
def block_hash_break(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Any:
    """One of the fault proxy's ``blockHash`` breaks, made its only log break."""
    monkeypatch.setattr(faultplan, "_LOG_BREAKS", (("blockHash", request.param),))
    return request.param


def test_malformed_block_hashes_are_read_again_never_stored(
    small_devnet: Any,
    reference: dict[str, Any],
    store_url: str,
    caplog: pytest.LogCaptureFixture,
    block_hash_break: Any,
) -> None:
    """Every other answer to ``eth_getLogs`` has its first log's ``blockHash`` null, not
    hex or in upper case: each range is read again; no false reorg, and the ledger and the
    cursor hold the node's hashes only (a bad one used to become the cursor's hash, or break
    a NOT NULL)."""
    from sqlalchemy import text

    from chains.rpc import RpcClient
    from indexer.store import open_store

    rule = FaultRule(Fault.MALFORMED, every_k=2, methods=frozenset({"eth_getLogs"}))
    url, node = store_url, small_devnet.nodes[0]
    with FaultProxy.start(node.rpc_url, FaultPlan(rules=(rule,), seed=11)) as proxy:
        outcomes = index_once(
            small_devnet.config_path,
            url,
            rpc_urls=(proxy.url,),
            options=IndexerOptions(rpc=FAST_RPC, max_span=4),
        )
        injected = proxy.stats().injected
    assert [(o.status, o.reorgs) for o in outcomes] == [("ok", 0)]
    assert injected.get("malformed", 0) >= 3
    assert store_fingerprint(url, node.chain_id) == reference
    value = block_hash_break
    named = [line for line in caplog.messages if "): blockHash: hash " in line]
    assert named, "no blockHash was named"
    reason = (
        f"{str(value)!r} is not 0x + 64"
        if value is None or isinstance(value, str)
        else "in lower case"
    )
    assert all(reason in line for line in named)
    store = open_store(url, migrate=False)
    try:
        with store.engine.connect() as conn:
            params = {"c": node.chain_id}
            ledger = conn.execute(
                text("SELECT number, hash FROM block WHERE chain_id = :c"), params
            )
            stored: dict[int, str] = {int(n): str(h) for n, h in ledger}
            cursor = conn.execute(
                text("SELECT block_number, block_hash FROM cursor WHERE chain_id = :c"), params
            ).one()
    finally:
        store.dispose()
    with RpcClient(node.rpc_url) as client:
        numbers = sorted({*stored, cursor[0]})
        headers = client.batch([("eth_getBlockByNumber", [hex(n), False]) for n in numbers])
    truth = {int(h["number"], 16): h["hash"] for h in headers}
    assert stored == {n: truth[n] for n in stored}
    assert cursor[1] == truth[cursor[0]]


def test_an_unexpected_error_restarts_the_chain_instead_of_ending_the_process(
    small_devnet: Any,
    reference: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A bug (here: the first state derivation raises a RuntimeError) is logged with its
    traceback and that chain restarts from the store; the run still ends complete."""
    from indexer.state import ChainState

    apply, raised = ChainState.apply, list[bool]()

    def apply_once_broken(self: ChainState, decoded: Any) -> Any:
        if not raised:
            raised.append(True)
            raise RuntimeError("a bug in the state derivation")
        return apply(self, decoded)

    monkeypatch.setattr(ChainState, "apply", apply_once_broken)
    url = f"sqlite:///{tmp_path / 'rtrm.db'}"
    outcomes = index_once(small_devnet.config_path, url, options=IndexerOptions(rpc=FAST_RPC))
    assert [o.status for o in outcomes] == ["ok"]
    assert "unexpected RuntimeError('a bug in the state derivation')" in caplog.text
    assert "Traceback" in caplog.text
    assert store_fingerprint(url, small_devnet.nodes[0].chain_id) == reference


def test_rpc_errors_by_kind_reach_prometheus(small_devnet: Any, tmp_path: Path) -> None:
    from indexer.metrics import IndexerMetrics

    metrics = IndexerMetrics()
    plan = FaultPlan(rules=(FaultRule(Fault.HTTP_503, every_k=3),), retry_after_s=0.05)
    with FaultProxy.start(small_devnet.nodes[0].rpc_url, plan) as proxy:
        index_once(
            small_devnet.config_path,
            f"sqlite:///{tmp_path / 'rtrm.db'}",
            rpc_urls=(proxy.url,),
            options=IndexerOptions(rpc=FAST_RPC, max_span=4),
            metrics=metrics,
        )
    chain = str(small_devnet.nodes[0].chain_id)
    samples = {
        s.labels["kind"]: s.value
        for family in metrics.registry.collect()
        if family.name == "rtrm_indexer_rpc_errors"
        for s in family.samples
        if s.name.endswith("_total") and s.labels["chain_id"] == chain
    }
    assert sum(samples.values()) > 0, samples
