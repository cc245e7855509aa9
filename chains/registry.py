"""Find, load, override and write ``rtrm.toml``: the file form of a :class:`~chains.spec.Registry`.

Discovery, when no path is given: ``$RTRM_CONFIG``, then ``./rtrm.toml``, then
``./.rtrm/rtrm.toml`` (the file ``rtrm devnet up`` writes).

Loading is three steps, each failing with a :class:`~chains.exceptions.ConfigError`
that names the file (or variable), the key path and the fix:

1. structure, here: TOML syntax, known and required keys, value types, enum kinds;
2. values, in ``chains.spec``: ranges, URLs, addresses, asset references, cycles;
3. ``RTRM_*`` environment overrides: ``RTRM_DATABASE_URL``,
   ``RTRM_CHAIN_<ID>_RPC_URLS`` (comma-separated), ``RTRM_CHAIN_<ID>_FINALITY_DEPTH``.

Round trip: ``parse_registry(tomllib.loads(registry_to_toml(r))) == r`` for every
valid registry ``r``; :func:`write_registry` replaces the file atomically.
"""

from __future__ import annotations

import os
import re
import tempfile
import tomllib
from collections.abc import Mapping
from dataclasses import replace
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

import tomli_w

from chains.exceptions import ConfigError, UnknownChainError
from chains.spec import (
    DEFAULT_DATABASE_URL,
    AssetSpec,
    ChainSpec,
    ContractSpec,
    Registry,
    TokenSpec,
    closest_match,
    key_path,
    unknown_message,
)
from chains.types import Address, AssetId, AssetKind, BlockNumber, ChainId, ContractKind

__all__ = [
    "CONFIG_CANDIDATES",
    "CONFIG_ENV",
    "apply_env_overrides",
    "find_config",
    "load_registry",
    "parse_registry",
    "registry_to_dict",
    "registry_to_toml",
    "write_registry",
]

CONFIG_ENV = "RTRM_CONFIG"
CONFIG_CANDIDATES = (Path("rtrm.toml"), Path(".rtrm") / "rtrm.toml")

# Each table's keys, mapped to whether they are required.
# [insurance] and [api] belong to their packages (insurance.config, api.context), which
# read them from the same file; the registry only lets them through.
_TOP = {"chains": True, "store": False, "assets": False, "insurance": False, "api": False}
_STORE = {"database_url": False}
_ASSET = {"name": True, "underlying": False, "peg": False}
_CHAIN = dict.fromkeys(("name", "rpc_urls", "finality_depth", "block_time_s"), True)
_CHAIN |= dict.fromkeys(("genesis_hash", "contracts", "tokens", "rpc_rate_limit_per_s"), False)
_CONTRACT = {"kind": True, "address": True, "deployed_block": True, "asset": False}
_TOKEN = {"address": True, "decimals": True, "asset": True, "kind": True}

# What a fix looks like, for messages about a missing or mistyped key.
_EXAMPLES = {
    "chains": "[chains.1] with name, rpc_urls, finality_depth and block_time_s",
    "database_url": f'database_url = "{DEFAULT_DATABASE_URL}"',
    "name": 'name = "ethereum"',
    "underlying": 'underlying = "ETH"',
    "peg": 'peg = "USD"',
    "rpc_urls": 'rpc_urls = ["http://127.0.0.1:8545"]',
    "finality_depth": "finality_depth = 32",
    "block_time_s": "block_time_s = 12.0",
    "genesis_hash": 'genesis_hash = "0x…" (64 hex digits)',
    "rpc_rate_limit_per_s": "rpc_rate_limit_per_s = 25.0",
    "kind": 'kind = "lending_pool"',
    "address": 'address = "0x…" (40 hex digits)',
    "deployed_block": "deployed_block = 5",
    "asset": 'asset = "ETH"',
    "decimals": "decimals = 18",
}

_CHAIN_OVERRIDE = re.compile(r"RTRM_CHAIN_(?P<chain_id>\d+)_(?P<setting>[A-Z0-9_]+)")
_CHAIN_SETTINGS = ("RPC_URLS", "FINALITY_DEPTH")
_E = TypeVar("_E", bound=StrEnum)


# ---------------------------------------------------------------- discovery and I/O


def find_config(*, env: Mapping[str, str] | None = None) -> Path:
    """The config file to use: ``$RTRM_CONFIG``, else the first of CONFIG_CANDIDATES."""
    env = os.environ if env is None else env
    if named := env.get(CONFIG_ENV):
        path = Path(named)
        if not path.is_file():
            raise ConfigError(f"{CONFIG_ENV}={named}: no such file; fix the path or unset it")
        return path
    for candidate in CONFIG_CANDIDATES:
        if candidate.is_file():
            return candidate
    looked = ", ".join([f"${CONFIG_ENV}", *(f"./{c}" for c in CONFIG_CANDIDATES)])
    raise ConfigError(
        f"no rtrm.toml found (looked in {looked}); run `rtrm devnet up` to start a local "
        "devnet, or write rtrm.toml — see README"
    )


def load_registry(path: Path | None = None, *, env: Mapping[str, str] | None = None) -> Registry:
    """Load ``path`` (or the discovered config), validate it and apply ``RTRM_*`` overrides."""
    env = os.environ if env is None else env
    path = find_config(env=env) if path is None else path
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file; check the path given to --config") from None
    except (OSError, UnicodeDecodeError) as exc:
        message = f"{path}: cannot read it ({exc}); check the path and its permissions"
        raise ConfigError(message) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}; fix the syntax there") from None
    return apply_env_overrides(parse_registry(data, source=path), env)


def registry_to_toml(registry: Registry) -> str:
    return tomli_w.dumps(registry_to_dict(registry))


def registry_to_dict(registry: Registry) -> dict[str, Any]:
    """The TOML document for ``registry``; defaults and empty tables are left out."""
    document: dict[str, Any] = {}
    if registry.database_url != DEFAULT_DATABASE_URL:
        document["store"] = {"database_url": registry.database_url}
    if registry.assets:
        document["assets"] = {asset.asset_id: _asset_dict(asset) for asset in registry.assets}
    document["chains"] = {str(chain.chain_id): _chain_dict(chain) for chain in registry.chains}
    return document


def _asset_dict(asset: AssetSpec) -> dict[str, Any]:
    table: dict[str, Any] = {"name": asset.name}
    if not asset.is_root:
        table["underlying"] = asset.underlying
    if asset.peg is not None:
        table["peg"] = asset.peg
    return table


def _chain_dict(chain: ChainSpec) -> dict[str, Any]:
    table: dict[str, Any] = {
        "name": chain.name,
        "rpc_urls": list(chain.rpc_urls),
        "finality_depth": chain.finality_depth,
        "block_time_s": chain.block_time_s,
    }
    if chain.genesis_hash is not None:
        table["genesis_hash"] = chain.genesis_hash
    if chain.rpc_rate_limit_per_s:
        table["rpc_rate_limit_per_s"] = chain.rpc_rate_limit_per_s
    if chain.contracts:
        table["contracts"] = {c.name: _contract_dict(c) for c in chain.contracts}
    if chain.tokens:
        table["tokens"] = {
            t.symbol: {
                "address": t.address,
                "decimals": t.decimals,
                "asset": t.asset_id,
                "kind": t.kind.value,
            }
            for t in chain.tokens
        }
    return table


def _contract_dict(contract: ContractSpec) -> dict[str, Any]:
    table: dict[str, Any] = {
        "kind": contract.kind.value,
        "address": contract.address,
        "deployed_block": contract.deployed_block,
    }
    if contract.asset_id is not None:
        table["asset"] = contract.asset_id
    return table


def write_registry(registry: Registry, path: Path) -> None:
    """Write ``registry`` to ``path`` atomically: readers see the old file or the new one.

    The file is created owner-only (0600): RPC URLs often embed API keys.
    """
    text = registry_to_toml(registry)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as temp:
            temp.write(text)
            temp.flush()
            os.fsync(temp.fileno())
        Path(temp_name).replace(path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------- parsing


def parse_registry(data: Mapping[str, Any], *, source: Path | None = None) -> Registry:
    """Build a :class:`Registry` from parsed TOML; errors are prefixed with ``source``."""
    try:
        return _parse(data, source)
    except ConfigError as exc:
        if source is None:
            raise
        raise type(exc)(f"{source}: {exc}") from None


def _parse(data: Mapping[str, Any], source: Path | None) -> Registry:
    top = _Table(data, "", _TOP)
    store = top.table("store", _STORE)
    database_url = store.optional_string("database_url") or DEFAULT_DATABASE_URL
    assets = tuple(_asset(asset_id, table) for asset_id, table in top.tables("assets", _ASSET))
    chain_tables = top.tables("chains", _CHAIN)
    if not chain_tables:
        raise ConfigError(f"chains: no chain is configured; add {_EXAMPLES['chains']}")
    chains = tuple(_chain(key, table) for key, table in chain_tables)
    return Registry(chains=chains, assets=assets, database_url=database_url, source=source)


def _asset(asset_id: str, table: _Table) -> AssetSpec:
    underlying = table.optional_string("underlying")
    return AssetSpec(
        asset_id=AssetId(asset_id),
        name=table.string("name"),
        underlying=AssetId(underlying or asset_id),
        peg=table.optional_string("peg"),
    )


def _chain(key: str, table: _Table) -> ChainSpec:
    if not key.isascii() or not key.isdigit() or int(key) <= 0:
        raise ConfigError(
            f"{table.key}: chain id {key!r} is not a positive integer; use the chain's EIP-155 "
            "id, e.g. [chains.42161]"
        )
    chain_id = ChainId(int(key))
    contracts = tuple(
        ContractSpec(
            chain_id=chain_id,
            name=name,
            kind=entry.choice("kind", ContractKind),
            address=Address(entry.string("address")),
            deployed_block=BlockNumber(entry.integer("deployed_block")),
            asset_id=_optional_asset(entry.optional_string("asset")),
        )
        for name, entry in table.tables("contracts", _CONTRACT)
    )
    tokens = tuple(
        TokenSpec(
            chain_id=chain_id,
            symbol=symbol,
            address=Address(entry.string("address")),
            decimals=entry.integer("decimals"),
            asset_id=AssetId(entry.string("asset")),
            kind=entry.choice("kind", AssetKind),
        )
        for symbol, entry in table.tables("tokens", _TOKEN)
    )
    genesis_hash = table.optional_string("genesis_hash")
    return ChainSpec(
        chain_id=chain_id,
        name=table.string("name"),
        rpc_urls=table.strings("rpc_urls"),
        finality_depth=table.integer("finality_depth"),
        block_time_s=table.number("block_time_s"),
        contracts=contracts,
        tokens=tokens,
        genesis_hash=genesis_hash.lower() if genesis_hash is not None else None,
        rpc_rate_limit_per_s=table.optional_number("rpc_rate_limit_per_s", default=0.0),
    )


def _optional_asset(value: str | None) -> AssetId | None:
    return None if value is None else AssetId(value)


_TYPE_NAMES = {
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "an array",
    dict: "a table",
}


def _type_name(value: object) -> str:
    return _TYPE_NAMES.get(type(value), f"a {type(value).__name__}")


class _Table:
    """One TOML table at ``key`` whose keys were checked against ``schema`` {key: required}.

    Typed getters raise a ConfigError naming the key path and an example of a valid value.
    """

    def __init__(self, data: object, key: str, schema: Mapping[str, bool] | None) -> None:
        self.key = key
        if not isinstance(data, dict):
            raise ConfigError(f"{key}: must be a table, not {_type_name(data)}; write [{key}]")
        self.data: dict[str, Any] = data
        if schema is None:  # a table of named entries: any key is allowed
            return
        for name in data:
            if name not in schema:
                where = f"{key}: " if key else ""
                message = unknown_message("key", name, list(schema), listed_as="valid keys")
                raise ConfigError(f"{where}{message}")
        for name, required in schema.items():
            if required and name not in data:
                where = f"{key}: " if key else ""
                raise ConfigError(f"{where}missing required key {name!r}; add {_EXAMPLES[name]}")

    def _path(self, name: str) -> str:
        return f"{self.key}.{key_path(name)}" if self.key else key_path(name)

    def _get(self, name: str, types: tuple[type, ...], expected: str) -> Any:
        value = self.data[name]
        if not isinstance(value, types) or isinstance(value, bool):
            raise ConfigError(
                f"{self._path(name)}: must be {expected}, not {_type_name(value)} ({value!r}); "
                f"write e.g. {_EXAMPLES[name]}"
            )
        return value

    def string(self, name: str) -> str:
        value: str = self._get(name, (str,), "a string")
        return value

    def optional_string(self, name: str) -> str | None:
        return self.string(name) if name in self.data else None

    def integer(self, name: str) -> int:
        value: int = self._get(name, (int,), "an integer")
        return value

    def number(self, name: str) -> float:
        value: float = self._get(name, (int, float), "a number")
        return float(value)

    def optional_number(self, name: str, *, default: float) -> float:
        return self.number(name) if name in self.data else default

    def strings(self, name: str) -> tuple[str, ...]:
        values: list[Any] = self._get(name, (list,), "an array of strings")
        if not all(isinstance(value, str) for value in values):
            raise ConfigError(
                f"{self._path(name)}: must be an array of strings; write e.g. {_EXAMPLES[name]}"
            )
        return tuple(values)

    def choice(self, name: str, kinds: type[_E]) -> _E:
        value = self.string(name)
        valid = [member.value for member in kinds]
        if value not in valid:
            message = unknown_message("kind", value, valid, listed_as="valid kinds")
            raise ConfigError(f"{self._path(name)}: {message}")
        return kinds(value)

    def table(self, name: str, schema: Mapping[str, bool]) -> _Table:
        return _Table(self.data.get(name, {}), self._path(name), schema)

    def tables(self, name: str, schema: Mapping[str, bool]) -> list[tuple[str, _Table]]:
        """The sub-tables of table ``name``, each keyed by its name and checked against schema."""
        parent = _Table(self.data.get(name, {}), self._path(name), None)
        return [
            (child, _Table(value, f"{parent.key}.{key_path(child)}", schema))
            for child, value in parent.data.items()
        ]


# ---------------------------------------------------------------- environment overrides


def apply_env_overrides(registry: Registry, env: Mapping[str, str]) -> Registry:
    """``registry`` with ``RTRM_DATABASE_URL`` and ``RTRM_CHAIN_<ID>_*`` variables applied."""
    changes: dict[ChainId, dict[str, Any]] = {}
    for variable, value in sorted(env.items()):
        if not variable.startswith("RTRM_CHAIN_"):
            continue
        match = _CHAIN_OVERRIDE.fullmatch(variable)
        if match is None:
            raise ConfigError(
                f"{variable}: not an override; write RTRM_CHAIN_<ID>_<SETTING> with a numeric "
                "chain id, e.g. RTRM_CHAIN_42161_RPC_URLS"
            )
        setting = match["setting"]
        if setting not in _CHAIN_SETTINGS:
            guess = closest_match(setting, _CHAIN_SETTINGS)
            hint = f"did you mean RTRM_CHAIN_{match['chain_id']}_{guess}? " if guess else ""
            raise ConfigError(
                f"{variable}: unknown override; {hint}supported: RTRM_DATABASE_URL, "
                "RTRM_CHAIN_<ID>_RPC_URLS, RTRM_CHAIN_<ID>_FINALITY_DEPTH"
            )
        try:
            chain = registry.chain(int(match["chain_id"]))
        except UnknownChainError as exc:
            raise UnknownChainError(
                f"{variable}: {exc}; unset it or add the chain to {registry.source or 'rtrm.toml'}"
            ) from None
        field, parsed = _parse_override(variable, setting, value)
        changes.setdefault(chain.chain_id, {})[field] = parsed

    chains = []
    for chain in registry.chains:
        overrides = changes.get(chain.chain_id, {})
        try:
            chains.append(replace(chain, **overrides) if overrides else chain)
        except ConfigError as exc:
            names = ", ".join(f"RTRM_CHAIN_{chain.chain_id}_{f.upper()}" for f in overrides)
            raise ConfigError(f"{names}: {exc}") from None
    database_url = env.get("RTRM_DATABASE_URL") or registry.database_url
    try:
        return replace(registry, chains=tuple(chains), database_url=database_url)
    except ConfigError as exc:
        raise ConfigError(f"RTRM_DATABASE_URL: {exc}") from None


def _parse_override(variable: str, setting: str, value: str) -> tuple[str, Any]:
    if setting == "RPC_URLS":
        urls = tuple(url.strip() for url in value.split(",") if url.strip())
        return "rpc_urls", urls
    try:
        return "finality_depth", int(value)
    except ValueError:
        message = f"{variable}={value!r}: must be a whole number of blocks, e.g. 32"
        raise ConfigError(message) from None
