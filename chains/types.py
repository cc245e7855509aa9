"""Value types shared by every package: chain ids, block numbers, wei, addresses, asset kinds.

``NewType`` wrappers cost nothing at run time and let mypy catch a block number passed
where a chain id was meant. Token amounts are exact integers in the token's smallest
unit (``Wei`` is used for any token, not only ether).
"""

from __future__ import annotations

from enum import StrEnum
from typing import NewType

ChainId = NewType("ChainId", int)
BlockNumber = NewType("BlockNumber", int)
Wei = NewType("Wei", int)
Address = NewType("Address", str)  # always EIP-55 checksummed
AssetId = NewType("AssetId", str)  # canonical asset id: "ETH", "BTC", "USDC", ...


class AssetKind(StrEnum):
    """How a token relates to its canonical asset (drives exposure roll-up)."""

    NATIVE = "native"
    WRAPPED = "wrapped"
    BRIDGED = "bridged"
    LIQUID_STAKED = "liquid_staked"
    RECEIPT_SHARE = "receipt_share"
    STABLE = "stable"


class ContractKind(StrEnum):
    """The protocol contracts RTRM knows how to index."""

    TOKEN = "token"
    PRICE_FEED = "price_feed"
    VOL_ORACLE = "vol_oracle"
    OPTIONS_MARKET = "options_market"
    LENDING_POOL = "lending_pool"
    PERPS_MARKET = "perps_market"
    INSURANCE_FUND = "insurance_fund"
    VAULT = "vault"
    BRIDGE = "bridge"
