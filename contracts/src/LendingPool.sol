// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Owned} from "./lib/Owned.sol";
import {IERC20, PriceMath} from "./lib/Interfaces.sol";

/// @notice An Aave-v3-style lending pool without interest (balances change only through
/// events, so an indexer can reproduce them exactly).
///
/// Health factor HF = sum(collateral value x liquidation threshold) / debt value (WAD).
/// Borrowing and withdrawing need sum(collateral value x LTV) >= debt afterwards.
/// liquidationCall needs HF < 1; the close factor is 50%, or 100% when HF <= 0.95 or the
/// position is dust (collateral and debt both under $2,000). Seized collateral =
/// repaid debt x debt price / collateral price x liquidation bonus. When a liquidation
/// leaves a user with debt and no collateral at all, the debt is written off as a
/// reserve deficit (DeficitCreated), to be covered by the insurance backstop.
contract LendingPool is Owned {
    uint256 internal constant WAD = 1e18;
    uint256 internal constant BPS = 10_000;
    uint256 internal constant CLOSE_FACTOR_HF_THRESHOLD = 0.95e18;
    uint256 internal constant DUST_THRESHOLD_USD = 2_000e18;

    struct Reserve {
        address feed;
        uint16 ltvBps;
        uint16 liquidationThresholdBps;
        uint16 liquidationBonusBps; // e.g. 10500 = 5% bonus
        uint8 decimals;
        bool borrowable;
        bool active;
        uint256 totalSupplied;
        uint256 totalBorrowed;
        uint256 deficit;
    }

    struct AccountValues {
        uint256 collateralUsd;
        uint256 debtUsd;
        uint256 ltvWeightedUsd;
        uint256 thresholdWeightedUsd;
    }

    mapping(address => Reserve) public reserves;
    address[] public reserveList;
    mapping(address => mapping(address => uint256)) public supplied; // user => asset => units
    mapping(address => mapping(address => uint256)) public borrowed; // user => asset => units

    event ReserveInitialized(
        address indexed asset,
        address feed,
        uint16 ltvBps,
        uint16 liquidationThresholdBps,
        uint16 liquidationBonusBps,
        bool borrowable
    );
    event Supply(address indexed reserve, address user, address indexed onBehalfOf, uint256 amount);
    event Withdraw(address indexed reserve, address indexed user, address indexed to, uint256 amount);
    event Borrow(address indexed reserve, address user, address indexed onBehalfOf, uint256 amount);
    event Repay(address indexed reserve, address indexed user, address indexed repayer, uint256 amount);
    event LiquidationCall(
        address indexed collateralAsset,
        address indexed debtAsset,
        address indexed user,
        uint256 debtToCover,
        uint256 liquidatedCollateralAmount,
        address liquidator,
        bool receiveAToken
    );
    event DeficitCreated(address indexed user, address indexed debtAsset, uint256 amountCreated);
    event DeficitCovered(address indexed asset, address indexed coveredBy, uint256 amount);

    function initReserve(
        address asset,
        address feed,
        uint16 ltvBps,
        uint16 liquidationThresholdBps,
        uint16 liquidationBonusBps,
        bool borrowable
    ) external onlyOwner {
        require(!reserves[asset].active, "reserve exists");
        require(ltvBps <= liquidationThresholdBps && liquidationThresholdBps < BPS, "bad thresholds");
        require(liquidationBonusBps >= BPS, "bonus must be >= 100%");
        require(
            uint256(liquidationThresholdBps) * liquidationBonusBps <= BPS * BPS,
            "threshold x bonus must be <= 1"
        );
        reserves[asset] = Reserve({
            feed: feed,
            ltvBps: ltvBps,
            liquidationThresholdBps: liquidationThresholdBps,
            liquidationBonusBps: liquidationBonusBps,
            decimals: IERC20(asset).decimals(),
            borrowable: borrowable,
            active: true,
            totalSupplied: 0,
            totalBorrowed: 0,
            deficit: 0
        });
        reserveList.push(asset);
        emit ReserveInitialized(asset, feed, ltvBps, liquidationThresholdBps, liquidationBonusBps, borrowable);
    }

    function supply(address asset, uint256 amount, address onBehalfOf) external {
        Reserve storage r = _reserve(asset);
        require(amount > 0, "zero amount");
        require(IERC20(asset).transferFrom(msg.sender, address(this), amount), "transfer failed");
        supplied[onBehalfOf][asset] += amount;
        r.totalSupplied += amount;
        emit Supply(asset, msg.sender, onBehalfOf, amount);
    }

    function withdraw(address asset, uint256 amount, address to) external returns (uint256) {
        Reserve storage r = _reserve(asset);
        uint256 balance = supplied[msg.sender][asset];
        if (amount == type(uint256).max) amount = balance;
        require(amount > 0 && amount <= balance, "not enough supplied");
        supplied[msg.sender][asset] = balance - amount;
        r.totalSupplied -= amount;
        _requireBorrowCapacity(msg.sender);
        require(IERC20(asset).transfer(to, amount), "transfer failed");
        emit Withdraw(asset, msg.sender, to, amount);
        return amount;
    }

    function borrow(address asset, uint256 amount, address onBehalfOf) external {
        Reserve storage r = _reserve(asset);
        require(onBehalfOf == msg.sender, "credit delegation not supported");
        require(r.borrowable, "asset not borrowable");
        require(amount > 0, "zero amount");
        borrowed[msg.sender][asset] += amount;
        r.totalBorrowed += amount;
        _requireBorrowCapacity(msg.sender);
        require(IERC20(asset).transfer(msg.sender, amount), "not enough liquidity");
        emit Borrow(asset, msg.sender, onBehalfOf, amount);
    }

    function repay(address asset, uint256 amount, address onBehalfOf) external returns (uint256) {
        Reserve storage r = _reserve(asset);
        uint256 debt = borrowed[onBehalfOf][asset];
        if (amount > debt) amount = debt;
        require(amount > 0, "no debt to repay");
        require(IERC20(asset).transferFrom(msg.sender, address(this), amount), "transfer failed");
        borrowed[onBehalfOf][asset] = debt - amount;
        r.totalBorrowed -= amount;
        emit Repay(asset, onBehalfOf, msg.sender, amount);
        return amount;
    }

    /// @notice Repay part of `user`'s `debtAsset` debt and seize `collateralAsset` at a bonus.
    function liquidationCall(address collateralAsset, address debtAsset, address user, uint256 debtToCover)
        external
    {
        (uint256 repayUnits, uint256 seizeUnits) =
            _liquidationAmounts(collateralAsset, debtAsset, user, debtToCover);
        require(IERC20(debtAsset).transferFrom(msg.sender, address(this), repayUnits), "repay transfer failed");
        borrowed[user][debtAsset] -= repayUnits;
        reserves[debtAsset].totalBorrowed -= repayUnits;
        supplied[user][collateralAsset] -= seizeUnits;
        reserves[collateralAsset].totalSupplied -= seizeUnits;
        require(IERC20(collateralAsset).transfer(msg.sender, seizeUnits), "seize transfer failed");
        emit LiquidationCall(collateralAsset, debtAsset, user, repayUnits, seizeUnits, msg.sender, false);

        if (_hasNoCollateral(user)) _writeOffDebt(user);
    }

    /// @notice Pay (part of) a reserve's deficit; anyone may do it, the insurance fund usually does.
    function eliminateReserveDeficit(address asset, uint256 amount) external {
        Reserve storage r = _reserve(asset);
        require(amount > 0 && amount <= r.deficit, "amount exceeds deficit");
        require(IERC20(asset).transferFrom(msg.sender, address(this), amount), "transfer failed");
        r.deficit -= amount;
        emit DeficitCovered(asset, msg.sender, amount);
    }

    // ----------------------------------------------------------------------------- views

    /// @notice Aave-compatible summary; values in USD with 8 decimals, health factor in WAD.
    function getUserAccountData(address user)
        external
        view
        returns (
            uint256 totalCollateralBase,
            uint256 totalDebtBase,
            uint256 availableBorrowsBase,
            uint256 currentLiquidationThreshold,
            uint256 ltv,
            uint256 healthFactor
        )
    {
        AccountValues memory v = _accountValues(user);
        totalCollateralBase = v.collateralUsd / 1e10;
        totalDebtBase = v.debtUsd / 1e10;
        availableBorrowsBase = v.ltvWeightedUsd > v.debtUsd ? (v.ltvWeightedUsd - v.debtUsd) / 1e10 : 0;
        currentLiquidationThreshold = v.collateralUsd == 0 ? 0 : v.thresholdWeightedUsd * BPS / v.collateralUsd;
        ltv = v.collateralUsd == 0 ? 0 : v.ltvWeightedUsd * BPS / v.collateralUsd;
        healthFactor = _healthFactor(v);
    }

    /// @notice Every listed reserve with the user's supplied and borrowed units.
    function getUserReserves(address user)
        external
        view
        returns (address[] memory assets, uint256[] memory suppliedUnits, uint256[] memory borrowedUnits)
    {
        uint256 n = reserveList.length;
        assets = reserveList;
        suppliedUnits = new uint256[](n);
        borrowedUnits = new uint256[](n);
        for (uint256 i = 0; i < n; i++) {
            suppliedUnits[i] = supplied[user][assets[i]];
            borrowedUnits[i] = borrowed[user][assets[i]];
        }
    }

    function reserveCount() external view returns (uint256) {
        return reserveList.length;
    }

    // -------------------------------------------------------------------------- internals

    function _reserve(address asset) internal view returns (Reserve storage r) {
        r = reserves[asset];
        require(r.active, "unknown reserve");
    }

    function _accountValues(address user) internal view returns (AccountValues memory v) {
        for (uint256 i = 0; i < reserveList.length; i++) {
            address asset = reserveList[i];
            uint256 s = supplied[user][asset];
            uint256 b = borrowed[user][asset];
            if (s == 0 && b == 0) continue;
            Reserve storage r = reserves[asset];
            uint256 price = PriceMath.priceWad(r.feed);
            if (s > 0) {
                uint256 value = PriceMath.valueWad(s, r.decimals, price);
                v.collateralUsd += value;
                v.ltvWeightedUsd += value * r.ltvBps / BPS;
                v.thresholdWeightedUsd += value * r.liquidationThresholdBps / BPS;
            }
            if (b > 0) v.debtUsd += PriceMath.valueWad(b, r.decimals, price);
        }
    }

    function _healthFactor(AccountValues memory v) internal pure returns (uint256) {
        if (v.debtUsd == 0) return type(uint256).max;
        return v.thresholdWeightedUsd * WAD / v.debtUsd;
    }

    function _requireBorrowCapacity(address user) internal view {
        AccountValues memory v = _accountValues(user);
        require(v.debtUsd <= v.ltvWeightedUsd, "insufficient collateral");
    }

    /// @dev Debt units repaid and collateral units seized, after the close factor and the cap
    /// at the user's balance of that collateral.
    function _liquidationAmounts(address collateralAsset, address debtAsset, address user, uint256 debtToCover)
        internal
        view
        returns (uint256 repayUnits, uint256 seizeUnits)
    {
        Reserve storage coll = _reserve(collateralAsset);
        Reserve storage debtR = _reserve(debtAsset);
        AccountValues memory v = _accountValues(user);
        uint256 hf = _healthFactor(v);
        require(hf < WAD, "health factor not below 1");
        uint256 debt = borrowed[user][debtAsset];
        require(debt > 0, "user has no such debt");
        uint256 available = supplied[user][collateralAsset];
        require(available > 0, "user has no such collateral");

        bool fullClose = hf <= CLOSE_FACTOR_HF_THRESHOLD
            || (v.collateralUsd < DUST_THRESHOLD_USD && v.debtUsd < DUST_THRESHOLD_USD);
        uint256 maxRepay = fullClose ? debt : debt / 2;
        repayUnits = debtToCover < maxRepay ? debtToCover : maxRepay;

        uint256 debtPrice = PriceMath.priceWad(debtR.feed);
        uint256 collPrice = PriceMath.priceWad(coll.feed);
        uint256 repayUsd = PriceMath.valueWad(repayUnits, debtR.decimals, debtPrice);
        seizeUnits = repayUsd * coll.liquidationBonusBps * 10 ** coll.decimals / (BPS * collPrice);
        if (seizeUnits > available) {
            seizeUnits = available;
            uint256 seizeUsd = PriceMath.valueWad(available, coll.decimals, collPrice);
            repayUnits = seizeUsd * BPS * 10 ** debtR.decimals / (coll.liquidationBonusBps * debtPrice);
        }
        require(repayUnits > 0, "nothing to liquidate");
    }

    function _hasNoCollateral(address user) internal view returns (bool) {
        for (uint256 i = 0; i < reserveList.length; i++) {
            if (supplied[user][reserveList[i]] > 0) return false;
        }
        return true;
    }

    function _writeOffDebt(address user) internal {
        for (uint256 i = 0; i < reserveList.length; i++) {
            address asset = reserveList[i];
            uint256 debt = borrowed[user][asset];
            if (debt == 0) continue;
            borrowed[user][asset] = 0;
            Reserve storage r = reserves[asset];
            r.totalBorrowed -= debt;
            r.deficit += debt;
            emit DeficitCreated(user, asset, debt);
        }
    }
}
