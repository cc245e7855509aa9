// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Owned} from "./lib/Owned.sol";
import {IERC20, PriceMath} from "./lib/Interfaces.sol";

/// @notice Linear perpetual futures (e.g. "ETH-PERP") against the market's liquidity pool,
/// cross-margined in one quote stablecoin.
///
/// Sizes are underlying units with 18 decimals (positive long, negative short); prices are USD
/// with 18 decimals from the market's oracle; margin is in quote units and may go negative
/// only through a loss (that is bad debt once liquidated). Funding accrues per unit of size
/// through a cumulative index (USD WAD per unit): a long pays (index - entryIndex) x size.
/// Equity = margin + unrealised PnL - accrued funding; maintenance = sum |size| x price x mmBps.
/// liquidate() needs equity < maintenance: every position is closed at the oracle price, a fee
/// (liquidationFeeBps of notional, at most the remaining equity) goes to the liquidator, and a
/// negative remainder is bad debt, absorbed by the pool.
contract PerpsMarket is Owned {
    uint256 internal constant WAD = 1e18;
    uint256 internal constant BPS = 10_000;

    struct Market {
        address feed;
        uint16 mmBps;
        uint16 imBps;
        uint16 liquidationFeeBps;
        bool active;
        int256 fundingIndexWad;
    }

    struct Position {
        int256 sizeWad;
        int256 openNotionalWad; // USD paid for the position (signed like size)
        int256 entryFundingIndexWad;
    }

    address public immutable quoteToken;
    uint8 internal immutable quoteDecimals;
    mapping(bytes32 => Market) public markets;
    bytes32[] public marketList;
    mapping(address => int256) public marginOf; // quote units
    mapping(address => mapping(bytes32 => Position)) public positionOf;
    int256 public poolQuote;
    uint256 public totalBadDebt;

    event MarketListed(bytes32 indexed market, address feed, uint16 mmBps, uint16 imBps, uint16 liquidationFeeBps);
    event PoolFunded(address indexed provider, uint256 amount);
    event MarginDeposited(address indexed user, uint256 amount);
    event MarginWithdrawn(address indexed user, uint256 amount);
    event PositionModified(
        address indexed user,
        bytes32 indexed market,
        int256 sizeDelta,
        uint256 priceWad,
        int256 newSize,
        int256 realizedPnl,
        int256 fundingPaid
    );
    event FundingUpdated(bytes32 indexed market, int256 fundingRateWad, int256 fundingIndexWad, uint256 priceWad);
    event PositionLiquidated(
        address indexed user, bytes32 indexed market, address indexed liquidator, int256 size, uint256 priceWad
    );
    event Liquidated(address indexed user, address indexed liquidator, int256 equity, uint256 fee, uint256 badDebt);
    /// @notice The account's margin (quote units) after every change: deposits, withdrawals,
    /// realized PnL and funding, liquidation.
    event MarginBalance(address indexed user, int256 margin);
    /// @notice A position's state after `modifyPosition` (a liquidation deletes it).
    event PositionState(
        address indexed user, bytes32 indexed market, int256 sizeWad, int256 openNotionalWad, int256 entryFundingIndexWad
    );

    constructor(address quoteToken_) {
        quoteToken = quoteToken_;
        quoteDecimals = IERC20(quoteToken_).decimals();
    }

    function listMarket(bytes32 market, address feed, uint16 mmBps, uint16 imBps, uint16 liquidationFeeBps)
        external
        onlyOwner
    {
        require(!markets[market].active, "market listed");
        require(mmBps > 0 && imBps >= mmBps && liquidationFeeBps <= mmBps, "bad margin rates");
        markets[market] = Market(feed, mmBps, imBps, liquidationFeeBps, true, 0);
        marketList.push(market);
        emit MarketListed(market, feed, mmBps, imBps, liquidationFeeBps);
    }

    function fundPool(uint256 amount) external {
        require(IERC20(quoteToken).transferFrom(msg.sender, address(this), amount), "transfer failed");
        poolQuote += int256(amount);
        emit PoolFunded(msg.sender, amount);
    }

    /// @notice Keeper: accrue funding at `fundingRateWad` (fraction of price per position per
    /// funding period, which here is one call).
    function updateFunding(bytes32 market, int256 fundingRateWad) external onlyOperator {
        Market storage mk = _market(market);
        uint256 price = PriceMath.priceWad(mk.feed);
        mk.fundingIndexWad += fundingRateWad * int256(price) / int256(WAD);
        emit FundingUpdated(market, fundingRateWad, mk.fundingIndexWad, price);
    }

    function depositMargin(uint256 amount) external {
        require(amount > 0, "zero amount");
        require(IERC20(quoteToken).transferFrom(msg.sender, address(this), amount), "transfer failed");
        marginOf[msg.sender] += int256(amount);
        emit MarginDeposited(msg.sender, amount);
        emit MarginBalance(msg.sender, marginOf[msg.sender]);
    }

    function withdrawMargin(uint256 amount) external {
        require(amount > 0 && int256(amount) <= marginOf[msg.sender], "not enough margin");
        marginOf[msg.sender] -= int256(amount);
        emit MarginBalance(msg.sender, marginOf[msg.sender]);
        (int256 equity,, uint256 imUsd) = _account(msg.sender);
        require(equity >= int256(imUsd), "initial margin not met");
        require(IERC20(quoteToken).transfer(msg.sender, amount), "transfer failed");
        emit MarginWithdrawn(msg.sender, amount);
    }

    /// @notice Trade `sizeDelta` at the oracle price; funding is settled into margin first, PnL
    /// is realised in proportion to the size reduced.
    function modifyPosition(bytes32 market, int256 sizeDelta) external {
        Market storage mk = _market(market);
        require(sizeDelta != 0, "zero size");
        uint256 price = PriceMath.priceWad(mk.feed);
        Position storage p = positionOf[msg.sender][market];

        int256 funding = _funding(p, mk);
        p.entryFundingIndexWad = mk.fundingIndexWad;
        int256 realized = 0;
        int256 newSize = p.sizeWad + sizeDelta;
        bool increases = p.sizeWad == 0 || (p.sizeWad > 0) == (sizeDelta > 0);
        bool flips = !increases && newSize != 0 && (newSize > 0) != (p.sizeWad > 0);
        if (increases) {
            p.openNotionalWad += sizeDelta * int256(price) / int256(WAD);
        } else {
            int256 closed = _absI(sizeDelta) < _absI(p.sizeWad) ? -sizeDelta : p.sizeWad;
            int256 closedCost = p.openNotionalWad * closed / p.sizeWad;
            realized = closed * int256(price) / int256(WAD) - closedCost;
            p.openNotionalWad -= closedCost;
            int256 opened = sizeDelta + closed; // non-zero when the trade flips the side
            p.openNotionalWad += opened * int256(price) / int256(WAD);
        }
        p.sizeWad = newSize;
        int256 cashUnits = _toQuote(realized - funding);
        marginOf[msg.sender] += cashUnits;
        poolQuote -= cashUnits;

        if (increases || flips) {
            (int256 equity,, uint256 imUsd) = _account(msg.sender);
            require(equity >= int256(imUsd), "initial margin not met");
        }
        emit PositionModified(msg.sender, market, sizeDelta, price, newSize, _toQuote(realized), _toQuote(funding));
        emit PositionState(msg.sender, market, p.sizeWad, p.openNotionalWad, p.entryFundingIndexWad);
        emit MarginBalance(msg.sender, marginOf[msg.sender]);
    }

    function liquidate(address user) external {
        (int256 equity, uint256 mmUsd,) = _account(user);
        require(equity < int256(mmUsd), "account is not liquidatable");
        uint256 feeUsd = 0;
        int256 settledUsd = 0;
        for (uint256 i = 0; i < marketList.length; i++) {
            bytes32 id = marketList[i];
            Position storage p = positionOf[user][id];
            if (p.sizeWad == 0) continue;
            Market storage mk = markets[id];
            uint256 price = PriceMath.priceWad(mk.feed);
            int256 value = p.sizeWad * int256(price) / int256(WAD);
            settledUsd += value - p.openNotionalWad - _funding(p, mk);
            feeUsd += _absI(value) * mk.liquidationFeeBps / BPS;
            emit PositionLiquidated(user, id, msg.sender, p.sizeWad, price);
            delete positionOf[user][id];
        }
        int256 settled = _toQuote(settledUsd);
        marginOf[user] += settled;
        poolQuote -= settled;

        int256 margin = marginOf[user];
        uint256 fee = 0;
        uint256 badDebt = 0;
        if (margin > 0) {
            fee = _min(uint256(margin), feeUsd / 10 ** (18 - quoteDecimals));
            marginOf[user] = margin - int256(fee);
            require(IERC20(quoteToken).transfer(msg.sender, fee), "transfer failed");
        } else if (margin < 0) {
            badDebt = uint256(-margin);
            marginOf[user] = 0;
            poolQuote -= int256(badDebt);
            totalBadDebt += badDebt;
        }
        emit MarginBalance(user, marginOf[user]);
        emit Liquidated(user, msg.sender, equity, fee, badDebt);
    }

    // ---------------------------------------------------------------------------- views

    /// @notice The user's margin (quote units), open positions and risk (USD WAD).
    function getAccount(address user)
        external
        view
        returns (
            int256 margin,
            bytes32[] memory marketIds,
            int256[] memory sizes,
            int256[] memory openNotionals,
            int256 equityUsd,
            uint256 maintenanceUsd
        )
    {
        margin = marginOf[user];
        uint256 n = marketList.length;
        marketIds = marketList;
        sizes = new int256[](n);
        openNotionals = new int256[](n);
        for (uint256 i = 0; i < n; i++) {
            Position storage p = positionOf[user][marketList[i]];
            sizes[i] = p.sizeWad;
            openNotionals[i] = p.openNotionalWad;
        }
        (equityUsd, maintenanceUsd,) = _account(user);
    }

    function marketCount() external view returns (uint256) {
        return marketList.length;
    }

    // ------------------------------------------------------------------------ internals

    /// @dev Equity (USD WAD), maintenance and initial margin (USD WAD) of the whole account.
    function _account(address user) internal view returns (int256 equity, uint256 mmUsd, uint256 imUsd) {
        equity = marginOf[user] * int256(10 ** (18 - quoteDecimals));
        for (uint256 i = 0; i < marketList.length; i++) {
            Position storage p = positionOf[user][marketList[i]];
            if (p.sizeWad == 0) continue;
            Market storage mk = markets[marketList[i]];
            uint256 price = PriceMath.priceWad(mk.feed);
            int256 value = p.sizeWad * int256(price) / int256(WAD);
            equity += value - p.openNotionalWad - _funding(p, mk);
            uint256 notional = _absI(value);
            mmUsd += notional * mk.mmBps / BPS;
            imUsd += notional * mk.imBps / BPS;
        }
    }

    function _funding(Position storage p, Market storage mk) internal view returns (int256) {
        return p.sizeWad * (mk.fundingIndexWad - p.entryFundingIndexWad) / int256(WAD);
    }

    function _market(bytes32 market) internal view returns (Market storage mk) {
        mk = markets[market];
        require(mk.active, "unknown market");
    }

    /// @dev USD WAD to quote units, rounding toward negative infinity (the pool never overpays).
    function _toQuote(int256 usdWad) internal view returns (int256) {
        int256 scale = int256(10 ** (18 - quoteDecimals));
        int256 q = usdWad / scale;
        if (usdWad < 0 && q * scale != usdWad) q -= 1;
        return q;
    }

    function _absI(int256 x) internal pure returns (uint256) {
        return x >= 0 ? uint256(x) : uint256(-x);
    }

    function _min(uint256 a, uint256 b) internal pure returns (uint256) {
        return a < b ? a : b;
    }
}
