// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

/// @notice Single-owner access control plus a set of operators (keepers, relayers).
abstract contract Owned {
    address public owner;
    mapping(address => bool) public isOperator;

    event OwnershipTransferred(address indexed previousOwner, address indexed newOwner);
    event OperatorSet(address indexed operator, bool allowed);

    constructor() {
        owner = msg.sender;
        isOperator[msg.sender] = true;
        emit OwnershipTransferred(address(0), msg.sender);
    }

    modifier onlyOwner() {
        require(msg.sender == owner, "not owner");
        _;
    }

    modifier onlyOperator() {
        require(isOperator[msg.sender], "not operator");
        _;
    }

    function transferOwnership(address newOwner) external onlyOwner {
        require(newOwner != address(0), "zero owner");
        emit OwnershipTransferred(owner, newOwner);
        owner = newOwner;
    }

    function setOperator(address operator, bool allowed) external onlyOwner {
        isOperator[operator] = allowed;
        emit OperatorSet(operator, allowed);
    }
}
