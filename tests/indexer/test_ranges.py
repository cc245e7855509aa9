"""The eth_getLogs range controller reads provider hints exactly and never loses a block."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chains.exceptions import RPCConnectionError, RPCError, TransientRPCError
from indexer.exceptions import IndexerError, RangeNotSplittableError
from indexer.ranges import (
    RangeConfig,
    RangeController,
    RangeHint,
    is_range_limit_error,
    parse_range_hint,
)

URL = "http://127.0.0.1:8545"

# Real provider messages (as reported in Ponder's and rindexer's retry helpers and their
# users' issues) -> the hint we must read from them.
HINTED: list[tuple[str, Any, RangeHint]] = [
    (
        (
            "Log response size exceeded. You can make eth_getLogs requests with up to a 2K block "
            "range and no limit on the response size, or you can request any block range with "
            "a cap of 10K logs in the response. Based on your parameters, this block range "
            "should work: [0x0, 0x1f3]"
        ),
        None,
        RangeHint(500, 0, 0x1F3),
    ),
    (
        "query returned more than 10000 results. Try with this block range [0x112A880, 0x112A908].",
        None,
        RangeHint(0x112A908 - 0x112A880 + 1, 0x112A880, 0x112A908),
    ),
    (
        "query returned more than 10000 results",
        {"from": "0x10", "to": "0x2f"},
        RangeHint(32, 16, 47),
    ),
    (
        "invalid params",
        "Query returned more than 10000 results. Try with this block range [0x800000, 0x800054].",
        RangeHint(0x55, 0x800000, 0x800054),
    ),
    ("eth_getLogs is limited to a 10,000 range", None, RangeHint(10_000, ceiling=True)),
    (
        "eth_getLogs and eth_newFilter are limited to a 10000 range",
        None,
        RangeHint(10_000, ceiling=True),
    ),
    ("range is too large, max is 2000 blocks", None, RangeHint(2_000, ceiling=True)),
    ("eth_getLogs range is too large, max is 10k blocks", None, RangeHint(10_000, ceiling=True)),
    ("exceed maximum block range: 5000", None, RangeHint(5_000, ceiling=True)),
    ("exceed maximum block range: 50000", None, RangeHint(50_000, ceiling=True)),
    (
        "Invalid eth_getLogs request. 'fromBlock'-'toBlock' range too large. Max range: 800",
        None,
        RangeHint(800, ceiling=True),
    ),
    (
        "requested too many blocks from 0 to 5000, maximum is set to 2048",
        None,
        RangeHint(2048, ceiling=True),
    ),
    ("Maximum allowed number of requested blocks is 1000", None, RangeHint(1000, ceiling=True)),
    (
        "invalid params",
        "range 20000 is bigger than range limit 2000",
        RangeHint(2000, ceiling=True),
    ),
    ("range 1000000 exceeds limit of 10000", None, RangeHint(10_000, ceiling=True)),
    ("eth_getLogs is limited to 1024 block range", None, RangeHint(1024, ceiling=True)),
    (
        "block range exceeds the range allowed for your plan (5000 > 500).",
        None,
        RangeHint(500, ceiling=True),
    ),
    ("please limit the query to at most 1,000 blocks", None, RangeHint(1000, ceiling=True)),
    ("query exceeds max block range 1000", None, RangeHint(1000, ceiling=True)),
    ("block range greater than 1000 max", None, RangeHint(1000, ceiling=True)),
    ("block range exceeds 1000.", None, RangeHint(1000, ceiling=True)),
    ("query must be smaller than size 1024", None, RangeHint(1024, ceiling=True)),
    ("block range is too wide (maximum 1024)", None, RangeHint(1024, ceiling=True)),
    (
        "Under the Free tier plan, you can make eth_getLogs requests with up to a 10 block range",
        None,
        RangeHint(10, ceiling=True),
    ),
    ("maximum [from, to] blocks distance: 100", None, RangeHint(100, ceiling=True)),
    ("Cannot request logs over more than 1000 blocks", None, RangeHint(1000, ceiling=True)),
]
RESULTS = [
    "query returned more than 10000 results",
    "query exceeds max results 20000, retry with the range 100-120",
    "logs matched by query exceeds limit of 10000",
    "backend response too large",
    "response size should not greater than 10000000 bytes",
    "query returns too many logs",
]
RANGE = [
    "block range too large",
    "Block range is too large",
    "block range is too wide",
    "Block range limit exceeded.",
    "exceeds maximum block range",
]
NOT_RANGE = [
    "execution reverted",
    "header not found",
    "project ID request rate exceeded",
    "limited to a 10000 results",  # a result cap, not a block range: no span hint
    "",
]


def rpc_error(message: str, code: int | None = -32005) -> RPCError:
    """As chains.rpc.classify_rpc_error builds them."""
    return RPCError(f"eth_getLogs on {URL} failed: JSON-RPC {code}: {message}", code=code, url=URL)


# ---------------------------------------------------------------- parsing


@pytest.mark.parametrize(("message", "data", "hint"), HINTED)
def test_every_provider_hint_is_parsed(message: str, data: Any, hint: RangeHint) -> None:
    assert parse_range_hint(message, data) == hint
    assert is_range_limit_error(-32005, message, data)


@pytest.mark.parametrize("message", RESULTS + RANGE)
def test_range_errors_without_a_number_are_recognised(message: str) -> None:
    assert parse_range_hint(message, None) is None
    assert is_range_limit_error(-32602, message, None)


@pytest.mark.parametrize("message", NOT_RANGE)
def test_other_errors_are_not_range_errors(message: str) -> None:
    assert parse_range_hint(message, None) is None
    assert not is_range_limit_error(-32000, message, None)


def test_hints_inside_the_rpc_error_text_and_data_object() -> None:
    error = rpc_error("this block range should work: [0x64, 0xc7]", code=-32602)
    assert parse_range_hint(str(error), None) == RangeHint(100, 0x64, 0xC7)
    assert parse_range_hint("", {"code": -32602, "data": "max range: 800"}) == RangeHint(
        800, ceiling=True
    )
    assert parse_range_hint("x", {"from": "0x20", "to": "0x10"}) is None  # reversed: ignored


# ---------------------------------------------------------------- cutting


def controller(**config: Any) -> RangeController:
    return RangeController(10, RangeConfig(**{"initial_span": 10_000, **config}))


def test_explicit_hint_sets_the_span_and_the_retry_range_exactly() -> None:
    ranges = controller()
    start, end = ranges.next_range(1_000, 100_000)
    decision = ranges.on_error(
        rpc_error("this block range should work: [0x3e8, 0x4b0]"), start, end
    )
    assert (decision.span, decision.reason) == (201, "hint")
    assert (decision.retry_from, decision.retry_to) == (1_000, 1_200)
    assert ranges.span == 201
    assert ranges.ceiling == ranges.config.max_span  # a log-count suggestion is no ceiling


def test_infura_data_object_and_raw_error_forms_are_accepted() -> None:
    raw = {
        "code": -32005,
        "message": "query returned more than 10000 results",
        "data": {"from": "0x0", "to": "0x63"},
    }
    for error in (raw, (-32005, raw["message"], raw["data"])):
        ranges = controller()
        assert ranges.on_error(error, 0, 9_999).span == 100


def test_a_stated_limit_becomes_a_ceiling_for_growth() -> None:
    ranges = controller(step=5_000)
    ranges.on_error(rpc_error("eth_getLogs is limited to a 2,000 range"), 0, 9_999)
    assert (ranges.span, ranges.ceiling) == (2_000, 2_000)
    for _ in range(5):
        ranges.on_success(2_000, 10, 0.1)
    assert ranges.span == 2_000


@pytest.mark.parametrize("message", RESULTS)
def test_too_many_results_divides_by_ten(message: str) -> None:
    ranges = controller()
    decision = ranges.on_error(rpc_error(message), 0, 9_999)
    assert (decision.span, decision.reason) == (1_000, "results")


@pytest.mark.parametrize("message", RANGE)
def test_range_errors_without_hint_halve(message: str) -> None:
    decision = controller().on_error(rpc_error(message), 0, 9_999)
    assert (decision.span, decision.reason) == (5_000, "range")


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (rpc_error("something odd happened", code=-32000), "unknown"),
        (TransientRPCError(f"eth_getLogs on {URL} timed out after 30 s"), "timeout"),
        (TimeoutError(), "timeout"),
        (ValueError("bad json"), "unknown"),
    ],
)
def test_unknown_errors_and_timeouts_halve(error: BaseException, reason: str) -> None:
    ranges = controller()
    decision = ranges.on_error(error, 500, 10_499)
    assert (decision.span, decision.reason) == (5_000, reason)
    assert (decision.retry_from, decision.retry_to) == (500, 5_499)


def test_cuts_start_from_the_failed_range_not_the_span() -> None:
    ranges = controller()
    assert ranges.on_error(rpc_error("boom"), 0, 99).span == 50  # a short range at the head


def test_a_hint_no_smaller_than_the_failed_range_still_shrinks() -> None:
    ranges = controller()
    decision = ranges.on_error(rpc_error("eth_getLogs is limited to a 10,000 range"), 0, 4_999)
    assert decision.span == 2_500  # halved: retrying 5,000 blocks would loop
    assert ranges.ceiling == 10_000


@pytest.mark.parametrize(
    "error",
    [
        rpc_error("project ID request rate exceeded", code=-32005),
        RPCError("HTTP 429 Too Many Requests", code=429, url=URL),
        RPCConnectionError(f"cannot connect to {URL}"),
    ],
)
def test_rate_limits_and_outages_keep_the_span(error: BaseException) -> None:
    ranges = controller()
    decision = ranges.on_error(error, 0, 9_999)
    assert (decision.span, decision.reason) == (10_000, "unrelated")
    single = ranges.on_error(error, 7, 7)  # not a range problem: never "not splittable"
    assert single.reason == "unrelated"


def test_span_never_drops_below_one_and_single_blocks_are_not_splittable() -> None:
    ranges = controller(initial_span=4)
    assert ranges.on_error(rpc_error("query returned more than 10000 results"), 0, 3).span == 1
    with pytest.raises(RangeNotSplittableError, match=r"chain 10: .* single block 4 ") as caught:
        ranges.on_error(rpc_error("query returned more than 10000 results"), 4, 4)
    assert ranges.span == 1
    assert isinstance(caught.value, IndexerError)
    assert caught.value.block == 4


# ---------------------------------------------------------------- growing


def test_growth_is_additive_and_capped_at_max_span() -> None:
    ranges = controller(initial_span=100, step=100, max_span=350)
    spans = [ranges.on_success(ranges.span, 0, 0.1) for _ in range(5)]
    assert spans == [200, 300, 350, 350, 350]


def test_no_growth_when_the_answer_is_large_slow_or_clipped() -> None:
    ranges = controller(initial_span=1_000, step=1_000, target_logs=10_000, slow_s=5)
    assert ranges.on_success(1_000, 6_000, 0.1) == 1_000  # large: more than half the target
    assert ranges.on_success(1_000, 10, 6.0) == 1_000  # slow
    assert ranges.on_success(10, 0, 0.1) == 1_000  # a short range at the head proves nothing
    assert ranges.on_success(1_000, 4_000, 0.1) == 2_000  # ~8k expected: fine
    assert ranges.on_success(2_000, 4_000, 0.1) == 3_000  # additive, not proportional
    assert ranges.on_success(3_000, 4_000, 0.1) == 4_000
    assert ranges.on_success(4_000, 4_500, 0.1) == 5_000
    assert ranges.on_success(5_000, 40_000, 0.1) == 1_250  # too large: shrink in proportion


def test_logs_at_the_end_of_a_span_size_it_by_the_blocks_they_came_from() -> None:
    """A busy contract after empty blocks: 120k logs in the last 40 of 128 blocks."""
    spread = controller(initial_span=128, target_logs=10_000)
    assert spread.on_success(128, 120_000, 0.5, spread=40) == 3  # 40 * 10k / 120k
    whole = controller(initial_span=128, target_logs=10_000)
    assert whole.on_success(128, 120_000, 0.5) == 10  # averaged over the empty blocks too
    grown = controller(initial_span=100, step=100, target_logs=10_000)
    assert grown.on_success(100, 2_000, 0.1, spread=30) == 150  # growth capped: 30 * 10k / 2k
    assert grown.on_success(150, 10, 0.1, spread=0) == 250  # unknown: the whole span


def test_next_range_stays_within_the_limit() -> None:
    ranges = controller(initial_span=100)
    assert ranges.next_range(0, 1_000) == (0, 99)
    assert ranges.next_range(950, 1_000) == (950, 1_000)
    assert ranges.next_range(7, 7) == (7, 7)
    with pytest.raises(ValueError, match="nothing to fetch"):
        ranges.next_range(8, 7)


def test_invalid_config_is_rejected() -> None:
    with pytest.raises(ValueError, match="initial_span"):
        RangeConfig(initial_span=0)
    with pytest.raises(ValueError, match="initial_span"):
        RangeConfig(initial_span=10, max_span=5)


# ---------------------------------------------------------------- invariants

MESSAGES = st.sampled_from(
    [h[0] for h in HINTED]
    + RESULTS
    + RANGE
    + NOT_RANGE
    + ["this block range should work: [0x0, 0x0]"]
)
EVENTS = st.lists(
    st.one_of(
        st.tuples(st.just("ok"), st.integers(0, 50_000), st.floats(0, 30)),
        st.tuples(st.just("error"), MESSAGES, st.just(0.0)),
        st.tuples(st.just("hint"), st.integers(0, 20_000), st.integers(0, 20_000)),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(
    events=EVENTS,
    initial=st.integers(1, 5_000),
    max_span=st.integers(5_000, 20_000),
    step=st.integers(1, 3_000),
    head=st.integers(0, 200_000),
)
def test_any_history_keeps_the_span_in_bounds_and_visits_every_block_once(
    events: list[tuple[str, Any, Any]], initial: int, max_span: int, step: int, head: int
) -> None:
    ranges = RangeController(1, RangeConfig(initial_span=initial, max_span=max_span, step=step))
    cursor, fetched = 0, []
    for kind, a, b in events:
        if cursor > head:
            break
        start, end = ranges.next_range(cursor, head)
        assert start == cursor
        assert start <= end <= head
        assert end - start + 1 <= ranges.span
        try:
            if kind == "ok":
                ranges.on_success(end - start + 1, a, b)
                fetched.append((start, end))
                cursor = end + 1
            elif kind == "error":
                decision = ranges.on_error(rpc_error(a), start, end)
                assert decision.retry_from == start
                assert start <= decision.retry_to <= end
            else:
                low, high = sorted((a, b))
                ranges.on_error(
                    rpc_error(f"this block range should work: [{hex(low)}, {hex(high)}]"),
                    start,
                    end,
                )
        except RangeNotSplittableError:
            assert start == end
        assert 1 <= ranges.span <= ranges.ceiling <= max_span
    covered = [block for start, end in fetched for block in range(start, end + 1)]
    assert covered == list(range(len(covered)))  # contiguous from 0: nothing skipped or repeated


def test_a_stated_limit_clamps_the_span_even_when_one_block_failed() -> None:
    ranges = controller(initial_span=11)
    with pytest.raises(RangeNotSplittableError):
        ranges.on_error(rpc_error("requests with up to a 10 block range"), 5, 5)
    assert (ranges.span, ranges.ceiling) == (10, 10)
