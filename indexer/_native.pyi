from collections.abc import Callable
from typing import Any

def keccak256(data: bytes, /) -> bytes: ...
def checksum(digits: str, /) -> str: ...
def raw_rows(
    chain_id: int, logs: list[Any], /
) -> tuple[list[tuple[Any, ...]], dict[int, str]] | None: ...
def decode(
    chain_id: int,
    logs: list[Any],
    dispatch: dict[str, tuple[Any, ...]],
    contracts: dict[str, str],
    contract_miss: Callable[[Any], str],
    skip: Callable[[Any], None],
    caches: tuple[Any, ...],
    /,
) -> tuple[list[Any], int]: ...
def set_decoded_type(decoded: type, slots: tuple[Any, ...], /) -> None: ...
