// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

interface IERC20 {
    function decimals() external view returns (uint8);
    function balanceOf(address account) external view returns (uint256);
    function transfer(address to, uint256 amount) external returns (bool);
    function transferFrom(address from, address to, uint256 amount) external returns (bool);
}

/// @notice Chainlink's AggregatorV3Interface, as consumed by every protocol here.
interface AggregatorV3Interface {
    function decimals() external view returns (uint8);
    function description() external view returns (string memory);
    function version() external view returns (uint256);
    function getRoundData(uint80 roundId)
        external
        view
        returns (uint80 roundId_, int256 answer, uint256 startedAt, uint256 updatedAt, uint80 answeredInRound);
    function latestRoundData()
        external
        view
        returns (uint80 roundId, int256 answer, uint256 startedAt, uint256 updatedAt, uint80 answeredInRound);
}

/// @notice Shared fixed-point helpers. Prices inside the protocols are USD with 18 decimals (WAD).
library PriceMath {
    uint256 internal constant WAD = 1e18;
    uint256 internal constant BPS = 10_000;

    /// @dev Latest feed answer scaled to 18 decimals; reverts on a non-positive answer.
    function priceWad(address feed) internal view returns (uint256) {
        AggregatorV3Interface agg = AggregatorV3Interface(feed);
        (, int256 answer,,,) = agg.latestRoundData();
        require(answer > 0, "bad oracle price");
        return uint256(answer) * 10 ** (18 - agg.decimals());
    }

    /// @dev Value in USD WAD of `amount` token units with `decimals`, at `price` (USD WAD).
    function valueWad(uint256 amount, uint8 decimals, uint256 price) internal pure returns (uint256) {
        return amount * price / 10 ** decimals;
    }

    /// @dev Token units worth `usdWad` at `price`, rounded up (the protocol never under-collects).
    function unitsFor(uint256 usdWad, uint8 decimals, uint256 price) internal pure returns (uint256) {
        return (usdWad * 10 ** decimals + price - 1) / price;
    }
}
