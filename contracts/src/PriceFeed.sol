// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Owned} from "./lib/Owned.sol";

/// @notice A price feed compatible with Chainlink's AggregatorV3Interface and the legacy
/// AggregatorInterface events. Operators (the devnet's oracle keeper) post each round.
contract PriceFeed is Owned {
    struct Round {
        int256 answer;
        uint64 startedAt;
        uint64 updatedAt;
    }

    uint8 public immutable decimals;
    string public description;
    uint256 public constant version = 4;
    uint80 public latestRound;
    mapping(uint80 => Round) internal rounds;

    event AnswerUpdated(int256 indexed current, uint256 indexed roundId, uint256 updatedAt);
    event NewRound(uint256 indexed roundId, address indexed startedBy, uint256 startedAt);

    constructor(uint8 decimals_, string memory description_, int256 initialAnswer) {
        decimals = decimals_;
        description = description_;
        _post(initialAnswer);
    }

    function updateAnswer(int256 answer) external onlyOperator {
        _post(answer);
    }

    function latestRoundData()
        external
        view
        returns (uint80 roundId, int256 answer, uint256 startedAt, uint256 updatedAt, uint80 answeredInRound)
    {
        return _round(latestRound);
    }

    function getRoundData(uint80 roundId)
        external
        view
        returns (uint80, int256, uint256, uint256, uint80)
    {
        require(roundId != 0 && roundId <= latestRound, "no data present");
        return _round(roundId);
    }

    function latestAnswer() external view returns (int256) {
        return rounds[latestRound].answer;
    }

    function latestTimestamp() external view returns (uint256) {
        return rounds[latestRound].updatedAt;
    }

    function _round(uint80 roundId) internal view returns (uint80, int256, uint256, uint256, uint80) {
        Round storage r = rounds[roundId];
        return (roundId, r.answer, r.startedAt, r.updatedAt, roundId);
    }

    function _post(int256 answer) internal {
        require(answer > 0, "answer must be positive");
        uint80 roundId = latestRound + 1;
        latestRound = roundId;
        rounds[roundId] = Round(answer, uint64(block.timestamp), uint64(block.timestamp));
        emit NewRound(roundId, msg.sender, block.timestamp);
        emit AnswerUpdated(answer, roundId, block.timestamp);
    }
}
