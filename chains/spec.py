"""Specifications of chains, contracts, tokens and assets: the typed form of ``rtrm.toml``.

A :class:`Registry` is the whole configuration: the chains RTRM indexes (each a
:class:`ChainSpec` with its RPC endpoints, finality depth, contracts and tokens), the
canonical assets (:class:`AssetSpec`) those tokens map to, and the store's database URL.
``chains.registry`` reads and writes it; everything else only reads it.

Invariants, checked when a value is built, so a registry made in code is as valid as
one loaded from a file:

- addresses are EIP-55 checksummed; an all-lowercase (or all-uppercase) address is
  checksummed on the way in, a wrongly mixed-case one is rejected as a likely typo;
- chain ids are positive and unique; finality depth >= 0; block time > 0 seconds;
  RPC URLs are http(s) with a host (:func:`chains.urls.rpc_url_problem`: both clients
  speak HTTP only, so a ws(s) URL is refused with its fix);
- within a chain, contract names, token symbols, contract addresses and token
  addresses are each unique (a token may share its address with a contract: a vault
  is both);
- every token and contract asset is a configured asset; following ``underlying`` links
  from any asset ends at a root asset (one that is its own underlying), with no cycle.

Every violation is a :class:`~chains.exceptions.ConfigError` whose message starts with
the key path in ``rtrm.toml`` (``chains.10.tokens.USDC.address``) and says how to fix it.
Failed lookups name what does exist and suggest the closest match.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from eth_utils.address import to_checksum_address

from chains.exceptions import ConfigError, UnknownChainError
from chains.types import Address, AssetId, AssetKind, BlockNumber, ChainId, ContractKind
from chains.urls import rpc_url_problem

__all__ = [
    "DEFAULT_DATABASE_URL",
    "MAX_DECIMALS",
    "AssetSpec",
    "ChainSpec",
    "ContractSpec",
    "Registry",
    "TokenSpec",
    "checksum_address",
    "closest_match",
    "key_path",
    "unknown_message",
]

DEFAULT_DATABASE_URL = "sqlite:///.rtrm/rtrm.db"  # relative to the working directory
MAX_DECIMALS = 36

_MAX_CHAIN_ID = 1 << 63  # chain ids are BIGINT in the store
_ROOT = AssetId("")  # AssetSpec.underlying before it defaults to the asset itself
_HEX_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_BLOCK_HASH = re.compile(r"0x[0-9a-f]{64}")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


# ---------------------------------------------------------------- message helpers


def closest_match(word: str, choices: Iterable[str]) -> str | None:
    """The choice most similar to ``word`` (difflib ratio >= 0.6), if any."""
    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return matches[0] if matches else None


def unknown_message(
    what: str,
    word: str,
    choices: Sequence[str],
    *,
    quote: bool = True,
    where: str = "",
    listed_as: str | None = None,
) -> str:
    """``unknown chain 4216; did you mean 42161? configured chains: 1, 10, 42161``.

    ``where`` follows the word (`` on chain 1 (ethereum)``); ``listed_as`` replaces the
    ``configured chains`` label of the list of choices.
    """

    def shown(name: str) -> str:
        return repr(name) if quote else name

    guess = closest_match(word, choices)
    hint = f"; did you mean {shown(guess)}?" if guess is not None else ";"
    listed = ", ".join(choices) if choices else "(none)"
    label = listed_as or f"configured {what}s"
    return f"unknown {what} {shown(word)}{where}{hint} {label}: {listed}"


def key_path(*parts: object) -> str:
    """A TOML key path, quoting parts that are not bare keys: ``chains.1.tokens."USDC.e"``."""
    texts = (str(part) for part in parts)
    return ".".join(text if _BARE_KEY.fullmatch(text) else f'"{text}"' for text in texts)


def checksum_address(value: str, *, key: str) -> Address:
    """``value`` as an EIP-55 address; all-lower/upper case is accepted, bad mixed case is not."""
    if not _HEX_ADDRESS.fullmatch(value):
        raise ConfigError(f"{key}: {value!r} is not an address; write 0x followed by 40 hex digits")
    checksummed = to_checksum_address(value)
    digits = value[2:]
    if value != checksummed and digits not in (digits.lower(), digits.upper()):
        raise ConfigError(
            f"{key}: {value} has a bad EIP-55 checksum (expected different letter case), so it "
            "probably has a typo; copy it again from a block explorer, or write it all-lowercase "
            "to skip the checksum"
        )
    return Address(checksummed)


def _check_name(value: str, *, key: str, what: str) -> None:
    if not value or value != value.strip() or any(char.isspace() for char in value):
        raise ConfigError(f"{key}: {what} {value!r} must be non-empty without spaces; rename it")


def _check_unique(values: Iterable[str], *, key: str, what: str) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ConfigError(f"{key}: {what} {value} appears twice; keep one entry")
        seen.add(value)


# ---------------------------------------------------------------- specs


@dataclass(frozen=True, slots=True)
class AssetSpec:
    """A canonical asset (``ETH``, ``USDC``, ``WSTETH``); exposure rolls up to its root.

    ``underlying`` defaults to the asset itself, which makes it a root asset; ``peg``
    names what a stablecoin tracks (``"USD"``) and is informational.
    """

    asset_id: AssetId
    name: str
    underlying: AssetId = _ROOT
    peg: str | None = None

    def __post_init__(self) -> None:
        key = key_path("assets", self.asset_id)
        _check_name(self.asset_id, key=key, what="asset id")
        if not self.name.strip():
            raise ConfigError(f'{key}.name: is empty; give the asset a display name like "Ether"')
        if not self.underlying:
            object.__setattr__(self, "underlying", self.asset_id)
        if self.peg is not None and not self.peg.strip():
            raise ConfigError(f'{key}.peg: is empty; write what it tracks, e.g. "USD", or omit it')

    @property
    def is_root(self) -> bool:
        return self.underlying == self.asset_id


@dataclass(frozen=True, slots=True)
class TokenSpec:
    """An ERC-20 (or native) token at one address on one chain, mapped to a canonical asset."""

    chain_id: ChainId
    symbol: str
    address: Address
    decimals: int
    asset_id: AssetId
    kind: AssetKind

    def __post_init__(self) -> None:
        key = key_path("chains", self.chain_id, "tokens", self.symbol)
        _check_name(self.symbol, key=key, what="token symbol")
        object.__setattr__(self, "address", checksum_address(self.address, key=f"{key}.address"))
        if not 0 <= self.decimals <= MAX_DECIMALS:
            raise ConfigError(
                f"{key}.decimals: {self.decimals} is out of range; use 0..{MAX_DECIMALS}, the "
                "value the token's decimals() returns"
            )


@dataclass(frozen=True, slots=True)
class ContractSpec:
    """A protocol contract RTRM indexes; ``asset_id`` is set for per-asset contracts (feeds)."""

    chain_id: ChainId
    name: str
    kind: ContractKind
    address: Address
    deployed_block: BlockNumber
    asset_id: AssetId | None = None

    def __post_init__(self) -> None:
        key = key_path("chains", self.chain_id, "contracts", self.name)
        _check_name(self.name, key=key, what="contract name")
        object.__setattr__(self, "address", checksum_address(self.address, key=f"{key}.address"))
        if self.deployed_block < 0:
            raise ConfigError(
                f"{key}.deployed_block: {self.deployed_block} is negative; use the block number "
                "of the deployment transaction (0 if unknown)"
            )


@dataclass(frozen=True, slots=True)
class ChainSpec:
    """One EVM chain: where to reach it, how deep reorgs may go, and what to index on it.

    Lookups scan the tuples: a chain has tens of contracts and tokens, not thousands.
    """

    chain_id: ChainId
    name: str
    rpc_urls: tuple[str, ...]
    finality_depth: int
    block_time_s: float
    contracts: tuple[ContractSpec, ...] = ()
    tokens: tuple[TokenSpec, ...] = ()
    genesis_hash: str | None = None
    rpc_rate_limit_per_s: float = 0.0  # per endpoint; 0 = unlimited

    def __post_init__(self) -> None:
        key = key_path("chains", self.chain_id)
        if not 0 < self.chain_id < _MAX_CHAIN_ID:
            raise ConfigError(
                f"{key}: chain id must be a positive integer below 2**63 (the store's BIGINT), "
                "e.g. [chains.42161]"
            )
        if not self.name.strip():
            raise ConfigError(f'{key}.name: is empty; name the chain, e.g. name = "arbitrum"')
        self._check_rpc_urls(f"{key}.rpc_urls")
        if self.finality_depth < 0:
            raise ConfigError(
                f"{key}.finality_depth: {self.finality_depth} is negative; use the number of "
                "blocks after which a reorg is impossible (e.g. 32 on Ethereum, 0 on a devnet)"
            )
        if not (math.isfinite(self.block_time_s) and self.block_time_s > 0):
            raise ConfigError(
                f"{key}.block_time_s: {self.block_time_s} must be a positive number of seconds "
                "(e.g. 12.0 on Ethereum, 0.25 on Arbitrum)"
            )
        if not (math.isfinite(self.rpc_rate_limit_per_s) and self.rpc_rate_limit_per_s >= 0):
            raise ConfigError(
                f"{key}.rpc_rate_limit_per_s: {self.rpc_rate_limit_per_s} must be a number of "
                "requests per second >= 0 (0: no limit), e.g. your provider's quota"
            )
        if self.genesis_hash is not None and not _BLOCK_HASH.fullmatch(self.genesis_hash):
            raise ConfigError(
                f"{key}.genesis_hash: {self.genesis_hash!r} is not a block hash; write 0x and 64 "
                "lowercase hex digits (the hash of block 0), or omit it"
            )
        strays = [(c.name, c.chain_id) for c in self.contracts if c.chain_id != self.chain_id]
        strays += [(t.symbol, t.chain_id) for t in self.tokens if t.chain_id != self.chain_id]
        if strays:
            name, chain_id = strays[0]
            raise ConfigError(f"{key}: {name} belongs to chain {chain_id}; move it to that chain")
        _check_unique((c.name for c in self.contracts), key=f"{key}.contracts", what="name")
        _check_unique((t.symbol for t in self.tokens), key=f"{key}.tokens", what="symbol")
        _check_unique((c.address for c in self.contracts), key=f"{key}.contracts", what="address")
        _check_unique((t.address for t in self.tokens), key=f"{key}.tokens", what="address")

    def _check_rpc_urls(self, key: str) -> None:
        if not self.rpc_urls:
            raise ConfigError(f'{key}: is empty; list at least one, e.g. ["http://127.0.0.1:8545"]')
        for index, url in enumerate(self.rpc_urls):
            if (problem := rpc_url_problem(url)) is not None:
                raise ConfigError(f"{key}[{index}]: {problem}")

    @property
    def label(self) -> str:
        """``42161 (arbitrum)``: how messages name this chain."""
        return f"{self.chain_id} ({self.name})"

    def contract(self, name: str) -> ContractSpec:
        for spec in self.contracts:
            if spec.name == name:
                return spec
        names = sorted(spec.name for spec in self.contracts)
        where = f" on chain {self.label}"
        raise ConfigError(unknown_message("contract", name, names, where=where))

    def contracts_of(self, kind: ContractKind) -> tuple[ContractSpec, ...]:
        return tuple(spec for spec in self.contracts if spec.kind == kind)

    def token(self, symbol: str) -> TokenSpec:
        for spec in self.tokens:
            if spec.symbol == symbol:
                return spec
        symbols = sorted(spec.symbol for spec in self.tokens)
        raise ConfigError(
            unknown_message("token", symbol, symbols, where=f" on chain {self.label}")
        )

    def token_at(self, address: str) -> TokenSpec:
        """The token at ``address`` (compared case-insensitively)."""
        wanted = address.lower()
        for spec in self.tokens:
            if spec.address.lower() == wanted:
                return spec
        listed = ", ".join(f"{spec.symbol} {spec.address}" for spec in self.tokens) or "(none)"
        raise ConfigError(
            f"no token at {address} on chain {self.label}; configured tokens: {listed}; add it "
            f"as [chains.{self.chain_id}.tokens.<SYMBOL>] in rtrm.toml"
        )


@dataclass(frozen=True, slots=True)
class Registry:
    """The whole configuration. ``source`` is the file it came from and not part of equality."""

    chains: tuple[ChainSpec, ...]
    assets: tuple[AssetSpec, ...] = ()
    database_url: str = DEFAULT_DATABASE_URL
    source: Path | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        _check_unique((str(c.chain_id) for c in self.chains), key="chains", what="chain id")
        _check_unique((a.asset_id for a in self.assets), key="assets", what="asset id")
        if "://" not in self.database_url:
            raise ConfigError(
                f"store.database_url: {self.database_url!r} is not a database URL; use e.g. "
                f'"{DEFAULT_DATABASE_URL}" or "postgresql+psycopg://user@host/rtrm"'
            )
        self._check_asset_references()
        self._check_underlying_cycles()

    def _check_asset_references(self) -> None:
        known = [asset.asset_id for asset in self.assets]
        references: list[tuple[str, AssetId]] = [
            (key_path("assets", a.asset_id, "underlying"), a.underlying) for a in self.assets
        ]
        for chain in self.chains:
            references += [
                (key_path("chains", chain.chain_id, "tokens", t.symbol, "asset"), t.asset_id)
                for t in chain.tokens
            ]
            references += [
                (key_path("chains", chain.chain_id, "contracts", c.name, "asset"), c.asset_id)
                for c in chain.contracts
                if c.asset_id is not None
            ]
        for key, asset_id in references:
            if asset_id not in known:
                message = unknown_message("asset", asset_id, known)
                raise ConfigError(f"{key}: {message}; add [assets.{asset_id}] or fix the name")

    def _check_underlying_cycles(self) -> None:
        by_id = {asset.asset_id: asset for asset in self.assets}
        for start in self.assets:
            path = [start.asset_id]
            asset = start
            while not asset.is_root:
                asset = by_id[asset.underlying]
                if asset.asset_id in path:
                    cycle = " -> ".join([*path[path.index(asset.asset_id) :], asset.asset_id])
                    raise ConfigError(
                        f"{key_path('assets', start.asset_id, 'underlying')}: underlying links "
                        f"form a cycle ({cycle}); remove `underlying` from the root asset"
                    )
                path.append(asset.asset_id)

    @property
    def chain_ids(self) -> tuple[ChainId, ...]:
        return tuple(chain.chain_id for chain in self.chains)

    def chain(self, chain_id: int) -> ChainSpec:
        for chain in self.chains:
            if chain.chain_id == chain_id:
                return chain
        ids = [str(cid) for cid in sorted(self.chain_ids)]
        raise UnknownChainError(unknown_message("chain", str(chain_id), ids, quote=False))

    def asset(self, asset_id: str) -> AssetSpec:
        for asset in self.assets:
            if asset.asset_id == asset_id:
                return asset
        known = sorted(asset.asset_id for asset in self.assets)
        raise ConfigError(unknown_message("asset", asset_id, known))

    def root_asset(self, asset_id: str) -> AssetSpec:
        """The asset that ``asset_id`` finally rolls up to (``WSTETH`` -> ``ETH``)."""
        asset = self.asset(asset_id)
        while not asset.is_root:  # terminates: cycles are rejected at construction
            asset = self.asset(asset.underlying)
        return asset

    def token_at(self, chain_id: int, address: str) -> TokenSpec:
        return self.chain(chain_id).token_at(address)
