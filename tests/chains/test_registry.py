"""rtrm.toml → Registry: round trip, validation messages, lookups, env overrides, discovery."""

from __future__ import annotations

import copy
import stat
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from hypothesis import given
from hypothesis import strategies as st

from chains.exceptions import ConfigError, UnknownChainError
from chains.registry import (
    apply_env_overrides,
    find_config,
    load_registry,
    parse_registry,
    registry_to_toml,
    write_registry,
)
from chains.spec import (
    DEFAULT_DATABASE_URL,
    AssetSpec,
    ChainSpec,
    ContractSpec,
    Registry,
    TokenSpec,
)
from chains.types import Address, AssetId, AssetKind, BlockNumber, ChainId, ContractKind

POOL = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
FEED = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"
WETH = "0x9fE46736679d2D9a65F0992F2272dE9f3c7fa6e0"
USDC = "0xCf7Ed3AccA5a467e9e704C703E8D87F634fB0Fc9"

SAMPLE: dict[str, Any] = {
    "store": {"database_url": "sqlite:///tmp/rtrm.db"},
    "assets": {
        "ETH": {"name": "Ether"},
        "USDC": {"name": "USD Coin", "peg": "USD"},
        "WSTETH": {"name": "Wrapped staked ether", "underlying": "ETH"},
    },
    "chains": {
        "1": {
            "name": "ethereum",
            "rpc_urls": ["http://127.0.0.1:8545"],
            "finality_depth": 32,
            "block_time_s": 12,
            "contracts": {
                "lending_pool": {"kind": "lending_pool", "address": POOL, "deployed_block": 5},
                "feed_eth_usd": {
                    "kind": "price_feed",
                    "address": FEED.lower(),
                    "deployed_block": 3,
                    "asset": "ETH",
                },
            },
            "tokens": {
                "WETH": {"address": WETH, "decimals": 18, "asset": "ETH", "kind": "wrapped"},
                "USDC": {"address": USDC, "decimals": 6, "asset": "USDC", "kind": "stable"},
            },
        },
        "10": {
            "name": "optimism",
            "rpc_urls": ["http://127.0.0.1:8546", "https://example.org/v2"],
            "finality_depth": 0,
            "block_time_s": 2.0,
        },
        "42161": {
            "name": "arbitrum",
            "rpc_urls": ["https://arb.example.org"],
            "finality_depth": 20,
            "block_time_s": 0.25,
            "genesis_hash": "0x" + "AB" * 32,
        },
    },
}


def sample() -> dict[str, Any]:
    return copy.deepcopy(SAMPLE)


def write_toml(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(tomli_w.dumps(document), encoding="utf-8")
    return path


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    return write_toml(tmp_path / "rtrm.toml", sample())


@pytest.fixture
def registry(config_file: Path) -> Registry:
    return load_registry(config_file, env={})


# ---------------------------------------------------------------- loading and lookups


def test_load_builds_typed_specs(registry: Registry, config_file: Path) -> None:
    assert registry.source == config_file
    assert registry.database_url == "sqlite:///tmp/rtrm.db"
    assert registry.chain_ids == (1, 10, 42161)
    mainnet = registry.chain(1)
    assert mainnet.block_time_s == 12.0
    assert isinstance(mainnet.block_time_s, float)
    assert mainnet.contract("feed_eth_usd").address == FEED  # lowercase in, checksummed out
    assert mainnet.contract("feed_eth_usd").asset_id == "ETH"
    assert mainnet.contracts_of(ContractKind.PRICE_FEED) == (mainnet.contract("feed_eth_usd"),)
    assert mainnet.contracts_of(ContractKind.VAULT) == ()
    assert mainnet.token("USDC").kind is AssetKind.STABLE
    assert registry.token_at(1, WETH.lower()).symbol == "WETH"
    assert registry.chain(42161).genesis_hash == "0x" + "ab" * 32
    assert registry.chain(10).rpc_urls == ("http://127.0.0.1:8546", "https://example.org/v2")


def test_assets_roll_up_to_their_root(registry: Registry) -> None:
    assert registry.asset("ETH").is_root
    assert registry.asset("USDC").peg == "USD"
    assert registry.root_asset("WSTETH").asset_id == "ETH"
    assert registry.root_asset("ETH").asset_id == "ETH"


def test_store_defaults_to_local_sqlite(tmp_path: Path) -> None:
    document = sample()
    del document["store"]
    loaded = load_registry(write_toml(tmp_path / "rtrm.toml", document), env={})
    assert loaded.database_url == DEFAULT_DATABASE_URL == "sqlite:///.rtrm/rtrm.db"


def test_unknown_chain_suggests_the_closest_id(registry: Registry) -> None:
    with pytest.raises(UnknownChainError) as caught:
        registry.chain(4216)
    assert str(caught.value) == (
        "unknown chain 4216; did you mean 42161? configured chains: 1, 10, 42161"
    )
    assert isinstance(caught.value, KeyError)


@pytest.mark.parametrize(
    ("lookup", "expected"),
    [
        (
            lambda r: r.chain(1).contract("lending_pol"),
            (
                "unknown contract 'lending_pol' on chain 1 (ethereum); did you mean "
                "'lending_pool'? configured contracts: feed_eth_usd, lending_pool"
            ),
        ),
        (
            lambda r: r.chain(1).token("WET"),
            (
                "unknown token 'WET' on chain 1 (ethereum); did you mean 'WETH'? "
                "configured tokens: USDC, WETH"
            ),
        ),
        (
            lambda r: r.chain(10).token("WETH"),
            "unknown token 'WETH' on chain 10 (optimism); configured tokens: (none)",
        ),
        (
            lambda r: r.asset("ETHH"),
            "unknown asset 'ETHH'; did you mean 'ETH'? configured assets: ETH, USDC, WSTETH",
        ),
        (
            lambda r: r.token_at(1, "0x" + "00" * 20),
            f"no token at 0x{'00' * 20} on chain 1 (ethereum); configured tokens: WETH {WETH}",
        ),
    ],
)
def test_failed_lookups_list_what_exists(registry: Registry, lookup: Any, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        lookup(registry)
    assert str(caught.value).startswith(expected)


# ---------------------------------------------------------------- round trip


def test_round_trip_through_a_file(registry: Registry, tmp_path: Path) -> None:
    target = tmp_path / "nested" / "out.toml"
    write_registry(registry, target)
    again = load_registry(target, env={})
    assert again == registry
    assert again.source == target  # not part of equality
    assert stat.S_IMODE(target.stat().st_mode) == 0o600  # RPC URLs may hold API keys
    assert [p.name for p in target.parent.iterdir()] == ["out.toml"]  # no temp file left


def test_write_replaces_an_existing_file(registry: Registry, tmp_path: Path) -> None:
    target = tmp_path / "rtrm.toml"
    target.write_text("stale = true\n")
    write_registry(registry, target)
    assert load_registry(target, env={}) == registry


def test_dotted_names_are_quoted(tmp_path: Path) -> None:
    document = sample()
    tokens = document["chains"]["1"]["tokens"]
    tokens["USDC.e"] = tokens.pop("USDC") | {"decimals": 99}
    with pytest.raises(ConfigError, match=r'chains\.1\.tokens\."USDC\.e"\.decimals: 99'):
        load_registry(write_toml(tmp_path / "rtrm.toml", document), env={})
    tokens["USDC.e"]["decimals"] = 6
    loaded = load_registry(write_toml(tmp_path / "rtrm.toml", document), env={})
    assert parse_registry(tomllib.loads(registry_to_toml(loaded))) == loaded


names = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-", min_size=1, max_size=8)
addresses = st.binary(min_size=20, max_size=20).map(lambda raw: Address("0x" + raw.hex()))
urls = st.sampled_from(["http://127.0.0.1:8545", "https://rpc.example.org/v2", "https://x.io"])


@st.composite
def registries(draw: st.DrawFn) -> Registry:
    asset_ids = draw(st.lists(names, min_size=1, max_size=4, unique=True))
    assets = []
    for index, asset_id in enumerate(asset_ids):  # underlying only points back: no cycles
        underlying = draw(st.sampled_from(asset_ids[: index + 1]))
        peg = draw(st.none() | st.sampled_from(["USD", "EUR"]))
        name = draw(st.text(min_size=1, max_size=12).filter(str.strip))
        assets.append(AssetSpec(AssetId(asset_id), name, AssetId(underlying), peg))
    chains = []
    for chain_id in draw(st.lists(st.integers(1, 2**40), min_size=1, max_size=3, unique=True)):
        cid = ChainId(chain_id)
        contract_names = draw(st.lists(names, max_size=3, unique=True))
        contract_addresses = draw(st.lists(addresses, min_size=3, max_size=3, unique=True))
        contracts = tuple(
            ContractSpec(
                cid,
                name,
                draw(st.sampled_from(ContractKind)),
                address,
                BlockNumber(draw(st.integers(0, 2**40))),
                draw(st.none() | st.sampled_from(asset_ids).map(AssetId)),
            )
            for name, address in zip(contract_names, contract_addresses, strict=False)
        )
        symbols = draw(st.lists(names, max_size=3, unique=True))
        token_addresses = draw(st.lists(addresses, min_size=3, max_size=3, unique=True))
        tokens = tuple(
            TokenSpec(
                cid,
                symbol,
                address,
                draw(st.integers(0, 36)),
                AssetId(draw(st.sampled_from(asset_ids))),
                draw(st.sampled_from(AssetKind)),
            )
            for symbol, address in zip(symbols, token_addresses, strict=False)
        )
        chains.append(
            ChainSpec(
                chain_id=cid,
                name=draw(st.text(min_size=1, max_size=12).filter(str.strip)),
                rpc_urls=tuple(draw(st.lists(urls, min_size=1, max_size=3))),
                finality_depth=draw(st.integers(0, 10_000)),
                block_time_s=draw(st.floats(1e-3, 1e4)),
                contracts=contracts,
                tokens=tokens,
                genesis_hash=draw(st.none() | st.just("0x" + "0f" * 32)),
            )
        )
    database_url = draw(st.sampled_from([DEFAULT_DATABASE_URL, "postgresql+psycopg://u@h/db"]))
    return Registry(tuple(chains), tuple(assets), database_url)


@given(registries())
def test_round_trip_property(registry: Registry) -> None:
    assert parse_registry(tomllib.loads(registry_to_toml(registry))) == registry


# ---------------------------------------------------------------- validation messages


def _set(path: str, value: Any) -> Any:
    """A mutation of the sample document: set the value at a dotted key path."""

    def mutate(document: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        for key in parents:
            document = document[key]
        if value is _DELETE:
            del document[last]
        else:
            document[last] = value

    return mutate


_DELETE = object()
_BAD_CHECKSUM = WETH[:2] + WETH[2:].swapcase()


@pytest.mark.parametrize(
    ("mutate", "fragments"),
    [
        (_set("chain", {}), ["unknown key 'chain'; did you mean 'chains'?"]),
        (
            _set("chains/1/finalty_depth", 3),
            ["chains.1: unknown key 'finalty_depth'; did you mean 'finality_depth'?"],
        ),
        (
            _set("chains/1/rpc_urls", _DELETE),
            ["chains.1: missing required key 'rpc_urls'", 'add rpc_urls = ["http://'],
        ),
        (
            _set("chains/1/finality_depth", "32"),
            ["chains.1.finality_depth: must be an integer, not a string", "finality_depth = 32"],
        ),
        (
            _set("chains/1/finality_depth", True),
            ["chains.1.finality_depth: must be an integer, not a boolean"],
        ),
        (_set("chains/1/block_time_s", "fast"), ["chains.1.block_time_s: must be a number"]),
        (_set("chains/1/rpc_urls", [1]), ["chains.1.rpc_urls: must be an array of strings"]),
        (_set("chains/1/tokens/WETH", "x"), ["chains.1.tokens.WETH: must be a table"]),
        (_set("chains", 5), ["chains: must be a table"]),
        (_set("chains", {}), ["chains: no chain is configured; add [chains.1]"]),
        (
            _set("chains/abc", SAMPLE["chains"]["10"]),
            ["chains.abc: chain id 'abc' is not a positive integer", "[chains.42161]"],
        ),
        (_set("chains/0", SAMPLE["chains"]["10"]), ["chains.0: chain id '0' is not a positive"]),
        (
            _set(f"chains/{2**63}", SAMPLE["chains"]["10"]),
            [f"chains.{2**63}: chain id must be a positive integer below 2**63"],
        ),
        (
            _set("chains/1/rpc_urls", ["ftp://node"]),
            ["chains.1.rpc_urls[0]: 'ftp://node' is not an RPC URL", "use http:// or https://"],
        ),
        (
            _set("chains/10/rpc_urls", ["http://127.0.0.1:8546", "ws://127.0.0.1:8546"]),
            [
                "chains.10.rpc_urls[1]: 'ws://127.0.0.1:8546' is a WebSocket URL",
                "RTRM speaks JSON-RPC over HTTP(S) only; use the node's http:// endpoint instead",
                "'http://127.0.0.1:8546'",
            ],
        ),
        (
            _set("chains/1/rpc_urls", ["https://rpc.example:port/"]),
            ["chains.1.rpc_urls[0]: 'https://rpc.example:port/' is not a URL", "host[:port]"],
        ),
        (_set("chains/1/rpc_urls", []), ["chains.1.rpc_urls: is empty; list at least one"]),
        (
            _set("chains/1/finality_depth", -1),
            ["chains.1.finality_depth: -1 is negative", "e.g. 32 on Ethereum"],
        ),
        (_set("chains/1/block_time_s", 0), ["chains.1.block_time_s: 0.0 must be a positive"]),
        (_set("chains/1/genesis_hash", "0x12"), ["chains.1.genesis_hash: '0x12' is not a"]),
        (
            _set("chains/1/tokens/WETH/address", "0x12"),
            ["chains.1.tokens.WETH.address: '0x12' is not an address", "40 hex digits"],
        ),
        (
            _set("chains/1/tokens/WETH/address", _BAD_CHECKSUM),
            ["chains.1.tokens.WETH.address", "bad EIP-55 checksum", "all-lowercase"],
        ),
        (
            _set("chains/1/tokens/WETH/decimals", 37),
            ["chains.1.tokens.WETH.decimals: 37 is out of range; use 0..36"],
        ),
        (
            _set("chains/1/tokens/WETH/asset", "ETHH"),
            [
                "chains.1.tokens.WETH.asset: unknown asset 'ETHH'; did you mean 'ETH'?",
                "add [assets.ETHH]",
            ],
        ),
        (
            _set("chains/1/contracts/lending_pool/asset", "USD"),
            ["chains.1.contracts.lending_pool.asset: unknown asset 'USD'"],
        ),
        (
            _set("chains/1/tokens/WETH/kind", "wraped"),
            ["chains.1.tokens.WETH.kind: unknown kind 'wraped'; did you mean 'wrapped'?"],
        ),
        (
            _set("chains/1/contracts/lending_pool/kind", "pool"),
            ["chains.1.contracts.lending_pool.kind: unknown kind 'pool'", "valid kinds: token,"],
        ),
        (
            _set("chains/1/contracts/lending_pool/deployed_block", -5),
            ["chains.1.contracts.lending_pool.deployed_block: -5 is negative"],
        ),
        (
            _set("chains/1/tokens/USDC/address", WETH),
            [f"chains.1.tokens: address {WETH} appears twice; keep one entry"],
        ),
        (
            _set("chains/1/contracts/lending_pool/address", FEED),
            [f"chains.1.contracts: address {FEED} appears twice"],
        ),
        (
            _set("assets/ETH/underlying", "WSTETH"),
            ["assets.ETH.underlying: underlying links form a cycle (ETH -> WSTETH -> ETH)"],
        ),
        (_set("assets/USDC/underlying", "USD"), ["assets.USDC.underlying: unknown asset 'USD'"]),
        (_set("assets/ETH/name", _DELETE), ["assets.ETH: missing required key 'name'"]),
        (_set("store/database_url", "rtrm.db"), ["store.database_url: 'rtrm.db' is not a"]),
        (_set("store/url", "x"), ["store: unknown key 'url'; valid keys: database_url"]),
    ],
)
def test_invalid_config_names_file_key_and_fix(
    tmp_path: Path, mutate: Any, fragments: list[str]
) -> None:
    document = sample()
    mutate(document)
    path = write_toml(tmp_path / "rtrm.toml", document)
    with pytest.raises(ConfigError) as caught:
        load_registry(path, env={})
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    for fragment in fragments:
        assert fragment in message


def test_toml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "rtrm.toml"
    path.write_text('[chains.1]\nname = "ethereum"\nfinality_depth = = 3\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"rtrm\.toml: invalid TOML: .*line 3"):
        load_registry(path, env={})


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml: no such file"):
        load_registry(tmp_path / "nope.toml", env={})


def test_specs_built_in_code_are_validated() -> None:
    lower = TokenSpec(
        ChainId(1), "WETH", Address(WETH.lower()), 18, AssetId("ETH"), AssetKind.WRAPPED
    )
    assert lower.address == WETH
    with pytest.raises(ConfigError, match="bad EIP-55 checksum"):
        TokenSpec(ChainId(1), "WETH", Address(_BAD_CHECKSUM), 18, AssetId("E"), AssetKind.WRAPPED)
    chain = ChainSpec(ChainId(1), "one", ("http://localhost:8545",), 0, 1.0, tokens=(lower,))
    with pytest.raises(ConfigError, match=r"chains\.2: WETH belongs to chain 1"):
        ChainSpec(ChainId(2), "two", ("http://localhost:8545",), 0, 1.0, tokens=(lower,))
    with pytest.raises(ConfigError, match=r"chains: chain id 1 appears twice"):
        Registry((chain, chain), (AssetSpec(AssetId("ETH"), "Ether"),))
    registry = Registry((chain,), (AssetSpec(AssetId("ETH"), "Ether"),), source=Path("a.toml"))
    assert registry == Registry((chain,), (AssetSpec(AssetId("ETH"), "Ether"),))
    assert hash(registry) == hash(Registry((chain,), (AssetSpec(AssetId("ETH"), "Ether"),)))


# ---------------------------------------------------------------- environment overrides


def test_env_overrides_rpc_urls_finality_and_database(registry: Registry) -> None:
    env = {
        "RTRM_CHAIN_42161_RPC_URLS": " http://a:1 , https://b ,",
        "RTRM_CHAIN_1_FINALITY_DEPTH": "64",
        "RTRM_DATABASE_URL": "postgresql+psycopg://rtrm@db/rtrm",
        "RTRM_CONFIG": "ignored-here",
        "PATH": "/bin",
    }
    overridden = apply_env_overrides(registry, env)
    assert overridden.chain(42161).rpc_urls == ("http://a:1", "https://b")
    assert overridden.chain(1).finality_depth == 64
    assert overridden.database_url == "postgresql+psycopg://rtrm@db/rtrm"
    assert overridden.chain(10) == registry.chain(10)


def test_load_applies_os_environ_by_default(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RTRM_CHAIN_10_FINALITY_DEPTH", "7")
    assert load_registry(config_file).chain(10).finality_depth == 7


@pytest.mark.parametrize(
    ("env", "error", "fragments"),
    [
        (
            {"RTRM_CHAIN_4216_RPC_URLS": "http://x"},
            UnknownChainError,
            ["RTRM_CHAIN_4216_RPC_URLS: unknown chain 4216; did you mean 42161?", "unset it"],
        ),
        (
            {"RTRM_CHAIN_1_RPC_URL": "http://x"},
            ConfigError,
            ["RTRM_CHAIN_1_RPC_URL: unknown override; did you mean RTRM_CHAIN_1_RPC_URLS?"],
        ),
        (
            {"RTRM_CHAIN_ARB_RPC_URLS": "http://x"},
            ConfigError,
            ["RTRM_CHAIN_ARB_RPC_URLS: not an override", "numeric chain id"],
        ),
        (
            {"RTRM_CHAIN_1_FINALITY_DEPTH": "deep"},
            ConfigError,
            ["RTRM_CHAIN_1_FINALITY_DEPTH='deep': must be a whole number of blocks"],
        ),
        (
            {"RTRM_CHAIN_1_FINALITY_DEPTH": "-3"},
            ConfigError,
            ["RTRM_CHAIN_1_FINALITY_DEPTH: chains.1.finality_depth: -3 is negative"],
        ),
        (
            {"RTRM_CHAIN_1_RPC_URLS": "localhost:8545"},
            ConfigError,
            [
                "RTRM_CHAIN_1_RPC_URLS: chains.1.rpc_urls[0]: 'localhost:8545' has no scheme",
                "write it as 'http://localhost:8545'",
            ],
        ),
        (
            {"RTRM_DATABASE_URL": "rtrm.db"},
            ConfigError,
            ["RTRM_DATABASE_URL: store.database_url: 'rtrm.db' is not a database URL"],
        ),
    ],
)
def test_bad_env_overrides_name_the_variable(
    registry: Registry, env: dict[str, str], error: type[Exception], fragments: list[str]
) -> None:
    with pytest.raises(error) as caught:
        apply_env_overrides(registry, env)
    for fragment in fragments:
        assert fragment in str(caught.value)


def test_a_websocket_url_is_refused_with_its_fix_and_no_credentials(registry: Registry) -> None:
    """Both RPC clients speak HTTP(S) only: a ws(s) URL fails validation, not the indexer."""
    key = "aB3dE6gH9jK2mN5pQ8sT1vW4yZ7"
    urls = f"https://arb.example.org,wss://u:hunter2@arb-mainnet.g.alchemy.com/v2/{key}"
    with pytest.raises(ConfigError) as caught:
        apply_env_overrides(registry, {"RTRM_CHAIN_42161_RPC_URLS": urls})
    message = str(caught.value)
    assert message.startswith(
        "RTRM_CHAIN_42161_RPC_URLS: chains.42161.rpc_urls[1]: "
        "'wss://u:***@arb-mainnet.g.alchemy.com/v2/***' is a WebSocket URL"
    )
    assert "use the node's https:// endpoint instead" in message
    assert "'https://u:***@arb-mainnet.g.alchemy.com/v2/***'" in message  # the likely fix
    assert "hunter2" not in message
    assert key not in message


# ---------------------------------------------------------------- discovery


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_discovery_prefers_rtrm_config_then_cwd_then_devnet(workdir: Path) -> None:
    (workdir / ".rtrm").mkdir()
    devnet = write_toml(workdir / ".rtrm" / "rtrm.toml", sample())
    assert find_config(env={}) == Path(".rtrm/rtrm.toml")
    assert load_registry(env={}).source == Path(".rtrm/rtrm.toml")
    write_toml(workdir / "rtrm.toml", sample())
    assert find_config(env={}) == Path("rtrm.toml")
    assert find_config(env={"RTRM_CONFIG": str(devnet)}) == devnet
    assert find_config(env={"RTRM_CONFIG": ""}) == Path("rtrm.toml")  # empty means unset


def test_discovery_without_any_config_says_what_to_do(workdir: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_registry(env={})
    message = str(caught.value)
    assert message.startswith("no rtrm.toml found (looked in $RTRM_CONFIG, ./rtrm.toml, ")
    assert "./.rtrm/rtrm.toml" in message
    assert "run `rtrm devnet up`" in message


def test_rtrm_config_pointing_nowhere_is_an_error(workdir: Path) -> None:
    write_toml(workdir / "rtrm.toml", sample())
    with pytest.raises(ConfigError, match=r"RTRM_CONFIG=missing\.toml: no such file"):
        find_config(env={"RTRM_CONFIG": "missing.toml"})


def test_rpc_rate_limit_is_read_written_and_checked(tmp_path: Path) -> None:
    from chains.registry import parse_registry, registry_to_toml

    table = {
        "chains": {
            "1": {
                "name": "ethereum",
                "rpc_urls": ["http://127.0.0.1:8545"],
                "finality_depth": 32,
                "block_time_s": 12.0,
                "rpc_rate_limit_per_s": 25,
            }
        }
    }
    registry = parse_registry(table)
    assert registry.chain(1).rpc_rate_limit_per_s == 25.0
    assert "rpc_rate_limit_per_s = 25.0" in registry_to_toml(registry)
    table["chains"]["1"]["rpc_rate_limit_per_s"] = -1
    with pytest.raises(ConfigError, match=r"rpc_rate_limit_per_s: -1.0 must be"):
        parse_registry(table)
