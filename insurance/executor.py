"""Paying claims on chain, exactly once, through a :class:`PayoutExecutor` seam.

The seam (:class:`PayoutExecutor`) is what a payout needs from a chain: the fund's
balance, whether a claim id is already paid, sending ``payClaim``, and the outcome of a
sent transaction. :class:`ChainPayoutExecutor` implements it over JSON-RPC against
``contracts/src/InsuranceFund.sol``; tests may also pass a fake.

Exactly once, end to end:

- the claim id is deterministic (:func:`insurance.deficits.claim_id`) and the contract
  pays each id at most once (a second ``payClaim`` reverts);
- before sending, the executor asks the contract (``isClaimPaid``) and, if the claim is
  paid, records it ``confirmed`` with the ``ClaimPaid`` event's transaction and block:
  a crash between sending and recording is recovered by reading the chain;
- ``sent`` is committed with the transaction hash before anything else happens (the next
  payout's check, or any wait); on the next run a ``sent`` payout is reconciled from its
  receipt (or re-checked on chain when the node no longer knows the transaction: a
  dropped transaction is sent again, which is safe because of the contract's guard).

One run (:func:`execute_payouts`) has two phases, so that N payouts cost about one
block time rather than N receipts in a row:

1. **send**: for each due payout in order, check the claim id on chain, check the fund
   holds the amount *net of the payouts already in flight from it*, send, commit
   ``sent`` with the hash; then the next payout. A payout an earlier run left ``sent``
   is looked up once without waiting: recorded if its receipt is there, else in flight.
2. **settle**: wait for every receipt under one shared deadline (``timeout_s`` for the
   whole batch, not per payout) and record each ``confirmed`` / ``failed`` / still
   ``sent`` (pending).

A crash in phase 1 leaves at most one transaction unrecorded (the one being sent),
found paid by its claim id on the next run; a crash in phase 2 leaves ``sent`` rows,
reconciled from their receipts.

Operator credentials (:func:`operator_from`): ``RTRM_INSURANCE_OPERATOR_KEY`` (a hex
private key: transactions are signed here and sent raw, EIP-155) or an address
(``operator`` in ``[insurance]`` or ``RTRM_INSURANCE_OPERATOR``) that the node signs for:
an unlocked account, or any address on an anvil devnet (``--auto-impersonate``; the
devnet's deployer ``0xf39F…2266`` is the funds' owner and operator). The key is never
logged or printed; :class:`Operator` leaves it out of its repr.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from eth_account import Account

from chains.abi import encode_call, event_topic
from chains.exceptions import ChainError, ConfigError, ExecutionRevertedError, RPCError
from chains.rpc import RpcClient, hex_to_int, to_hex
from chains.spec import Registry, checksum_address
from indexer.store import Store
from insurance.config import InsuranceConfig
from insurance.exceptions import OperatorError
from insurance.payouts import (
    SENDABLE_STATES,
    PayoutView,
    load_payouts,
    mark_confirmed,
    mark_failed,
    mark_sent,
)

__all__ = [
    "CLAIM_PAID_TOPIC",
    "KEY_ENV",
    "OPERATOR_ENV",
    "ChainPayoutExecutor",
    "ExecutionReport",
    "Operator",
    "PaidClaim",
    "PayoutExecutor",
    "TxOutcome",
    "execute_payouts",
    "operator_from",
]

log = logging.getLogger(__name__)

KEY_ENV = "RTRM_INSURANCE_OPERATOR_KEY"
OPERATOR_ENV = "RTRM_INSURANCE_OPERATOR"
CLAIM_PAID_TOPIC = event_topic("ClaimPaid(bytes32,address,uint256,address)")
PAY_CLAIM = "payClaim(bytes32,address,uint256)"
PAY_CLAIM_GAS = 200_000
_POLL_S = 0.05


@dataclass(frozen=True, slots=True)
class Operator:
    """Who signs payouts: an address, and a private key when signing locally."""

    address: str
    key: bytes | None = field(default=None, repr=False, compare=False)


def operator_from(config: InsuranceConfig, env: Mapping[str, str] | None = None) -> Operator | None:
    """The operator from ``RTRM_INSURANCE_OPERATOR_KEY``, else the configured address."""
    env = os.environ if env is None else env
    address = env.get(OPERATOR_ENV) or config.operator
    if address is not None:
        try:
            address = str(checksum_address(address, key=OPERATOR_ENV))
        except ConfigError as exc:
            raise OperatorError(str(exc)) from None
    secret = env.get(KEY_ENV)
    if not secret:
        return None if address is None else Operator(address)
    try:
        account = Account.from_key(secret)
    except (ValueError, TypeError):
        # never echo the value: it is (or is close to) a private key
        raise OperatorError(
            f"{KEY_ENV} is not a private key (expected 0x and 64 hex digits); fix it or unset it"
        ) from None
    signer = str(account.address)
    if address is not None and address != signer:
        raise OperatorError(
            f"{KEY_ENV} belongs to {signer} but the configured operator is {address}; "
            "make them agree or remove one"
        )
    return Operator(signer, bytes(account.key))


@dataclass(frozen=True, slots=True)
class PaidClaim:
    """A claim the fund has paid: the transaction and block of its ``ClaimPaid`` event."""

    tx_hash: str | None
    block_number: int | None
    amount: int | None


@dataclass(frozen=True, slots=True)
class TxOutcome:
    """A sent transaction: mined and succeeded, reverted, still pending, or unknown to the
    node (dropped)."""

    status: Literal["success", "reverted", "pending", "unknown"]
    block_number: int | None = None
    reason: str | None = None


class PayoutExecutor(Protocol):
    """What paying a claim needs from a chain (the seam tests can fake)."""

    def fund_balance(self, chain_id: int, fund: str) -> int: ...

    def claim_paid(self, chain_id: int, fund: str, claim_id: str) -> PaidClaim | None: ...

    def send_claim(self, payout: PayoutView) -> str: ...

    def wait(self, chain_id: int, tx_hash: str, timeout_s: float) -> TxOutcome: ...

    def close(self) -> None: ...


class ChainPayoutExecutor:
    """:class:`PayoutExecutor` over JSON-RPC (the first RPC URL of each chain)."""

    def __init__(self, registry: Registry, operator: Operator | None) -> None:
        self.registry = registry
        self.operator = operator
        self._clients: dict[int, RpcClient] = {}
        self._checked: set[tuple[int, str]] = set()

    def _client(self, chain_id: int) -> RpcClient:
        if chain_id not in self._clients:
            chain = self.registry.chain(chain_id)
            self._clients[chain_id] = RpcClient(chain.rpc_urls[0], timeout_s=30)
        return self._clients[chain_id]

    def _call(self, chain_id: int, to: str, data: str) -> str:
        result: str = self._client(chain_id).call("eth_call", [{"to": to, "data": data}, "latest"])
        return result

    def fund_balance(self, chain_id: int, fund: str) -> int:
        return hex_to_int(self._call(chain_id, fund, encode_call("totalAssets()")))

    def claim_paid(self, chain_id: int, fund: str, claim_id: str) -> PaidClaim | None:
        paid = hex_to_int(self._call(chain_id, fund, encode_call("isClaimPaid(bytes32)", claim_id)))
        if not paid:
            return None
        spec = next((c for c in self.registry.chain(chain_id).contracts if c.address == fund), None)
        start = 0 if spec is None else spec.deployed_block
        logs: list[dict[str, Any]] = self._client(chain_id).call(
            "eth_getLogs",
            [
                {
                    "address": fund,
                    "topics": [CLAIM_PAID_TOPIC, claim_id],
                    "fromBlock": to_hex(start),
                    "toBlock": "latest",
                }
            ],
        )
        if not logs:  # paid, but the event is out of the node's log range
            return PaidClaim(None, None, None)
        entry = logs[0]
        return PaidClaim(
            entry["transactionHash"], hex_to_int(entry["blockNumber"]), hex_to_int(entry["data"])
        )

    def _check_operator(self, chain_id: int, fund: str, operator: Operator) -> None:
        if (chain_id, fund) in self._checked:
            return
        data = encode_call("isOperator(address)", operator.address)
        if not hex_to_int(self._call(chain_id, fund, data)):
            raise OperatorError(
                f"{operator.address} is not an operator of the insurance fund {fund} on chain "
                f"{chain_id}; the fund's owner must call setOperator({operator.address}, true)"
            )
        self._checked.add((chain_id, fund))

    def send_claim(self, payout: PayoutView) -> str:
        operator = self.operator
        if operator is None:
            raise OperatorError(
                f"no operator to pay claim {payout.claim_id} on chain {payout.chain_id}: set "
                f'{KEY_ENV} (a private key), or operator = "0x…" in [insurance] (an address '
                "the node signs for, e.g. the devnet's deployer)"
            )
        self._check_operator(payout.chain_id, payout.fund, operator)
        data = encode_call(PAY_CLAIM, payout.claim_id, payout.recipient, payout.amount)
        client = self._client(payout.chain_id)
        if operator.key is None:
            tx = {"from": operator.address, "to": payout.fund, "data": data}
            tx["gas"] = to_hex(PAY_CLAIM_GAS)
            sent: str = client.call("eth_sendTransaction", [tx])
            return sent
        nonce = hex_to_int(client.call("eth_getTransactionCount", [operator.address, "pending"]))
        signed = Account.sign_transaction(
            {
                "to": payout.fund,
                "data": data,
                "gas": PAY_CLAIM_GAS,
                "gasPrice": hex_to_int(client.call("eth_gasPrice")),
                "nonce": nonce,
                "chainId": payout.chain_id,
                "value": 0,
            },
            operator.key,
        )
        raw: str = client.call("eth_sendRawTransaction", ["0x" + signed.raw_transaction.hex()])
        return raw

    def wait(self, chain_id: int, tx_hash: str, timeout_s: float) -> TxOutcome:
        client = self._client(chain_id)
        deadline = time.monotonic() + timeout_s
        while True:
            receipt = client.call("eth_getTransactionReceipt", [tx_hash])
            if receipt is not None:
                block = hex_to_int(receipt["blockNumber"])
                if receipt["status"] == "0x1":
                    return TxOutcome("success", block)
                return TxOutcome("reverted", block, self._revert_reason(client, tx_hash, block))
            if time.monotonic() >= deadline:
                known = client.call("eth_getTransactionByHash", [tx_hash])
                return TxOutcome("pending" if known is not None else "unknown")
            time.sleep(_POLL_S)

    @staticmethod
    def _revert_reason(client: RpcClient, tx_hash: str, block: int) -> str:
        tx = client.call("eth_getTransactionByHash", [tx_hash]) or {}
        call = {"from": tx.get("from"), "to": tx.get("to"), "data": tx.get("input", "0x")}
        try:  # replay on the parent state: usually reproduces the revert with its reason
            client.call("eth_call", [call, to_hex(block - 1)])
        except ExecutionRevertedError as exc:
            return exc.reason or str(exc)
        except RPCError as exc:
            return f"reverted (replay failed: {exc})"
        return "reverted (an earlier transaction in the same block made it fail)"

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()


@dataclass(frozen=True, slots=True)
class ExecutionReport:
    """Claim ids by what happened to them in one run; ``paid_amount`` is what the funds
    paid out in this run (confirmed now, recovered ones included)."""

    confirmed: tuple[str, ...] = ()
    recovered: tuple[str, ...] = ()
    pending: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()
    awaiting_approval: tuple[str, ...] = ()
    paid_amount: int = 0


@dataclass(slots=True)
class _Run:
    store: Store
    executor: PayoutExecutor
    confirmed: list[str] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    paid: int = 0
    # payouts sent and not mined yet, per (chain id, fund): the fund's balance on chain
    # does not show them until they are
    in_flight: dict[tuple[int, str], int] = field(default_factory=dict)

    def confirm(self, payout: PayoutView, paid: PaidClaim, *, recovered: bool) -> None:
        with self.store.transaction() as conn:
            mark_confirmed(conn, payout.claim_id, paid.tx_hash, paid.block_number)
        (self.recovered if recovered else self.confirmed).append(payout.claim_id)
        self.paid += payout.amount
        log.info(
            "chain %s: claim %s paid %d to %s (tx %s, block %s)%s",
            payout.chain_id,
            payout.claim_id,
            payout.amount,
            payout.recipient,
            paid.tx_hash,
            paid.block_number,
            " (found on chain)" if recovered else "",
        )

    def fail(self, payout: PayoutView, error: str) -> None:
        with self.store.transaction() as conn:
            mark_failed(conn, payout.claim_id, error)
        self.failed.append(payout.claim_id)
        log.warning("chain %s: claim %s failed: %s", payout.chain_id, payout.claim_id, error)

    def send(self, payout: PayoutView) -> str | None:
        """Phase 1 for one payout: the hash of the transaction sent and recorded ``sent``,
        or None when nothing was sent (found paid on chain, or the fund is short)."""
        ex = self.executor
        paid = ex.claim_paid(payout.chain_id, payout.fund, payout.claim_id)
        if paid is not None:
            self.confirm(payout, paid, recovered=True)
            return None
        fund = (payout.chain_id, payout.fund)
        reserved = self.in_flight.get(fund, 0)
        balance = ex.fund_balance(payout.chain_id, payout.fund)
        if balance - reserved < payout.amount:
            self.fail(
                payout,
                f"the fund {payout.fund} on chain {payout.chain_id} holds {balance}"
                + (f" ({reserved} of it on its way out in this run)" if reserved else "")
                + f" < {payout.amount}; move capital to it and run trigger again (same claim "
                "id: a retry cannot pay twice)",
            )
            return None
        tx_hash = ex.send_claim(payout)
        with self.store.transaction() as conn:  # recorded before anything else happens
            mark_sent(conn, payout.claim_id, tx_hash)
        self.in_flight[fund] = reserved + payout.amount
        return tx_hash

    def resume(self, payout: PayoutView, tx_hash: str) -> bool:
        """Phase 1 for a payout an earlier run left ``sent``: recorded at once if its
        receipt is there (or the node dropped it); True if still pending (it then counts
        as in flight and waits in phase 2)."""
        outcome = self.executor.wait(payout.chain_id, tx_hash, 0.0)
        if outcome.status == "pending":
            fund = (payout.chain_id, payout.fund)
            self.in_flight[fund] = self.in_flight.get(fund, 0) + payout.amount
            return True
        self.record(payout, tx_hash, outcome)
        return False

    def settle(self, payout: PayoutView, tx_hash: str, timeout_s: float) -> None:
        """Phase 2 for one payout: its receipt (waiting at most ``timeout_s``) recorded."""
        self.record(payout, tx_hash, self.executor.wait(payout.chain_id, tx_hash, timeout_s))

    def record(self, payout: PayoutView, tx_hash: str, outcome: TxOutcome) -> None:
        ex = self.executor
        if outcome.status == "success":
            self.confirm(
                payout, PaidClaim(tx_hash, outcome.block_number, payout.amount), recovered=False
            )
            return
        if outcome.status == "pending":
            self.pending.append(payout.claim_id)
            log.info(
                "chain %s: claim %s still pending (tx %s)",
                payout.chain_id,
                payout.claim_id,
                tx_hash,
            )
            return
        paid = ex.claim_paid(payout.chain_id, payout.fund, payout.claim_id)
        if paid is not None:  # another transaction of ours paid it first
            self.confirm(payout, paid, recovered=True)
        elif outcome.status == "reverted":
            self.fail(
                payout, f"tx {tx_hash} reverted in block {outcome.block_number}: {outcome.reason}"
            )
        else:
            self.fail(payout, f"tx {tx_hash} was dropped by the node; it will be sent again")

    def unreachable(self, payout: PayoutView, exc: RPCError | ChainError) -> None:
        """A chain error on ``payout``: a revert fails it, anything else leaves it as it is."""
        if isinstance(exc, ExecutionRevertedError):
            self.fail(payout, f"payClaim would revert: {exc.reason or exc}")
            return
        self.pending.append(payout.claim_id)
        log.warning("chain %s: claim %s skipped: %s", payout.chain_id, payout.claim_id, exc)


def execute_payouts(
    store: Store, executor: PayoutExecutor, *, timeout_s: float = 30.0
) -> ExecutionReport:
    """Send every sendable payout, then reconcile every ``sent`` one (module docstring).

    ``timeout_s`` bounds the whole wait for receipts (phase 2), however many payouts. A
    payout whose chain cannot be reached is skipped (logged, left as it was) so one chain
    down never blocks the others; any other exception propagates, leaving the store
    consistent (each transition is its own transaction).
    """
    with store.engine.connect() as conn:
        todo = load_payouts(conn, (*SENDABLE_STATES, "sent"))
        waiting = load_payouts(conn, ("approval_required",))
    run = _Run(store, executor)
    in_flight: list[tuple[PayoutView, str]] = []
    for payout in todo:
        try:
            if payout.state == "sent" and payout.tx_hash is not None:
                tx_hash = payout.tx_hash if run.resume(payout, payout.tx_hash) else None
            else:
                tx_hash = run.send(payout)
        except (RPCError, ChainError) as exc:
            run.unreachable(payout, exc)
            continue
        if tx_hash is not None:
            in_flight.append((payout, tx_hash))
    if in_flight:
        log.debug("%d payouts sent or in flight; waiting for their receipts", len(in_flight))
    deadline = time.monotonic() + timeout_s
    for payout, tx_hash in in_flight:
        try:
            run.settle(payout, tx_hash, max(0.0, deadline - time.monotonic()))
        except (RPCError, ChainError) as exc:
            run.unreachable(payout, exc)
    if not todo and not waiting:
        log.debug("no payouts to send")
    return ExecutionReport(
        tuple(run.confirmed),
        tuple(run.recovered),
        tuple(run.pending),
        tuple(run.failed),
        tuple(p.claim_id for p in waiting),
        run.paid,
    )
