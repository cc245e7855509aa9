// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IERC20} from "./lib/Interfaces.sol";
import {Token} from "./Token.sol";

/// @notice An ERC-4626-style vault: deposit the asset, receive transferable shares (a receipt
/// token, e.g. "rvETH"). The share price is totalAssets / totalSupply; shares carry the
/// asset's price risk, which is what makes them interesting as collateral elsewhere.
contract Vault is Token {
    address public immutable asset;

    event Deposit(address indexed sender, address indexed owner, uint256 assets, uint256 shares);
    event Withdraw(
        address indexed sender, address indexed receiver, address indexed owner, uint256 assets, uint256 shares
    );

    constructor(address asset_, string memory name_, string memory symbol_)
        Token(name_, symbol_, IERC20(asset_).decimals())
    {
        asset = asset_;
    }

    function totalAssets() public view returns (uint256) {
        return IERC20(asset).balanceOf(address(this));
    }

    function convertToShares(uint256 assets) public view returns (uint256) {
        uint256 supply = totalSupply;
        return supply == 0 ? assets : assets * supply / totalAssets();
    }

    function convertToAssets(uint256 shares) public view returns (uint256) {
        uint256 supply = totalSupply;
        return supply == 0 ? shares : shares * totalAssets() / supply;
    }

    function deposit(uint256 assets, address receiver) external returns (uint256 shares) {
        shares = convertToShares(assets);
        require(shares > 0, "zero shares");
        require(IERC20(asset).transferFrom(msg.sender, address(this), assets), "transfer failed");
        _mint(receiver, shares);
        emit Deposit(msg.sender, receiver, assets, shares);
    }

    function redeem(uint256 shares, address receiver, address owner_) external returns (uint256 assets) {
        if (msg.sender != owner_) {
            uint256 allowed = allowance[owner_][msg.sender];
            require(allowed >= shares, "allowance too low");
            if (allowed != type(uint256).max) allowance[owner_][msg.sender] = allowed - shares;
        }
        assets = convertToAssets(shares);
        require(assets > 0, "zero assets");
        require(balanceOf[owner_] >= shares, "balance too low");
        balanceOf[owner_] -= shares;
        totalSupply -= shares;
        emit Transfer(owner_, address(0), shares);
        require(IERC20(asset).transfer(receiver, assets), "transfer failed");
        emit Withdraw(msg.sender, receiver, owner_, assets, shares);
    }
}
