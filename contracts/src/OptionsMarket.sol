// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Owned} from "./lib/Owned.sol";
import {IERC20, PriceMath} from "./lib/Interfaces.sol";

/// @notice European, cash-settled calls and puts on listed underlyings (e.g. "ETH", "BTC").
///
/// The market's liquidity pool is every trade's counterparty. Users keep a margin account
/// of collateral tokens (the quote stablecoin first, then others valued at their oracle price
/// less a haircut). Premiums and payoffs are in quote units at par (1 quote unit = $1), sizes
/// in underlying units with 18 decimals, strikes and prices in USD with 18 decimals.
///
/// Margin is required for short positions only, per account:
///   maintenance = sum over shorts |size| x (mmBps x spot + intrinsic), puts capped at strike;
///   initial uses imBps. Opening a short or withdrawing needs haircut collateral >= initial.
/// liquidate() needs haircut collateral < maintenance: every position is closed against the pool
/// at intrinsic value, a penalty (penaltyBps of maintenance) goes to the liquidator, collateral is
/// seized to pay for it, and any shortfall is recorded as bad debt.
contract OptionsMarket is Owned {
    uint256 internal constant WAD = 1e18;
    uint256 internal constant BPS = 10_000;

    struct Series {
        bytes32 underlying;
        uint64 expiry;
        bool isCall;
        bool settled;
        uint256 strikeWad;
        uint256 settlementPriceWad;
    }

    struct CollateralConfig {
        address feed;
        uint16 haircutBps;
        uint8 decimals;
        bool active;
    }

    struct Margin {
        uint256 collateralUsd;
        uint256 haircutCollateralUsd;
        uint256 maintenanceUsd;
        uint256 initialUsd;
    }

    address public immutable quoteToken;
    uint8 internal immutable quoteDecimals;
    uint16 public immutable mmBps;
    uint16 public immutable imBps;
    uint16 public immutable penaltyBps;

    mapping(bytes32 => address) public underlyingFeed;
    mapping(uint256 => Series) internal seriesById;
    uint256 public seriesCount;
    mapping(address => CollateralConfig) public collateralConfig;
    address[] public collateralList;

    mapping(address => mapping(uint256 => int256)) public positionOf;
    mapping(address => uint256[]) internal seriesOfUser;
    mapping(address => mapping(uint256 => bool)) internal hasSeries;
    mapping(address => mapping(address => uint256)) public collateralOf;

    uint256 public poolQuote; // quote units owned by the pool
    mapping(address => uint256) public poolCollateral; // seized non-quote collateral owned by the pool
    uint256 public totalBadDebt; // quote units

    event UnderlyingListed(bytes32 indexed underlying, address feed);
    event CollateralListed(address indexed token, address feed, uint16 haircutBps);
    event SeriesCreated(uint256 indexed seriesId, bytes32 indexed underlying, uint64 expiry, uint256 strikeWad, bool isCall);
    event PoolFunded(address indexed provider, uint256 amount);
    event CollateralDeposited(address indexed user, address indexed token, uint256 amount);
    event CollateralWithdrawn(address indexed user, address indexed token, uint256 amount);
    event PositionOpened(address indexed user, uint256 indexed seriesId, int256 sizeDelta, uint256 premium, int256 newSize);
    event PositionClosed(address indexed user, uint256 indexed seriesId, int256 sizeDelta, uint256 premium, int256 newSize);
    event SeriesSettled(uint256 indexed seriesId, uint256 settlementPriceWad);
    event PositionSettled(address indexed user, uint256 indexed seriesId, int256 size, int256 payoff);
    event PositionLiquidated(address indexed user, uint256 indexed seriesId, int256 size, uint256 priceWad);
    event Liquidated(address indexed user, address indexed liquidator, uint256 maintenanceUsd, uint256 collateralUsd, uint256 penalty);
    event CollateralSeized(address indexed user, address indexed token, uint256 amount);
    event BadDebt(address indexed user, uint256 amount);
    /// @notice Quote collateral credited to a liquidated account for its in-the-money longs
    /// (every other change of `collateralOf` is implied by the events above).
    event CollateralCredited(address indexed user, address indexed token, uint256 amount);

    constructor(address quoteToken_, uint16 mmBps_, uint16 imBps_, uint16 penaltyBps_) {
        require(mmBps_ > 0 && imBps_ >= mmBps_, "bad margin rates");
        quoteToken = quoteToken_;
        quoteDecimals = IERC20(quoteToken_).decimals();
        mmBps = mmBps_;
        imBps = imBps_;
        penaltyBps = penaltyBps_;
    }

    // ------------------------------------------------------------------------ admin

    function listUnderlying(bytes32 underlying, address feed) external onlyOwner {
        require(underlyingFeed[underlying] == address(0), "underlying listed");
        underlyingFeed[underlying] = feed;
        emit UnderlyingListed(underlying, feed);
    }

    /// @dev The quote token must be listed first: collateral is seized in listing order.
    function listCollateral(address token, address feed, uint16 haircutBps) external onlyOwner {
        require(!collateralConfig[token].active, "collateral listed");
        require(haircutBps < BPS, "haircut must be < 100%");
        require(collateralList.length > 0 || token == quoteToken, "list the quote token first");
        collateralConfig[token] = CollateralConfig(feed, haircutBps, IERC20(token).decimals(), true);
        collateralList.push(token);
        emit CollateralListed(token, feed, haircutBps);
    }

    function createSeries(bytes32 underlying, uint64 expiry, uint256 strikeWad, bool isCall)
        external
        onlyOperator
        returns (uint256 seriesId)
    {
        require(underlyingFeed[underlying] != address(0), "unknown underlying");
        require(expiry > block.timestamp, "expiry in the past");
        require(strikeWad > 0, "zero strike");
        seriesId = ++seriesCount;
        seriesById[seriesId] = Series(underlying, expiry, isCall, false, strikeWad, 0);
        emit SeriesCreated(seriesId, underlying, expiry, strikeWad, isCall);
    }

    function fundPool(uint256 amount) external {
        require(IERC20(quoteToken).transferFrom(msg.sender, address(this), amount), "transfer failed");
        poolQuote += amount;
        emit PoolFunded(msg.sender, amount);
    }

    // ----------------------------------------------------------------------- margin account

    function depositCollateral(address token, uint256 amount) external {
        require(collateralConfig[token].active, "unknown collateral");
        require(amount > 0, "zero amount");
        require(IERC20(token).transferFrom(msg.sender, address(this), amount), "transfer failed");
        collateralOf[msg.sender][token] += amount;
        emit CollateralDeposited(msg.sender, token, amount);
    }

    function withdrawCollateral(address token, uint256 amount) external {
        uint256 balance = collateralOf[msg.sender][token];
        require(amount > 0 && amount <= balance, "not enough collateral");
        collateralOf[msg.sender][token] = balance - amount;
        Margin memory m = _margin(msg.sender);
        require(m.haircutCollateralUsd >= m.initialUsd, "initial margin not met");
        require(IERC20(token).transfer(msg.sender, amount), "transfer failed");
        emit CollateralWithdrawn(msg.sender, token, amount);
    }

    // ------------------------------------------------------------------------- trading

    /// @notice Buy (sizeDelta > 0) or sell/write (sizeDelta < 0) `seriesId` for `premium` quote
    /// units, paid from (buy) or credited to (sell) the account's quote collateral. A trade
    /// may not flip a position through zero: close first.
    function trade(uint256 seriesId, int256 sizeDelta, uint256 premium) external {
        Series storage s = seriesById[seriesId];
        require(s.expiry > block.timestamp, "series expired or unknown");
        require(sizeDelta != 0, "zero size");
        int256 size = positionOf[msg.sender][seriesId];
        int256 newSize = size + sizeDelta;
        require(size == 0 || newSize == 0 || (size > 0) == (newSize > 0), "trade flips the position");

        if (sizeDelta > 0) {
            uint256 quoteBal = collateralOf[msg.sender][quoteToken];
            require(quoteBal >= premium, "premium exceeds quote collateral");
            collateralOf[msg.sender][quoteToken] = quoteBal - premium;
            poolQuote += premium;
        } else {
            require(poolQuote >= premium, "pool cannot pay premium");
            poolQuote -= premium;
            collateralOf[msg.sender][quoteToken] += premium;
        }
        positionOf[msg.sender][seriesId] = newSize;
        if (!hasSeries[msg.sender][seriesId]) {
            hasSeries[msg.sender][seriesId] = true;
            seriesOfUser[msg.sender].push(seriesId);
        }
        bool increases = _abs(newSize) > _abs(size);
        if (increases) {
            Margin memory m = _margin(msg.sender);
            require(m.haircutCollateralUsd >= m.initialUsd, "initial margin not met");
            emit PositionOpened(msg.sender, seriesId, sizeDelta, premium, newSize);
        } else {
            emit PositionClosed(msg.sender, seriesId, sizeDelta, premium, newSize);
        }
    }

    // ---------------------------------------------------------------------- settlement

    function settleSeries(uint256 seriesId) external {
        Series storage s = seriesById[seriesId];
        require(s.expiry != 0 && block.timestamp >= s.expiry, "series not expired");
        require(!s.settled, "series settled");
        s.settled = true;
        s.settlementPriceWad = PriceMath.priceWad(underlyingFeed[s.underlying]);
        emit SeriesSettled(seriesId, s.settlementPriceWad);
    }

    /// @notice Cash-settle `user`'s position in a settled series (anyone may call).
    function settlePosition(address user, uint256 seriesId) external {
        Series storage s = seriesById[seriesId];
        require(s.settled, "series not settled");
        int256 size = positionOf[user][seriesId];
        require(size != 0, "no position");
        positionOf[user][seriesId] = 0;
        uint256 payoffUsd = _abs(size) * _intrinsic(s, s.settlementPriceWad) / WAD;
        int256 payoff;
        if (size > 0) {
            uint256 units = payoffUsd / 10 ** (18 - quoteDecimals);
            require(poolQuote >= units, "pool cannot pay");
            poolQuote -= units;
            collateralOf[user][quoteToken] += units;
            payoff = int256(units);
        } else {
            uint256 units = _ceilDiv(payoffUsd, 10 ** (18 - quoteDecimals));
            _collect(user, units);
            payoff = -int256(units);
        }
        emit PositionSettled(user, seriesId, size, payoff);
    }

    // --------------------------------------------------------------------- liquidation

    function liquidate(address user) external {
        Margin memory m = _margin(user);
        require(m.haircutCollateralUsd < m.maintenanceUsd, "account is not liquidatable");
        int256 costUsd = 0;
        uint256[] storage ids = seriesOfUser[user];
        for (uint256 i = 0; i < ids.length; i++) {
            int256 size = positionOf[user][ids[i]];
            if (size == 0) continue;
            Series storage s = seriesById[ids[i]];
            uint256 spot = _spot(s);
            costUsd -= size * int256(_intrinsic(s, spot)) / int256(WAD);
            positionOf[user][ids[i]] = 0;
            emit PositionLiquidated(user, ids[i], size, spot);
        }
        uint256 penaltyUsd = m.maintenanceUsd * penaltyBps / BPS;
        uint256 scale = 10 ** (18 - quoteDecimals);
        if (costUsd < 0) {
            uint256 credit = uint256(-costUsd) / scale;
            require(poolQuote >= credit, "pool cannot pay");
            poolQuote -= credit;
            collateralOf[user][quoteToken] += credit;
            costUsd = 0;
            if (credit > 0) emit CollateralCredited(user, quoteToken, credit);
        }
        uint256 penalty = penaltyUsd / scale;
        _collect(user, _ceilDiv(uint256(costUsd), scale) + penalty);
        require(poolQuote >= penalty, "pool cannot pay penalty");
        poolQuote -= penalty;
        require(IERC20(quoteToken).transfer(msg.sender, penalty), "transfer failed");
        emit Liquidated(user, msg.sender, m.maintenanceUsd, m.collateralUsd, penalty);
    }

    // ---------------------------------------------------------------------------- views

    function getSeries(uint256 seriesId) external view returns (Series memory) {
        require(seriesById[seriesId].expiry != 0, "unknown series");
        return seriesById[seriesId];
    }

    /// @notice The user's series with a non-zero position, and the signed sizes (WAD).
    function getPositions(address user) external view returns (uint256[] memory seriesIds, int256[] memory sizes) {
        uint256[] storage ids = seriesOfUser[user];
        uint256 n = 0;
        for (uint256 i = 0; i < ids.length; i++) if (positionOf[user][ids[i]] != 0) n++;
        seriesIds = new uint256[](n);
        sizes = new int256[](n);
        uint256 j = 0;
        for (uint256 i = 0; i < ids.length; i++) {
            int256 size = positionOf[user][ids[i]];
            if (size == 0) continue;
            seriesIds[j] = ids[i];
            sizes[j++] = size;
        }
    }

    /// @notice Every listed collateral token with the user's balance in it.
    function getCollateral(address user) external view returns (address[] memory tokens, uint256[] memory amounts) {
        tokens = collateralList;
        amounts = new uint256[](tokens.length);
        for (uint256 i = 0; i < tokens.length; i++) amounts[i] = collateralOf[user][tokens[i]];
    }

    function accountMargin(address user) external view returns (Margin memory) {
        return _margin(user);
    }

    function collateralCount() external view returns (uint256) {
        return collateralList.length;
    }

    // ------------------------------------------------------------------------ internals

    function _margin(address user) internal view returns (Margin memory m) {
        for (uint256 i = 0; i < collateralList.length; i++) {
            address token = collateralList[i];
            uint256 amount = collateralOf[user][token];
            if (amount == 0) continue;
            CollateralConfig storage c = collateralConfig[token];
            uint256 value = PriceMath.valueWad(amount, c.decimals, PriceMath.priceWad(c.feed));
            m.collateralUsd += value;
            m.haircutCollateralUsd += value * (BPS - c.haircutBps) / BPS;
        }
        uint256[] storage ids = seriesOfUser[user];
        for (uint256 i = 0; i < ids.length; i++) {
            int256 size = positionOf[user][ids[i]];
            if (size >= 0) continue;
            Series storage s = seriesById[ids[i]];
            uint256 spot = _spot(s);
            uint256 units = uint256(-size);
            uint256 intrinsic = _intrinsic(s, spot);
            m.maintenanceUsd += units * _capped(s, spot * mmBps / BPS + intrinsic) / WAD;
            m.initialUsd += units * _capped(s, spot * imBps / BPS + intrinsic) / WAD;
        }
    }

    /// @dev Take `units` quote units from the user: quote collateral first, then other
    /// collateral at its oracle price; what cannot be covered is recorded as bad debt.
    function _collect(address user, uint256 units) internal {
        uint256 scale = 10 ** (18 - quoteDecimals);
        uint256 remainingUsd = units * scale;
        for (uint256 i = 0; i < collateralList.length && remainingUsd > 0; i++) {
            address token = collateralList[i];
            uint256 balance = collateralOf[user][token];
            if (balance == 0) continue;
            uint256 take;
            if (token == quoteToken) {
                take = _min(balance, _ceilDiv(remainingUsd, scale));
                poolQuote += take;
                remainingUsd = remainingUsd > take * scale ? remainingUsd - take * scale : 0;
            } else {
                CollateralConfig storage c = collateralConfig[token];
                uint256 price = PriceMath.priceWad(c.feed);
                take = _min(balance, PriceMath.unitsFor(remainingUsd, c.decimals, price));
                poolCollateral[token] += take;
                uint256 valueUsd = PriceMath.valueWad(take, c.decimals, price);
                remainingUsd = remainingUsd > valueUsd ? remainingUsd - valueUsd : 0;
            }
            collateralOf[user][token] = balance - take;
            emit CollateralSeized(user, token, take);
        }
        if (remainingUsd > 0) {
            uint256 shortfall = _ceilDiv(remainingUsd, scale);
            totalBadDebt += shortfall;
            emit BadDebt(user, shortfall);
        }
    }

    function _spot(Series storage s) internal view returns (uint256) {
        return s.settled ? s.settlementPriceWad : PriceMath.priceWad(underlyingFeed[s.underlying]);
    }

    function _intrinsic(Series storage s, uint256 spot) internal view returns (uint256) {
        if (s.isCall) return spot > s.strikeWad ? spot - s.strikeWad : 0;
        return s.strikeWad > spot ? s.strikeWad - spot : 0;
    }

    /// @dev A short put can never lose more than its strike.
    function _capped(Series storage s, uint256 perUnitUsd) internal view returns (uint256) {
        return (!s.isCall && perUnitUsd > s.strikeWad) ? s.strikeWad : perUnitUsd;
    }

    function _abs(int256 x) internal pure returns (uint256) {
        return x >= 0 ? uint256(x) : uint256(-x);
    }

    function _min(uint256 a, uint256 b) internal pure returns (uint256) {
        return a < b ? a : b;
    }

    function _ceilDiv(uint256 a, uint256 b) internal pure returns (uint256) {
        return a == 0 ? 0 : (a - 1) / b + 1;
    }
}
