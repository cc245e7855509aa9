// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Owned} from "./lib/Owned.sol";

/// @notice Implied-volatility oracle: per underlying (e.g. "ETH") and expiry (unix seconds), an
/// at-the-money annualised vol and the raw SVI smile of total variance
/// w(k) = a + b (rho (k - m) + sqrt((k - m)^2 + sigma^2)), k = ln(K / F).
/// Every value is fixed-point with 18 decimals (WAD).
contract VolOracle is Owned {
    struct Surface {
        uint256 atmVolWad;
        int256 sviA;
        int256 sviB;
        int256 sviRho;
        int256 sviM;
        int256 sviSigma;
        uint64 updatedAt;
    }

    mapping(bytes32 => mapping(uint64 => Surface)) internal surfaces;
    mapping(bytes32 => uint64[]) internal expiriesOf;

    event VolSurfaceUpdated(
        bytes32 indexed underlying,
        uint64 indexed expiry,
        uint256 atmVolWad,
        int256 sviA,
        int256 sviB,
        int256 sviRho,
        int256 sviM,
        int256 sviSigma,
        uint64 updatedAt
    );

    function setSurface(bytes32 underlying, uint64 expiry, uint256 atmVolWad, int256[5] calldata svi)
        external
        onlyOperator
    {
        require(atmVolWad > 0 && atmVolWad < 10e18, "atm vol out of range");
        require(svi[1] >= 0, "svi b must be >= 0");
        require(svi[2] > -1e18 && svi[2] < 1e18, "svi rho must be in (-1, 1)");
        require(svi[4] > 0, "svi sigma must be > 0");
        Surface storage s = surfaces[underlying][expiry];
        if (s.updatedAt == 0) expiriesOf[underlying].push(expiry);
        surfaces[underlying][expiry] =
            Surface(atmVolWad, svi[0], svi[1], svi[2], svi[3], svi[4], uint64(block.timestamp));
        emit VolSurfaceUpdated(
            underlying, expiry, atmVolWad, svi[0], svi[1], svi[2], svi[3], svi[4], uint64(block.timestamp)
        );
    }

    function getSurface(bytes32 underlying, uint64 expiry) external view returns (Surface memory) {
        Surface memory s = surfaces[underlying][expiry];
        require(s.updatedAt != 0, "no surface");
        return s;
    }

    function expiries(bytes32 underlying) external view returns (uint64[] memory) {
        return expiriesOf[underlying];
    }
}
