"""The devnet's world: which chains, tokens, price feeds and protocols it runs, with what
risk parameters and opening prices.

This is data, not behaviour: the deployer reads it to deploy and configure contracts, the
seeder to size positions, the keepers to find liquidations, and the config writer to build
the asset map. Everything here is deterministic, so the same seed always yields the same
world. Prices are USD; rates are basis points (1 bp = 0.01%).

The first chain is the *home* chain: it hosts the rvETH vault (an ERC-4626-style receipt
share over WETH) and the bridge escrow; every other chain has a bridged rvETH that its
lending pool accepts as collateral, which is what links a shock on one chain to
liquidations on another.
"""

from __future__ import annotations

from dataclasses import dataclass

from chains.types import AssetKind, ChainId

__all__ = [
    "ASSETS",
    "DEVNET_CHAINS",
    "GENESIS_TIMESTAMP",
    "INITIAL_PRICES_USD",
    "LENDING_RESERVES",
    "OPTIONS_COLLATERAL",
    "PERP_MARKETS",
    "TOKENS",
    "AssetPlan",
    "ChainPlan",
    "ReservePlan",
    "TokenPlan",
    "asset_id_bytes32",
    "feed_name",
    "tokens_for",
]

GENESIS_TIMESTAMP = 1_767_225_600  # 2026-01-01T00:00:00Z: every devnet starts here
FEED_DECIMALS = 8  # as Chainlink's USD feeds
WAD = 10**18


@dataclass(frozen=True, slots=True)
class ChainPlan:
    chain_id: ChainId
    name: str
    seed_block_time_s: int  # spacing of the seeded history's block timestamps
    finality_depth: int


DEVNET_CHAINS: tuple[ChainPlan, ...] = (
    ChainPlan(ChainId(1), "ethereum", 12, 32),
    ChainPlan(ChainId(10), "optimism", 2, 120),
    ChainPlan(ChainId(42161), "arbitrum", 1, 240),
    ChainPlan(ChainId(8453), "base", 2, 120),
    ChainPlan(ChainId(137), "polygon", 2, 200),
    ChainPlan(ChainId(43114), "avalanche", 2, 60),
    ChainPlan(ChainId(56), "bnb", 3, 60),
    ChainPlan(ChainId(100), "gnosis", 5, 60),
)


@dataclass(frozen=True, slots=True)
class AssetPlan:
    asset_id: str
    name: str
    underlying: str  # roll-up target for exposure; itself for a root asset
    peg: str | None = None


ASSETS: tuple[AssetPlan, ...] = (
    AssetPlan("ETH", "Ether", "ETH"),
    AssetPlan("BTC", "Bitcoin", "BTC"),
    AssetPlan("USDC", "USD Coin", "USDC", peg="USD"),
    AssetPlan("WSTETH", "Wrapped staked ether", "ETH"),
    AssetPlan("RVETH", "RTRM vault ether share", "ETH"),
)

INITIAL_PRICES_USD: dict[str, float] = {
    "ETH": 3_000.0,
    "BTC": 60_000.0,
    "USDC": 1.0,
    "WSTETH": 3_540.0,  # 1.18 ETH per wstETH
    "RVETH": 3_000.0,  # one share per WETH at launch
}


@dataclass(frozen=True, slots=True)
class TokenPlan:
    symbol: str
    name: str
    decimals: int
    asset_id: str
    kind: AssetKind
    where: str  # "all", "home" or "remote"
    contract: str = "Token"  # artifact to deploy ("Vault" for the home rvETH)


TOKENS: tuple[TokenPlan, ...] = (
    TokenPlan("USDC", "USD Coin", 6, "USDC", AssetKind.STABLE, "all"),
    TokenPlan("WETH", "Wrapped Ether", 18, "ETH", AssetKind.WRAPPED, "all"),
    TokenPlan("WBTC", "Wrapped BTC", 8, "BTC", AssetKind.WRAPPED, "all"),
    TokenPlan(
        "wstETH", "Wrapped liquid staked Ether", 18, "WSTETH", AssetKind.LIQUID_STAKED, "all"
    ),
    TokenPlan("USDC.e", "Bridged USDC", 6, "USDC", AssetKind.BRIDGED, "remote"),
    TokenPlan("rvETH", "RTRM vault ETH", 18, "RVETH", AssetKind.RECEIPT_SHARE, "home", "Vault"),
    TokenPlan("rvETH", "Bridged RTRM vault ETH", 18, "RVETH", AssetKind.RECEIPT_SHARE, "remote"),
)


def tokens_for(home: bool) -> tuple[TokenPlan, ...]:
    """The tokens deployed on the home chain or on a remote one, in deployment order."""
    wanted = ("all", "home") if home else ("all", "remote")
    return tuple(t for t in TOKENS if t.where in wanted)


def feed_name(asset_id: str) -> str:
    """Registry name of the USD price feed of ``asset_id`` (e.g. ``feed_eth_usd``)."""
    return f"feed_{asset_id.lower()}_usd"


@dataclass(frozen=True, slots=True)
class ReservePlan:
    symbol: str
    ltv_bps: int
    liquidation_threshold_bps: int
    liquidation_bonus_bps: int
    borrowable: bool


LENDING_RESERVES: tuple[ReservePlan, ...] = (
    ReservePlan("USDC", 8_000, 8_500, 10_400, True),
    ReservePlan("USDC.e", 7_500, 8_000, 10_500, True),
    ReservePlan("WETH", 8_000, 8_300, 10_500, True),
    ReservePlan("WBTC", 7_300, 7_800, 10_650, True),
    ReservePlan("wstETH", 7_200, 7_900, 10_600, False),
    ReservePlan("rvETH", 6_000, 7_000, 10_800, False),  # listed where rvETH is bridged
)

# Options: quote USDC; margin = |size| x (rate x spot + intrinsic) for shorts.
OPTIONS_MM_BPS = 900
OPTIONS_IM_BPS = 1_500
OPTIONS_PENALTY_BPS = 1_000  # of maintenance margin, paid to the liquidator
OPTIONS_COLLATERAL: tuple[tuple[str, int], ...] = (("USDC", 0), ("WETH", 1_500), ("WBTC", 1_500))
OPTIONS_UNDERLYINGS: tuple[str, ...] = ("ETH", "BTC")
OPTIONS_EXPIRIES_S: tuple[int, ...] = (86_400, 7 * 86_400, 30 * 86_400, 90 * 86_400)
OPTIONS_STRIKE_MONEYNESS: tuple[float, ...] = (0.8, 0.9, 1.0, 1.1, 1.2)
ATM_VOL: dict[str, float] = {"ETH": 0.65, "BTC": 0.55}


@dataclass(frozen=True, slots=True)
class PerpPlan:
    market: str
    asset_id: str
    mm_bps: int
    im_bps: int
    liquidation_fee_bps: int


PERP_MARKETS: tuple[PerpPlan, ...] = (
    PerpPlan("ETH-PERP", "ETH", 500, 1_000, 250),
    PerpPlan("BTC-PERP", "BTC", 500, 1_000, 250),
)

INSURANCE_COOLDOWN_S = 20 * 86_400
INSURANCE_WINDOW_S = 2 * 86_400


def asset_id_bytes32(asset_id: str) -> bytes:
    """``"ETH"`` -> 32 bytes, ASCII left-aligned and zero-padded (Solidity ``bytes32("ETH")``)."""
    raw = asset_id.encode("ascii")
    if len(raw) > 32:  # noqa: PLR2004 - the width of bytes32
        raise ValueError(f"asset id {asset_id!r} is longer than 32 bytes")
    return raw.ljust(32, b"\0")
