// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Owned} from "./lib/Owned.sol";
import {IERC20} from "./lib/Interfaces.sol";

/// @notice Underwriters deposit a stablecoin for shares; an operator pays claims from the pool.
///
/// Shares are claims on totalAssets(); a paid claim lowers the value of every share, including
/// shares in cooldown (they stay slashable until withdrawn, as in Aave Umbrella). Each claim id
/// is paid at most once: a second payClaim with the same id reverts, so a payout cannot happen
/// twice whatever the operator's software does.
contract InsuranceFund is Owned {
    address public immutable asset;
    uint64 public immutable cooldownSeconds;
    uint64 public immutable withdrawWindowSeconds;
    uint256 public totalShares;
    mapping(address => uint256) public sharesOf;
    mapping(address => uint256) public pendingShares;
    mapping(address => uint64) public unlockAt;
    mapping(bytes32 => bool) public isClaimPaid;
    uint256 public totalPaid;

    event Deposited(address indexed underwriter, uint256 amount, uint256 shares);
    event WithdrawalRequested(address indexed underwriter, uint256 shares, uint64 unlockAt);
    event Withdrawn(address indexed underwriter, uint256 shares, uint256 amount);
    event ClaimPaid(bytes32 indexed claimId, address indexed recipient, uint256 amount, address indexed operator);

    constructor(address asset_, uint64 cooldownSeconds_, uint64 withdrawWindowSeconds_) {
        asset = asset_;
        cooldownSeconds = cooldownSeconds_;
        withdrawWindowSeconds = withdrawWindowSeconds_;
    }

    function totalAssets() public view returns (uint256) {
        return IERC20(asset).balanceOf(address(this));
    }

    function deposit(uint256 amount) external returns (uint256 shares) {
        require(amount > 0, "zero amount");
        uint256 assets = totalAssets();
        shares = (totalShares == 0 || assets == 0) ? amount : amount * totalShares / assets;
        require(shares > 0, "deposit too small");
        require(IERC20(asset).transferFrom(msg.sender, address(this), amount), "transfer failed");
        totalShares += shares;
        sharesOf[msg.sender] += shares;
        emit Deposited(msg.sender, amount, shares);
    }

    function requestWithdrawal(uint256 shares) external {
        require(shares > 0 && shares <= sharesOf[msg.sender], "not enough shares");
        pendingShares[msg.sender] = shares;
        uint64 unlock = uint64(block.timestamp) + cooldownSeconds;
        unlockAt[msg.sender] = unlock;
        emit WithdrawalRequested(msg.sender, shares, unlock);
    }

    function withdraw() external returns (uint256 amount) {
        uint256 shares = pendingShares[msg.sender];
        uint64 unlock = unlockAt[msg.sender];
        require(shares > 0, "no withdrawal requested");
        require(block.timestamp >= unlock, "cooldown not over");
        require(block.timestamp <= unlock + withdrawWindowSeconds, "withdraw window missed; request again");
        require(shares <= sharesOf[msg.sender], "not enough shares");
        amount = shares * totalAssets() / totalShares;
        pendingShares[msg.sender] = 0;
        sharesOf[msg.sender] -= shares;
        totalShares -= shares;
        require(IERC20(asset).transfer(msg.sender, amount), "transfer failed");
        emit Withdrawn(msg.sender, shares, amount);
    }

    function payClaim(bytes32 claimId, address recipient, uint256 amount) external onlyOperator {
        require(!isClaimPaid[claimId], "claim already paid");
        require(amount > 0 && amount <= totalAssets(), "amount exceeds fund");
        isClaimPaid[claimId] = true;
        totalPaid += amount;
        require(IERC20(asset).transfer(recipient, amount), "transfer failed");
        emit ClaimPaid(claimId, recipient, amount, msg.sender);
    }
}
