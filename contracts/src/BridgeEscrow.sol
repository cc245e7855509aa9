// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Owned} from "./lib/Owned.sol";
import {IERC20} from "./lib/Interfaces.sol";

/// @notice Lock side of a lock-and-mint bridge. Tokens locked here back the representation
/// that the bridge's relayer mints on the destination chain (a Token whose operator it is);
/// the relayer releases them when that representation is burned.
contract BridgeEscrow is Owned {
    uint256 public nonce;
    mapping(address => uint256) public lockedOf; // token => units locked

    event Locked(
        uint256 indexed nonce,
        address indexed token,
        address indexed sender,
        uint256 destinationChainId,
        address recipient,
        uint256 amount
    );
    event Released(address indexed token, address indexed recipient, uint256 amount, bytes32 sourceTxHash);

    function lock(address token, uint256 amount, uint256 destinationChainId, address recipient) external {
        require(amount > 0, "zero amount");
        require(IERC20(token).transferFrom(msg.sender, address(this), amount), "transfer failed");
        lockedOf[token] += amount;
        emit Locked(++nonce, token, msg.sender, destinationChainId, recipient, amount);
    }

    function release(address token, address recipient, uint256 amount, bytes32 sourceTxHash) external onlyOperator {
        require(amount <= lockedOf[token], "more than locked");
        lockedOf[token] -= amount;
        require(IERC20(token).transfer(recipient, amount), "transfer failed");
        emit Released(token, recipient, amount, sourceTxHash);
    }
}
