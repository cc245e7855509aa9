"""Deploy and configure the devnet's protocol contracts on one chain.

Contract addresses follow from the deployer's nonce (``CREATE``), so they are computed here
before anything is sent: every deployment and every configuration call goes out in one
queue, and the whole world lands in two blocks. The same chain plan and deployer always
give the same addresses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from chains.abi import encode_args, encode_call
from chains.artifacts import load_artifact
from chains.sender import TxSender
from chains.types import Address, AssetId, BlockNumber, ChainId, ContractKind
from chains.world import (
    ASSETS,
    ATM_VOL,
    FEED_DECIMALS,
    INITIAL_PRICES_USD,
    INSURANCE_COOLDOWN_S,
    INSURANCE_WINDOW_S,
    LENDING_RESERVES,
    OPTIONS_COLLATERAL,
    OPTIONS_EXPIRIES_S,
    OPTIONS_IM_BPS,
    OPTIONS_MM_BPS,
    OPTIONS_PENALTY_BPS,
    OPTIONS_STRIKE_MONEYNESS,
    OPTIONS_UNDERLYINGS,
    PERP_MARKETS,
    WAD,
    ChainPlan,
    TokenPlan,
    asset_id_bytes32,
    feed_name,
    tokens_for,
)

__all__ = [
    "DEPLOYER",
    "ChainDeployment",
    "DeployedContract",
    "SeriesPlan",
    "create_address",
    "deploy_world",
]

# anvil's first dev account (well known, funded): deploys and operates the devnet's contracts
DEPLOYER = Address("0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266")
_DEPLOY_GAS = 8_000_000


@dataclass(frozen=True, slots=True)
class DeployedContract:
    name: str
    kind: ContractKind
    address: Address
    asset_id: AssetId | None = None


@dataclass(frozen=True, slots=True)
class SeriesPlan:
    series_id: int
    underlying: str
    expiry: int
    strike_usd: float
    is_call: bool


@dataclass(slots=True)
class ChainDeployment:
    """Where everything landed on one chain."""

    plan: ChainPlan
    home: bool
    deployed_block: BlockNumber = field(default_factory=lambda: BlockNumber(0))
    contracts: dict[str, DeployedContract] = field(default_factory=dict)
    tokens: dict[str, tuple[TokenPlan, Address]] = field(default_factory=dict)
    series: list[SeriesPlan] = field(default_factory=list)

    @property
    def chain_id(self) -> ChainId:
        return self.plan.chain_id

    def address(self, name: str) -> Address:
        return self.contracts[name].address

    def token(self, symbol: str) -> Address:
        return self.tokens[symbol][1]


def create_address(sender: str, nonce: int) -> Address:
    """The address of the contract ``sender`` creates with ``nonce`` (keccak(rlp([s, n])))."""
    sender_bytes = bytes.fromhex(sender[2:])
    if nonce == 0:
        nonce_rlp = b"\x80"
    elif nonce < 0x80:  # noqa: PLR2004 - RLP single-byte range
        nonce_rlp = bytes([nonce])
    else:
        raw = nonce.to_bytes((nonce.bit_length() + 7) // 8, "big")
        nonce_rlp = bytes([0x80 + len(raw)]) + raw
    payload = b"\x94" + sender_bytes + nonce_rlp
    return Address(to_checksum_address(keccak(bytes([0xC0 + len(payload)]) + payload)[12:]))


class _Deployer:
    def __init__(self, sender: TxSender, deployment: ChainDeployment) -> None:
        self.sender = sender
        self.deployment = deployment
        self.nonce = sender.next_nonce(DEPLOYER)

    def deploy(self, artifact: str, types: list[str], args: list[object]) -> Address:
        code = load_artifact(artifact).bytecode + encode_args(types, args).hex()
        self.sender.send(DEPLOYER, None, code, gas=_DEPLOY_GAS)
        address = create_address(DEPLOYER, self.nonce)
        self.nonce += 1
        return address

    def call(self, to: str, signature: str, *args: object, gas: int = 600_000) -> None:
        self.sender.send(DEPLOYER, to, encode_call(signature, *args), gas=gas)
        self.nonce += 1

    def add(
        self, name: str, kind: ContractKind, address: Address, asset: str | None = None
    ) -> None:
        asset_id = AssetId(asset) if asset is not None else None
        self.deployment.contracts[name] = DeployedContract(name, kind, address, asset_id)


def deploy_world(
    sender: TxSender, plan: ChainPlan, *, home: bool, start_time: int
) -> ChainDeployment:
    """Deploy tokens, feeds, the vol oracle and every protocol on one chain, configure them,
    and mine it all. ``start_time`` anchors option expiries (unix seconds)."""
    deployment = ChainDeployment(plan=plan, home=home)
    d = _Deployer(sender, deployment)

    for token in tokens_for(home):
        if token.contract == "Vault":
            address = d.deploy(
                "Vault",
                ["address", "string", "string"],
                [deployment.token("WETH"), token.name, token.symbol],
            )
            d.add(f"vault_{token.symbol.lower()}", ContractKind.VAULT, address, token.asset_id)
        else:
            address = d.deploy(
                "Token", ["string", "string", "uint8"], [token.name, token.symbol, token.decimals]
            )
        deployment.tokens[token.symbol] = (token, address)

    for asset in ASSETS:
        price = round(INITIAL_PRICES_USD[asset.asset_id] * 10**FEED_DECIMALS)
        address = d.deploy(
            "PriceFeed",
            ["uint8", "string", "int256"],
            [FEED_DECIMALS, f"{asset.asset_id} / USD", price],
        )
        d.add(feed_name(asset.asset_id), ContractKind.PRICE_FEED, address, asset.asset_id)

    d.add("vol_oracle", ContractKind.VOL_ORACLE, d.deploy("VolOracle", [], []))
    usdc = deployment.token("USDC")
    options = d.deploy(
        "OptionsMarket",
        ["address", "uint16", "uint16", "uint16"],
        [usdc, OPTIONS_MM_BPS, OPTIONS_IM_BPS, OPTIONS_PENALTY_BPS],
    )
    d.add("options_market", ContractKind.OPTIONS_MARKET, options)
    d.add("lending_pool", ContractKind.LENDING_POOL, d.deploy("LendingPool", [], []))
    d.add("perps_market", ContractKind.PERPS_MARKET, d.deploy("PerpsMarket", ["address"], [usdc]))
    fund = d.deploy(
        "InsuranceFund",
        ["address", "uint64", "uint64"],
        [usdc, INSURANCE_COOLDOWN_S, INSURANCE_WINDOW_S],
    )
    d.add("insurance_fund", ContractKind.INSURANCE_FUND, fund, "USDC")
    if home:
        d.add("bridge_escrow", ContractKind.BRIDGE, d.deploy("BridgeEscrow", [], []))
    sender.mine()
    deployment.deployed_block = BlockNumber(sender.stats.last_block or 0)

    _configure_options(d, start_time)
    _configure_lending(d)
    for perp in PERP_MARKETS:
        d.call(
            deployment.address("perps_market"),
            "listMarket(bytes32,address,uint16,uint16,uint16)",
            asset_id_bytes32(perp.market),
            deployment.address(feed_name(perp.asset_id)),
            perp.mm_bps,
            perp.im_bps,
            perp.liquidation_fee_bps,
        )
    sender.mine()
    return deployment


def _configure_options(d: _Deployer, start_time: int) -> None:
    deployment = d.deployment
    market = deployment.address("options_market")
    vol_oracle = deployment.address("vol_oracle")
    for underlying in OPTIONS_UNDERLYINGS:
        d.call(
            market,
            "listUnderlying(bytes32,address)",
            asset_id_bytes32(underlying),
            deployment.address(feed_name(underlying)),
        )
    for symbol, haircut_bps in OPTIONS_COLLATERAL:
        token_plan, token = deployment.tokens[symbol]
        d.call(
            market,
            "listCollateral(address,address,uint16)",
            token,
            deployment.address(feed_name(token_plan.asset_id)),
            haircut_bps,
        )
    series_id = 0
    for underlying in OPTIONS_UNDERLYINGS:
        spot = INITIAL_PRICES_USD[underlying]
        for expiry_s in OPTIONS_EXPIRIES_S:
            expiry = start_time + expiry_s
            atm = ATM_VOL[underlying]
            d.call(
                vol_oracle,
                "setSurface(bytes32,uint64,uint256,int256[5])",
                asset_id_bytes32(underlying),
                expiry,
                round(atm * WAD),
                svi_params(atm, expiry_s),
            )
            for moneyness in OPTIONS_STRIKE_MONEYNESS:
                strike = _round_strike(spot * moneyness)
                for is_call in (True, False):
                    series_id += 1
                    d.call(
                        market,
                        "createSeries(bytes32,uint64,uint256,bool)",
                        asset_id_bytes32(underlying),
                        expiry,
                        round(strike * WAD),
                        is_call,
                    )
                    deployment.series.append(
                        SeriesPlan(series_id, underlying, expiry, strike, is_call)
                    )


def svi_params(
    atm_vol: float, t_seconds: int, *, skew: float = -0.35, wings: float = 0.12
) -> list[int]:
    """Raw SVI (a, b, rho, m, sigma) in WAD whose total variance at k = 0 is atm_vol^2 T:
    a smile with a put skew (rho < 0) and curvature set by ``wings``."""
    t_years = t_seconds / (365 * 86_400)
    total_var_atm = atm_vol * atm_vol * t_years
    b = wings * math.sqrt(t_years)
    sigma = 0.2
    a = total_var_atm - b * sigma  # at k = m = 0: w = a + b * sigma
    return [round(a * WAD), round(b * WAD), round(skew * WAD), 0, round(sigma * WAD)]


def _round_strike(value: float) -> float:
    step = 10 ** max(0, int(math.log10(value)) - 1)  # two significant figures
    return float(round(value / step) * step)


def _configure_lending(d: _Deployer) -> None:
    deployment = d.deployment
    pool = deployment.address("lending_pool")
    for reserve in LENDING_RESERVES:
        if reserve.symbol not in deployment.tokens:
            continue
        token_plan, token = deployment.tokens[reserve.symbol]
        if reserve.symbol == "rvETH" and deployment.home:
            continue  # the vault's own chain lends against it only where it is bridged
        d.call(
            pool,
            "initReserve(address,address,uint16,uint16,uint16,bool)",
            token,
            deployment.address(feed_name(token_plan.asset_id)),
            reserve.ltv_bps,
            reserve.liquidation_threshold_bps,
            reserve.liquidation_bonus_bps,
            reserve.borrowable,
        )
