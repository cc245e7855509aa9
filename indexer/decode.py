"""Fast, exact decoding of raw ``eth_getLogs`` entries into :class:`DecodedLog` values.

``eth_abi.decode`` runs at about 39k events/s, as slow as fetching them. Here each event of
every compiled contract (:func:`chains.artifacts.event_table`, read at start-up, so new
events need no code change) gets a decoder specialised for its layout: straight-line Python
generated once per topic0 that checks the topic count and data length, converts the data in
one ``bytes.fromhex`` call and reads each 32-byte word with ``int.from_bytes`` at a fixed
offset. Events with dynamic or composite data (``string``, ``bytes``, arrays, tuples) decode
their data with ``eth_abi`` instead, so every ABI works.

Invariants:

- Exact: every value equals what ``eth_abi.decode`` returns for the same bytes. A word that
  ``eth_abi`` rejects (``uint8`` or ``address`` with high bits set, a ``bool`` not 0/1, an
  ``int8`` not sign-extended, ``bytes4`` with non-zero padding) and any malformed log
  (missing field, non-hex, wrong topic count or data length) raise
  :class:`~indexer.exceptions.DecodeError` naming chain id, block, tx hash, log index, event
  and field: never a crash, never a wrong value. The fast path only decides *that* a log is
  bad; a checked, field-by-field pass then finds *where* and *why* (:func:`_diagnose`).
- Values: ``uintN``/``intN`` -> ``int``; ``bool`` -> ``bool``; ``address`` -> EIP-55
  checksummed ``str`` (kept in bounded caches: addresses repeat, a checksum costs a
  keccak); ``bytesN``, ``bytes32`` included -> ``"0x"`` + 2N lowercase hex digits; an
  indexed ``string``/``bytes``/array/tuple -> its topic (the keccak of the value) as 0x-hex;
  in data, ``string`` -> ``str``, ``bytes`` -> ``bytes``, arrays and tuples -> tuples.
- Logs whose topic0 is not one of our events, or with no topics, are skipped and counted
  (:attr:`LogDecoder.unknown_topics`), not errors. Block and transaction hashes are checked
  (0x + 64 hex) and passed through as the node sent them.
"""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cache, partial
from itertools import islice
from operator import itemgetter
from typing import Any

from chains.abi import parse_signature
from chains.artifacts import EventAbi, event_table
from indexer import native
from indexer.abiwords import (
    ADDRESS_PARAM,
    BOOL_TOPICS,
    BOOL_WORDS,
    HEX_WORD,
    QUANTITIES,
    WORD,
    ArgValue,
    MalformedError,
    Param,
    abi_values,
    checked_address,
    hex_bytes,
    node_hash,
    param_kind,
    topic_word,
    word_value,
)
from indexer.exceptions import DecodeError, MalformedLogError

__all__ = ["ArgValue", "DecodedLog", "LogDecoder", "decode_logs", "default_decoder"]

# Entries per address cache of a decoder (topic -> address, data word -> address, contract
# -> address). A miss costs a checksum (a keccak, ~7 µs) and a world's addresses recur far
# apart (a backfill meets every user once per phase of activity: with 65k entries, a 280k
# user world missed on nearly every log), so they hold half a million addresses: up to
# ~300 B per address and form, ~250 MB when full.
DEFAULT_CACHE_SIZE = 524_288
_LOG_KEYS: tuple[str, ...] = ("topics", "data", "address", "blockNumber", "blockHash")
_LOG_KEYS += ("transactionHash", "transactionIndex", "logIndex")
_LOG_FIELDS = itemgetter(*_LOG_KEYS)
_UNSET = object()  # "no previous log": unequal to anything a node can send


@dataclass(frozen=True, slots=True)
class DecodedLog:
    """One decoded event; ``(chain_id, tx_hash, log_index)`` is its unique key.

    ``address`` is the emitting contract (checksummed), ``contract`` the artifact declaring
    the event (for shared events such as ``Transfer``, the first one), ``args`` the parameters
    by name in ABI order, typed as the module docstring says.
    """

    chain_id: int
    block_number: int
    block_hash: str
    tx_hash: str
    tx_index: int
    log_index: int
    address: str
    contract: str
    event: str
    args: dict[str, ArgValue]
    removed: bool = False

    def __hash__(self) -> int:  # args is a dict: hash the unique key instead
        return hash((self.chain_id, self.tx_hash, self.log_index))


def _plain_init(fields: tuple[str, ...]) -> Callable[..., None]:
    """``__init__(self, *fields)`` as plain slot stores, generated as dataclasses do."""
    stores = "".join(f"\n    self.{f} = {f}" for f in fields)
    namespace: dict[str, Any] = {}
    exec(f"def __init__(self, {', '.join(fields)}):{stores}", namespace)
    return namespace["__init__"]  # type: ignore[no-any-return]


class _Builder:
    """Same slots as :class:`DecodedLog` but a plain ``__init__``: a frozen dataclass sets
    each field through ``object.__setattr__``, ~4x slower. The batch builds one of these and
    retypes it (``__class__`` assignment, allowed because the layouts are identical)."""

    __slots__ = DecodedLog.__slots__
    __init__ = _plain_init(DecodedLog.__slots__)


def _remember(cache: dict[Any, str], key: Any, value: str, limit: int) -> str:
    if len(cache) >= limit:  # FIFO: drop the oldest eighth at once (amortised O(1))
        for old in list(islice(cache, max(1, limit // 8))):
            cache.pop(old, None)
    cache[key] = value
    return value


# ---------------------------------------------------------------- one event, compiled


@dataclass(frozen=True, slots=True)
class _EventPlan:
    abi: EventAbi
    params: tuple[Param, ...]
    topic_count: int  # topic0 + one per indexed parameter
    data_types: tuple[str, ...]
    fast: bool  # every data parameter is one static word (else eth_abi decodes the data)
    source: str  # the generated decoder, for reading and debugging
    decode: Callable[[Any, Any], dict[str, ArgValue]]  # (topics, data) -> args


def _plan(event: EventAbi, helpers: Mapping[str, Any]) -> _EventPlan:
    params, topic, word = [], 1, 0
    _, types = parse_signature(event.signature)  # canonical types, tuples spelled (a,b)
    for i, (raw, abi_type) in enumerate(zip(event.inputs, types, strict=True)):
        indexed = bool(raw.get("indexed"))
        name = str(raw.get("name") or f"arg{i}")
        params.append(
            Param(
                name, abi_type, indexed, *param_kind(abi_type, indexed), topic if indexed else word
            )
        )
        topic, word = (topic + 1, word) if indexed else (topic, word + 1)
    data_types = tuple(p.abi_type for p in params if not p.indexed)
    fast = all(p.kind != "abi" for p in params if not p.indexed)
    source, namespace = _generate(params, topic, len(data_types), fast)
    namespace.update(helpers, _abi=partial(abi_values, data_types))
    exec(compile(source, f"<decoder {event.signature}>", "exec"), namespace)
    return _EventPlan(event, tuple(params), topic, data_types, fast, source, namespace["decode"])


def _generate(
    params: list[Param], topics: int, words: int, fast: bool
) -> tuple[str, dict[str, Any]]:
    """Source of ``decode(topics, data) -> args`` for one layout. A failed check raises a
    bare ``_Bad``: :func:`_diagnose` finds field and reason, so the fast path has no messages."""
    namespace: dict[str, Any] = {}
    out = ["def decode(topics, data):", f"    if len(topics) != {topics}: raise _Bad"]
    if not fast:
        out.append("    d = _abi(_hex(data, None, 'data'))")
    elif words == 0:
        out.append('    if data != "0x": raise _Bad')
    else:
        out.append(f'    if len(data) != {2 + 64 * words} or data[:2] != "0x": raise _Bad')
        out.append(f"    r = _fb(data[2:])\n    if len(r) != {WORD * words}: raise _Bad")
    for i, p in enumerate(params):
        v, w = f"v{i}", f"r[{WORD * p.slot}:{WORD * p.slot + WORD}]"
        if p.indexed and p.kind in ("address", "bool"):
            lookup = "_ta(t) or _tam(t)" if p.kind == "address" else "BOOL_TOPICS[t]"
            out.append(f"    t = topics[{p.slot}]\n    {v} = {lookup}")
        elif not p.indexed and not fast:
            out.append(f"    {v} = d[{p.slot}]")
        else:
            if p.indexed:
                out.append(f"    t = topics[{p.slot}]\n    w = _fb(t[2:])")
                out.append('    if len(w) != 32 or t[:2] != "0x": raise _Bad')
                w = "w"
            elif p.kind in ("address", "bytes"):  # read twice: slice once
                out.append(f"    w = {w}")
                w = "w"
            out += _word_lines(p, v, w, namespace, f"_word{i}")
    items = ", ".join(f"{p.name!r}: v{i}" for i, p in enumerate(params))
    out.append(f"    return {{{items}}}")
    return "\n".join(out) + "\n", namespace


def _word_lines(p: Param, v: str, w: str, namespace: dict[str, Any], helper: str) -> list[str]:
    """Lines that set ``v`` from the 32-byte word expression ``w``, as :func:`word_value`."""
    narrow = p.size < 256  # noqa: PLR2004
    if p.kind == "address":
        return [f"    {v} = _wa({w}) or _wam({w})"]
    if p.kind == "bool":
        return [f"    {v} = BOOL_WORDS[{w}]"]
    if p.kind == "uint":
        check = [f"    if {v} >> {p.size}: raise _Bad"] if narrow else []
        return [f'    {v} = _fr({w}, "big")', *check]
    if p.kind == "int":
        bound = 1 << (p.size - 1)
        check = [f"    if not {-bound} <= {v} < {bound}: raise _Bad"] if narrow else []
        return [f'    {v} = _fr({w}, "big", signed=True)', *check]
    if p.kind == "bytes" and p.size == WORD:
        return [f'    {v} = "0x" + {w}.hex()']
    if p.kind == "bytes":
        pad = bytes(WORD - p.size)
        return [
            f"    if {w}[{p.size}:] != {pad!r}: raise _Bad",
            f'    {v} = "0x" + {w}[:{p.size}].hex()',
        ]
    namespace[helper] = partial(word_value, p)  # an indexed hash or an exotic value type
    return [f"    {v} = {helper}({w})"]


# ---------------------------------------------------------------- the same, for the C loop

# indexer/_native.c's op codes: how one parameter is read
_OP_TOPIC_ADDRESS, _OP_TOPIC_BOOL, _OP_ADDRESS, _OP_BOOL = 0, 1, 2, 3
_OP_UINT, _OP_INT, _OP_BYTES, _OP_CALL = 4, 5, 6, 7
_NATIVE_MAX_WORDS = 64  # data words the C loop decodes (more: the Python decoder does)
_NATIVE_KINDS = {"address": _OP_ADDRESS, "bool": _OP_BOOL, "uint": _OP_UINT, "int": _OP_INT}


def _native_op(p: Param) -> tuple[str, int, bool, int, int, Any]:
    """(name, op, from_topic, slot, size, helper) of one parameter: what the generated
    Python does for it (:func:`_generate`), as data for the C loop."""
    if p.indexed and p.kind in ("address", "bool"):
        op = _OP_TOPIC_ADDRESS if p.kind == "address" else _OP_TOPIC_BOOL
        return p.name, op, True, p.slot, 0, None
    op = _NATIVE_KINDS.get(p.kind, _OP_CALL)
    if op in (_OP_UINT, _OP_INT) and not (p.size % 8 == 0 and 8 <= p.size <= 256):  # noqa: PLR2004
        op = _OP_CALL
    if p.kind == "bytes":
        op = _OP_BYTES if 1 <= p.size <= WORD else _OP_CALL
    helper = partial(word_value, p) if op == _OP_CALL else None
    return p.name, op, p.indexed, p.slot, p.size, helper


def _native_target(plan: _EventPlan) -> tuple[Any, ...]:
    """(contract, event, ops or None, words, python decode, topic count) for the C loop;
    ops is None where the generated Python decodes the event (eth_abi data, long data)."""
    words = len(plan.data_types)
    fast = plan.fast and words <= _NATIVE_MAX_WORDS
    ops = tuple(_native_op(p) for p in plan.params) if fast else None
    return plan.abi.contract, plan.abi.name, ops, words, plan.decode, plan.topic_count


# The fields in the order indexer/_native.c fills them.
_NATIVE_FIELDS: tuple[str, ...] = ("chain_id", "block_number", "block_hash", "tx_hash")
_NATIVE_FIELDS += ("tx_index", "log_index", "address", "contract", "event", "args", "removed")
if sorted(_NATIVE_FIELDS) != sorted(DecodedLog.__slots__):
    raise RuntimeError("DecodedLog's fields changed: update _NATIVE_FIELDS and _native.c")
if native.set_decoded_type is not None:
    native.set_decoded_type(DecodedLog, tuple(vars(DecodedLog)[f] for f in _NATIVE_FIELDS))


# ---------------------------------------------------------------- the batch decoder


class LogDecoder:
    """Compiled decoders for a set of events (default: every compiled contract's), the
    bounded address caches they share, and counts of skipped unknown topics.

    One decoder may serve every chain; ``unknown_topics`` (topic0 -> logs skipped, ``""``
    for logs without topics) and ``skipped`` are meant for Prometheus counters."""

    def __init__(
        self, events: Iterable[EventAbi] | None = None, *, cache_size: int = DEFAULT_CACHE_SIZE
    ) -> None:
        self.cache_size = max(8, cache_size)
        self.unknown_topics: Counter[str] = Counter()
        self._topic_addresses: dict[str, str] = {}
        self._word_addresses: dict[bytes, str] = {}
        self._contract_addresses: dict[str, str] = {}
        helpers = {"_Bad": MalformedError, "_fb": bytes.fromhex, "_fr": int.from_bytes}
        helpers |= {"_hex": hex_bytes, "BOOL_WORDS": BOOL_WORDS, "BOOL_TOPICS": BOOL_TOPICS}
        helpers |= {"_ta": self._topic_addresses.get, "_tam": self._topic_address}
        helpers |= {"_wa": self._word_addresses.get, "_wam": self._word_address}
        chosen = event_table().values() if events is None else events
        self._plans = {event.topic0: _plan(event, helpers) for event in chosen}
        self._dispatch = {t: (p.decode, p.abi.contract, p.abi.name) for t, p in self._plans.items()}
        self._native = {t: _native_target(p) for t, p in self._plans.items()}
        self._native_caches = (
            self._topic_addresses,
            self._topic_address,
            self._word_addresses,
            self._word_address,
            BOOL_TOPICS,
            self.cache_size,
        )

    @property
    def skipped(self) -> int:
        """Logs skipped so far because their topic0 is not one of our events."""
        return sum(self.unknown_topics.values())

    def source(self, topic0: str) -> str:
        """The generated decoder of one event (for reading, tests and debugging)."""
        return self._plans[topic0].source

    def decode_logs(
        self,
        chain_id: int,
        raw_logs: Iterable[Mapping[str, Any]],
        unknown: list[Mapping[str, Any]] | None = None,
    ) -> list[DecodedLog]:
        """Decode ``eth_getLogs`` entries in order; unknown events are skipped, counted and,
        if ``unknown`` is given, appended to it. :class:`DecodeError` on a malformed log.

        The cyclic garbage collector is paused for the batch: the loop creates no cycles, and
        full collections over a large input and output cost ~40% at 200k logs."""
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return self._decode(chain_id, raw_logs, unknown)
        finally:
            if was_enabled:
                gc.enable()

    def _decode(
        self,
        chain_id: int,
        raw_logs: Iterable[Mapping[str, Any]],
        unknown: list[Mapping[str, Any]] | None,
    ) -> list[DecodedLog]:
        out: list[DecodedLog] = []
        if native.decode is not None and type(raw_logs) is list:
            # The C loop decodes the well-formed logs; from the first it does not take
            # (malformed, or a callback raised), this loop goes on, so errors read the same.
            skip = partial(self._skip, unknown=unknown)
            out, done = native.decode(
                chain_id, raw_logs, self._native, self._contract_addresses,
                self._contract_address, skip, self._native_caches,
            )  # fmt: skip
            if done == len(raw_logs):
                return out
            raw_logs = raw_logs[done:]
        dispatch, quantities, fromhex = self._dispatch.get, QUANTITIES, bytes.fromhex
        contracts, contract_miss = self._contract_addresses.get, self._contract_address
        builder, decoded = _Builder, DecodedLog
        append = out.append
        # Logs arrive grouped by block and transaction: parse and check those values once.
        last_block: Any = _UNSET
        last_block_hash = last_tx_hash = last_block
        block_number = 0
        for log in raw_logs:
            try:
                topics, data, address, block_hex, block_hash, tx_hash, tx_index, index = (
                    _LOG_FIELDS(log)
                )
                target = dispatch(topics[0]) if topics else None
                if target is None:
                    self._skip(log, unknown)
                    continue
                if block_hex != last_block:
                    block_number, last_block = quantities[block_hex], block_hex
                if block_hash != last_block_hash:
                    last_block_hash = block_hash if topic_word(block_hash) else _UNSET
                if tx_hash != last_tx_hash:  # inlined topic_word: a new one every ~2 logs
                    raw_hash = fromhex(tx_hash[2:])  # skips spaces: hence the length checks
                    if len(raw_hash) != WORD or len(tx_hash) != HEX_WORD or tx_hash[:2] != "0x":
                        raise MalformedError
                    last_tx_hash = tx_hash
                decode, contract, event = target
                item = builder(
                    chain_id,
                    block_number,
                    block_hash,
                    tx_hash,
                    quantities[tx_index],
                    quantities[index],
                    contracts(address) or contract_miss(address),
                    contract,
                    event,
                    decode(topics, data),
                    log.get("removed") is True,
                )
                item.__class__ = decoded
                append(item)
            except Exception as exc:  # whatever broke, say where: never crash the batch
                raise _diagnose(self._plans, chain_id, log, exc, envelope=False) from None
        return out

    def diagnose(
        self, chain_id: int, log: Any, error: Exception, *, envelope: bool = False
    ) -> DecodeError:
        """The :class:`DecodeError` for ``log``, which failed with ``error`` (as raised by
        :meth:`decode_logs`): chain, block, transaction, log index, event, field, reason.
        With ``envelope`` (the log's own fields are broken, not its event's), a
        :class:`MalformedLogError`, whose advice is to read the answer again."""
        return _diagnose(self._plans, chain_id, log, error, envelope=envelope)

    def _skip(self, log: Mapping[str, Any], unknown: list[Mapping[str, Any]] | None) -> None:
        topics = log["topics"]
        if not isinstance(topics, list | tuple) or not all(isinstance(t, str) for t in topics):
            raise MalformedError("topics is not a list of hex strings")
        self.unknown_topics[topics[0] if topics else ""] += 1
        if unknown is not None:
            unknown.append(log)

    def _topic_address(self, topic: Any) -> str:
        address = str(word_value(ADDRESS_PARAM, topic_word(topic)))
        return _remember(self._topic_addresses, topic, address, self.cache_size)

    def _word_address(self, word: bytes) -> str:
        address = str(word_value(ADDRESS_PARAM, word))
        return _remember(self._word_addresses, word, address, self.cache_size)

    def _contract_address(self, address: Any) -> str:
        checked = checked_address(address)
        return _remember(self._contract_addresses, address, checked, self.cache_size)


# ---------------------------------------------------------------- what went wrong, where


def _stored_quantity(bits: int) -> Callable[[Any], object]:
    """A quantity check that also wants the value to fit its store column (bits + sign)."""

    def check(value: Any) -> object:
        if QUANTITIES[value] >> bits:
            raise MalformedError(f"{value} is too large to store (at most 2**{bits} - 1)")
        return value

    return check


def _stored_hash(value: Any) -> object:
    """A block or transaction hash as it is stored (:func:`indexer.abiwords.node_hash`)."""
    return node_hash(value, "hash")


_ENVELOPE_CHECKS: tuple[tuple[str, Callable[[Any], object]], ...] = (
    ("blockNumber", _stored_quantity(63)),
    ("transactionIndex", _stored_quantity(31)),
    ("logIndex", _stored_quantity(31)),
    ("blockHash", _stored_hash),
    ("transactionHash", _stored_hash),
    ("address", checked_address),
)


def _envelope_fault(log: Any) -> tuple[str, str] | None:
    """(field, reason) of the first fault outside the event's own topics and data."""
    if not isinstance(log, Mapping):
        return "log", f"expected a JSON object, got {type(log).__name__}"
    topics = log.get("topics")
    if not isinstance(topics, list | tuple) or not all(isinstance(t, str) for t in topics):
        return "topics", f"not a list of hex strings: {str(topics)[:80]!r}"
    missing = [name for name in _LOG_KEYS if name not in log]
    if missing:
        return missing[0], "missing"
    for field, check in _ENVELOPE_CHECKS:
        try:
            check(log[field])
        except MalformedError as exc:
            return field, str(exc)
    return None


def _event_fault(plan: _EventPlan, topics: list[str], data: Any) -> tuple[str, str]:
    """(field, reason) of the first parameter that does not decode (``"?"`` if none)."""
    if len(topics) != plan.topic_count:
        return "topics", f"expected {plan.topic_count} topics, got {len(topics)}"
    field = "data"
    try:
        for p in plan.params:
            if p.indexed:
                field = f"{p.name} ({p.abi_type}, indexed)"
                word_value(p, topic_word(topics[p.slot]))
        field = "data"
        raw = hex_bytes(data, None, "data")
        if not plan.fast:
            abi_values(plan.data_types, raw)
        elif len(raw) != WORD * len(plan.data_types):
            want = f"{len(plan.data_types)} words ({','.join(plan.data_types)})"
            return "data", f"expected {want}, got {len(raw)} bytes"
        for p in plan.params if plan.fast else ():
            if not p.indexed:
                field = f"{p.name} ({p.abi_type})"
                word_value(p, raw[WORD * p.slot : WORD * p.slot + WORD])
    except MalformedError as exc:
        return field, str(exc)
    return "?", ""


def _unknown_fault(log: Mapping[str, Any]) -> tuple[str, str]:
    """(field, reason) for a log that is not one of our events: its topics and data must
    still be 0x-hex words and bytes (they are stored raw)."""
    try:
        for topic in log["topics"]:
            topic_word(topic)
    except MalformedError as exc:
        return "topics", str(exc)
    try:
        hex_bytes(log["data"], None, "data")
    except MalformedError as exc:
        return "data", str(exc)
    return "topics", "not an event of contracts/build"


def _diagnose(
    plans: Mapping[str, _EventPlan], chain_id: int, log: Any, exc: Exception, *, envelope: bool
) -> DecodeError:
    """The :class:`DecodeError` for a log the fast path rejected: where, what and why."""
    fields: Mapping[str, Any] = log if isinstance(log, Mapping) else {}
    plan: _EventPlan | None = None
    try:
        topics: list[str] = fields.get("topics") or []
        plan = plans.get(topics[0]) if isinstance(topics, list | tuple) and topics else None
        fault = _envelope_fault(log)
        if fault is None:
            fault = _event_fault(plan, topics, fields["data"]) if plan else _unknown_fault(log)
        field, reason = fault
    except Exception as unexpected:  # a bug in the checks must still end as a DecodeError
        field, reason = "?", f"{type(unexpected).__name__}: {unexpected}"
    reason = reason or f"unexpected {type(exc).__name__}: {exc}"
    block, tx, index = (fields.get(k) for k in ("blockNumber", "transactionHash", "logIndex"))
    event = plan.abi.name if plan is not None else None
    where = f"chain {chain_id}, block {_readable(block)}, tx {tx}, log index {_readable(index)}"
    if envelope:
        kind: type[DecodeError] = MalformedLogError
        advice = "the node's answer is malformed: read again (if it persists, check rpc_urls)"
    else:
        kind = DecodeError
        advice = (
            "The node's log does not match the ABI in contracts/build: check the RPC endpoint, "
            "or rebuild the contracts (`make contracts`) if the event changed"
        )
    return kind(
        f"cannot decode log ({where}, event {event or '?'}): {field}: {reason}. {advice}",
        chain_id=chain_id,
        block=block,
        tx_hash=tx,
        log_index=index,
        event=event,
        field=field,
    )


def _readable(quantity: Any) -> str:
    try:
        return str(QUANTITIES[quantity])
    except (MalformedError, TypeError):
        return repr(quantity)


@cache
def default_decoder() -> LogDecoder:
    """The process-wide decoder for every event in ``contracts/build``."""
    return LogDecoder()


def decode_logs(chain_id: int, raw_logs: Iterable[Mapping[str, Any]]) -> list[DecodedLog]:
    """Decode raw ``eth_getLogs`` entries with :func:`default_decoder` (see the module)."""
    return default_decoder().decode_logs(chain_id, raw_logs)
