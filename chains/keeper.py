"""Liquidator keepers and market crashes: the simulated outside world acting on the devnet.

Keepers behave like the liquidation bots on a real chain: they learn who holds positions
from the protocols' events (``Borrow``, ``PositionOpened``, ``PositionModified``), check each
account with the protocols' own view functions (batched ``eth_call``), and send
``liquidationCall`` / ``liquidate`` from their own account for every account the contracts
allow, round after round until none is left. A liquidation that reverts because another
one got there first is counted, not raised.

A crash (:func:`crash`) moves an asset's oracle prices, and those of every asset that rolls
up to it (ETH moves wstETH and rvETH too), on every chain, geometrically over a few blocks;
the keepers act after each block, as bots would. Positions whose collateral gaps through
zero leave bad debt on-chain: ``DeficitCreated`` (lending), ``BadDebt`` (options) and
``Liquidated`` with a non-zero ``badDebt`` (perps).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from eth_abi.abi import decode as abi_decode

from chains.abi import encode_call, event_topic
from chains.deploy import DEPLOYER
from chains.exceptions import DevnetError
from chains.rpc import RpcClient, hex_to_int, to_hex
from chains.seed import LIQUIDATOR
from chains.world import ASSETS, TOKENS, feed_name

__all__ = ["ChainContracts", "LiquidationCounts", "crash", "liquidate_all"]

log = logging.getLogger(__name__)

MAX_UINT = 2**256 - 1
WAD = 10**18
_CALL_BATCH = 500
_MAX_ROUNDS = 20
_RECEIPT_WAIT_S = 10.0
_BORROW = event_topic("Borrow(address,address,address,uint256)")
_OPTION_OPENED = event_topic("PositionOpened(address,uint256,int256,uint256,int256)")
_PERP_MODIFIED = event_topic(
    "PositionModified(address,bytes32,int256,uint256,int256,int256,int256)"
)
_DEFICIT = event_topic("DeficitCreated(address,address,uint256)")
_OPTION_BAD_DEBT = event_topic("BadDebt(address,uint256)")
_PERP_LIQUIDATED = event_topic("Liquidated(address,address,int256,uint256,uint256)")


@dataclass(frozen=True, slots=True)
class ChainContracts:
    """The addresses a keeper needs on one chain."""

    chain_id: int
    rpc_url: str
    contracts: dict[str, str]
    tokens: dict[str, str]


@dataclass(slots=True)
class LiquidationCounts:
    lending: int = 0
    options: int = 0
    perps: int = 0
    reverted: int = 0
    lending_deficits: int = 0  # DeficitCreated events
    options_bad_debts: int = 0  # BadDebt events
    perps_bad_debts: int = 0  # Liquidated events with badDebt > 0
    blocks: list[int] = field(default_factory=list)

    def add(self, other: LiquidationCounts) -> None:
        for name in (
            "lending",
            "options",
            "perps",
            "reverted",
            "lending_deficits",
            "options_bad_debts",
            "perps_bad_debts",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.blocks.extend(other.blocks)


class _Keeper:
    def __init__(self, chain: ChainContracts) -> None:
        self.chain = chain
        self.client = RpcClient(chain.rpc_url, timeout_s=120)
        self.pool = chain.contracts["lending_pool"]
        self.options = chain.contracts["options_market"]
        self.perps = chain.contracts["perps_market"]
        self._accounts: dict[str, list[str]] | None = None

    def close(self) -> None:
        self.client.close()

    def accounts(self) -> dict[str, list[str]]:
        """Every account that ever borrowed / opened an option / traded a perp (from logs)."""
        if self._accounts is None:
            self._accounts = {
                "lending": self._senders(self.pool, _BORROW, topic_index=2),
                "options": self._senders(self.options, _OPTION_OPENED, topic_index=1),
                "perps": self._senders(self.perps, _PERP_MODIFIED, topic_index=1),
            }
        return self._accounts

    def _senders(self, address: str, topic: str, *, topic_index: int) -> list[str]:
        logs = self.client.call(
            "eth_getLogs",
            [{"address": address, "topics": [topic], "fromBlock": "0x0", "toBlock": "latest"}],
        )
        return sorted({"0x" + entry["topics"][topic_index][26:] for entry in logs})

    def _calls(self, to: str, signature: str, users: list[str]) -> list[bytes]:
        results: list[bytes] = []
        for i in range(0, len(users), _CALL_BATCH):
            chunk = users[i : i + _CALL_BATCH]
            replies = self.client.batch(
                [
                    ("eth_call", [{"to": to, "data": encode_call(signature, u)}, "latest"])
                    for u in chunk
                ]
            )
            results.extend(bytes.fromhex(r[2:]) for r in replies)
        return results

    @staticmethod
    def _word(data: bytes, index: int, *, signed: bool = False) -> int:
        return int.from_bytes(data[32 * index : 32 * index + 32], "big", signed=signed)

    def liquidatable(self) -> dict[str, list[str]]:
        accounts = self.accounts()
        lending = [
            u
            for u, r in zip(
                accounts["lending"],
                self._calls(self.pool, "getUserAccountData(address)", accounts["lending"]),
                strict=True,
            )
            if self._word(r, 5) < WAD
        ]
        options = [
            u
            for u, r in zip(
                accounts["options"],
                self._calls(self.options, "accountMargin(address)", accounts["options"]),
                strict=True,
            )
            if self._word(r, 1) < self._word(r, 2)
        ]
        perps = [
            u
            for u, r in zip(
                accounts["perps"],
                self._calls(self.perps, "getAccount(address)", accounts["perps"]),
                strict=True,
            )
            if self._word(r, 4, signed=True) < self._word(r, 5)
        ]
        return {"lending": lending, "options": options, "perps": perps}

    def lending_liquidation(self, user: str, prices: dict[str, int]) -> str | None:
        """Calldata repaying the user's largest debt against their largest collateral."""
        raw = self.client.call(
            "eth_call",
            [{"to": self.pool, "data": encode_call("getUserReserves(address)", user)}, "latest"],
        )
        assets, supplied, borrowed = abi_decode(
            ["address[]", "uint256[]", "uint256[]"], bytes.fromhex(raw[2:])
        )
        decimals = self._decimals()

        def value(asset: str, units: int) -> int:
            return int(units * prices[asset.lower()] // 10 ** decimals[asset.lower()])

        debts = [(value(a, b), a) for a, b in zip(assets, borrowed, strict=True) if b > 0]
        collaterals = [(value(a, s), a) for a, s in zip(assets, supplied, strict=True) if s > 0]
        if not debts or not collaterals:
            return None
        return encode_call(
            "liquidationCall(address,address,address,uint256)",
            max(collaterals)[1],
            max(debts)[1],
            user,
            MAX_UINT,
        )

    def _decimals(self) -> dict[str, int]:
        by_symbol = {t.symbol: t.decimals for t in TOKENS}
        return {address.lower(): by_symbol[symbol] for symbol, address in self.chain.tokens.items()}

    def token_prices(self) -> dict[str, int]:
        """token address -> USD price with 8 decimals, from the chain's feeds."""
        asset_of = {t.symbol: t.asset_id for t in TOKENS}
        prices = {}
        for symbol, address in self.chain.tokens.items():
            feed = self.chain.contracts[feed_name(asset_of[symbol])]
            raw = self.client.call(
                "eth_call", [{"to": feed, "data": encode_call("latestRoundData()")}, "latest"]
            )
            prices[address.lower()] = self._word(bytes.fromhex(raw[2:]), 1, signed=True)
        return prices

    def send_and_mine(self, sender: str, txs: Iterable[tuple[str, str]]) -> LiquidationCounts:
        """Send (to, data) transactions from ``sender``, mine them, and tally the outcome."""
        txs = list(txs)
        counts = LiquidationCounts()
        if not txs:
            return counts
        nonce = hex_to_int(self.client.call("eth_getTransactionCount", [sender, "pending"]))
        hashes = self.client.batch(
            [
                (
                    "eth_sendTransaction",
                    [
                        {
                            "from": sender,
                            "to": to,
                            "data": data,
                            "gas": to_hex(3_000_000),
                            "gasPrice": "0x0",
                            "nonce": to_hex(nonce + i),
                        }
                    ],
                )
                for i, (to, data) in enumerate(txs)
            ]
        )
        self.client.call("evm_mine", [])
        receipts = self._receipts(hashes)
        for (to, _), receipt in zip(txs, receipts, strict=True):
            if receipt is None:
                raise DevnetError(
                    f"chain {self.chain.chain_id}: a keeper transaction was not mined; "
                    "is the node mining?"
                )
            counts.blocks.append(hex_to_int(receipt["blockNumber"]))
            if receipt["status"] != "0x1":
                counts.reverted += 1
                continue
            kind = (
                "lending"
                if to == self.pool
                else "options"
                if to == self.options
                else "perps"
                if to == self.perps
                else None
            )
            if kind is not None:
                setattr(counts, kind, getattr(counts, kind) + 1)
            for entry in receipt["logs"]:
                topic = entry["topics"][0]
                if topic == _DEFICIT:
                    counts.lending_deficits += 1
                elif topic == _OPTION_BAD_DEBT:
                    counts.options_bad_debts += 1
                elif topic == _PERP_LIQUIDATED and int(entry["data"][2 + 128 : 2 + 192], 16) > 0:
                    counts.perps_bad_debts += 1
        counts.blocks = sorted(set(counts.blocks))
        return counts

    def _receipts(self, hashes: list[str]) -> list[dict[str, Any] | None]:
        """Receipts of mined transactions; anvil may answer null for a few ms after mining."""
        deadline = time.monotonic() + _RECEIPT_WAIT_S
        while True:
            receipts: list[dict[str, Any] | None] = self.client.batch(
                [("eth_getTransactionReceipt", [h]) for h in hashes]
            )
            if all(r is not None for r in receipts) or time.monotonic() > deadline:
                return receipts
            time.sleep(0.02)


def _liquidation_round(keeper: _Keeper) -> LiquidationCounts:
    due = keeper.liquidatable()
    txs: list[tuple[str, str]] = []
    if due["lending"]:
        prices = keeper.token_prices()
        for user in due["lending"]:
            data = keeper.lending_liquidation(user, prices)
            if data is not None:
                txs.append((keeper.pool, data))
    txs += [(keeper.options, encode_call("liquidate(address)", u)) for u in due["options"]]
    txs += [(keeper.perps, encode_call("liquidate(address)", u)) for u in due["perps"]]
    return keeper.send_and_mine(LIQUIDATOR, txs)


def _liquidate_until_done(keeper: _Keeper) -> LiquidationCounts:
    total = LiquidationCounts()
    for _ in range(_MAX_ROUNDS):
        counts = _liquidation_round(keeper)
        total.add(counts)
        if counts.lending + counts.options + counts.perps == 0:
            break
    return total


def liquidate_all(chains: list[ChainContracts]) -> dict[int, LiquidationCounts]:
    """Run keepers on every chain until no account can be liquidated."""
    keepers = [_Keeper(chain) for chain in chains]
    try:
        return {k.chain.chain_id: _liquidate_until_done(k) for k in keepers}
    finally:
        for keeper in keepers:
            keeper.close()


def crash(
    chains: list[ChainContracts], *, asset: str, move: float, blocks: int = 3
) -> dict[int, LiquidationCounts]:
    """Move ``asset`` (and every asset rolling up to it) by ``move`` (e.g. -0.35) over
    ``blocks`` blocks on every chain, with keepers liquidating after each block."""
    moved = [a.asset_id for a in ASSETS if asset in (a.underlying, a.asset_id)]
    if not moved:
        known = ", ".join(a.asset_id for a in ASSETS)
        raise DevnetError(f"unknown asset {asset!r}; the devnet's assets are {known}")
    if not -0.99 <= move <= 10 or move == 0:  # noqa: PLR2004
        raise DevnetError(
            f"--move must be a non-zero fraction between -0.99 and 10 (e.g. -0.35), got {move}"
        )
    if blocks < 1:
        raise DevnetError(f"--blocks must be at least 1, got {blocks}")
    keepers = [_Keeper(chain) for chain in chains]
    try:
        return _crash(keepers, moved, asset=asset, move=move, blocks=blocks)
    finally:
        for keeper in keepers:
            keeper.close()


def _crash(
    keepers: list[_Keeper], moved: list[str], *, asset: str, move: float, blocks: int
) -> dict[int, LiquidationCounts]:
    start = {k.chain.chain_id: {a: _latest_answer(k, a) for a in moved} for k in keepers}
    results = {k.chain.chain_id: LiquidationCounts() for k in keepers}
    for step in range(1, blocks + 1):
        factor = (1.0 + move) ** (step / blocks)
        for keeper in keepers:
            updates = [
                (
                    keeper.chain.contracts[feed_name(a)],
                    encode_call(
                        "updateAnswer(int256)",
                        max(1, round(start[keeper.chain.chain_id][a] * factor)),
                    ),
                )
                for a in moved
            ]
            keeper.send_and_mine(DEPLOYER, updates)
            log.info(
                "chain %s: %s at %.1f%% of its pre-crash price",
                keeper.chain.chain_id,
                asset,
                factor * 100,
            )
        for keeper in keepers:
            results[keeper.chain.chain_id].add(_liquidate_until_done(keeper))
    return results


def _latest_answer(keeper: _Keeper, asset: str) -> int:
    feed = keeper.chain.contracts[feed_name(asset)]
    raw = keeper.client.call(
        "eth_call", [{"to": feed, "data": encode_call("latestRoundData()")}, "latest"]
    )
    return int.from_bytes(bytes.fromhex(raw[2:])[32:64], "big", signed=True)
