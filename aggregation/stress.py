"""Stress library: named historical shocks and user shocks parsed from ``ETH=-0.30,...``.

Concept: a :class:`Shock` is a set of moves by asset id, as fractions (``-0.30`` = down
30 %). A move on a root asset (ETH, BTC, USDC) moves its price; a move on a derived asset
(wstETH, rvETH, USDC.e) moves its *peg* to the root, on top of the root's move. This is
the convention of :func:`aggregation.cascade.cascade`. :meth:`Shock.vector` turns a shock
into the cascade's array, one move per asset of a snapshot.

Names resolve case-insensitively, through :data:`DEFAULT_ALIASES` (``stETH`` is the
wstETH peg, since wstETH wraps stETH at a fixed share rate; ``WETH`` is ETH). An unknown
name raises :class:`~aggregation.exceptions.UnknownAssetError` with a did-you-mean; a
malformed entry, a non-numeric move or a move <= -1 raises
:class:`~aggregation.exceptions.InvalidShockError`. Both name the bad token.

Historical moves (:data:`HISTORICAL`) come from public reporting; each scenario keeps
its dates, its basis (daily close, intraday high-to-low, or over several days), its
sources and the spread between sources. They are *approximate*: venues and data vendors
disagree by several points on intraday lows. Peg moves are relative to the root.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from aggregation.exceptions import InvalidShockError, UnknownAssetError

__all__ = [
    "DEFAULT_ALIASES",
    "HISTORICAL",
    "Shock",
    "historical",
    "parse_shock",
    "resolve_asset",
]

Float = NDArray[np.float64]

DEFAULT_ALIASES: Mapping[str, str] = {
    "STETH": "WSTETH",
    "WETH": "ETH",
    "WBTC": "BTC",
    "USDC.E": "USDC",
}
"""Other names for the devnet's assets (chains/world.py), upper case."""


@dataclass(frozen=True, slots=True)
class Shock:
    """Named moves by asset id; ``start``/``end`` ISO dates, ``source`` and ``note`` for the
    record (basis and uncertainty of a historical scenario)."""

    name: str
    moves: tuple[tuple[str, float], ...]
    start: str = ""
    end: str = ""
    source: str = ""
    note: str = ""

    def __post_init__(self) -> None:
        for asset, move in self.moves:
            _check_move(f"{asset}={move}", move)

    def scaled(self, factor: float) -> Shock:
        """The same shock with every move multiplied by ``factor`` (severity sweeps)."""
        moves = tuple((a, m * factor) for a, m in self.moves)
        return replace(self, name=f"{self.name} x{factor:g}", moves=moves)

    def vector(
        self,
        asset_ids: Sequence[str],
        *,
        aliases: Mapping[str, str] = DEFAULT_ALIASES,
        missing: Literal["error", "ignore"] = "error",
    ) -> Float:
        """One move per asset of ``asset_ids`` (0 where the shock says nothing).

        ``missing="ignore"`` skips moves on assets the snapshot does not hold (a historical
        BTC move on an ETH-only book); by default they raise :class:`UnknownAssetError`.
        """
        out = np.zeros(len(asset_ids))
        for asset, move in self.moves:
            try:
                out[resolve_asset(asset, asset_ids, aliases=aliases)] = move
            except UnknownAssetError:
                if missing == "error":
                    raise
        return out


def resolve_asset(
    name: str, asset_ids: Sequence[str], *, aliases: Mapping[str, str] = DEFAULT_ALIASES
) -> int:
    """Index of ``name`` in ``asset_ids`` (case-insensitive, then through ``aliases``)."""
    upper = [a.upper() for a in asset_ids]
    key = name.strip().upper()
    for candidate in (key, aliases.get(key, "").upper()):
        if candidate in upper:
            return upper.index(candidate)
    known = sorted(set(upper) | {k for k, v in aliases.items() if v.upper() in upper})
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]}? " if close else ""
    raise UnknownAssetError(f"unknown asset {name.strip()!r}: {hint}known: {', '.join(known)}")


def _check_move(token: str, move: float) -> None:
    if not math.isfinite(move):
        raise InvalidShockError(f"{token!r}: the move must be a finite number")
    if move <= -1.0:
        raise InvalidShockError(
            f"{token!r}: a move must be > -1 (-1 takes the price to zero); "
            "moves are fractions, -0.30 is down 30 %"
        )


def parse_shock(
    text: str,
    asset_ids: Sequence[str],
    *,
    aliases: Mapping[str, str] = DEFAULT_ALIASES,
    name: str = "custom",
) -> Shock:
    """Parse ``"ETH=-0.30,stETH=-0.08"`` (fractions, or percents with ``%``) into a shock.

    Assets resolve against ``asset_ids`` (the names are stored as they appear there).
    Empty entries (a trailing comma) are skipped. An asset given twice is an error.
    """
    moves: dict[str, float] = {}
    for raw in text.split(","):
        token = raw.strip()
        if not token:
            continue
        asset, sep, value = token.partition("=")
        if not sep or not asset.strip() or not value.strip():
            raise InvalidShockError(f"{token!r}: expected ASSET=MOVE, e.g. ETH=-0.30")
        index = resolve_asset(asset, asset_ids, aliases=aliases)
        number = value.strip()
        scale = 0.01 if number.endswith("%") else 1.0
        try:
            move = float(number.removesuffix("%")) * scale
        except ValueError:
            raise InvalidShockError(
                f"{token!r}: {number!r} is not a number; write the move as a fraction "
                "(-0.30) or a percent (-30%)"
            ) from None
        _check_move(token, move)
        asset_id = asset_ids[index]
        if asset_id in moves:
            raise InvalidShockError(f"{token!r}: {asset_id} is shocked twice")
        moves[asset_id] = move
    if not moves:
        raise InvalidShockError(f"{text!r}: no moves; expected e.g. ETH=-0.30,stETH=-0.08")
    return Shock(name, tuple(moves.items()))


def _scenario(
    name: str, dates: tuple[str, str], moves: dict[str, float], source: str, note: str
) -> Shock:
    return Shock(name, tuple(moves.items()), dates[0], dates[1], source, note)


# Sources (stored copies of public reporting; checked for this module, not live):
# 2020-03-12  newsbtc.com/news/ethereum/ethereum-fell-43-percent-yesterday-worst-day-ever/
#             medium.com/@robertgreenfieldiv (MakerDAO Black Thursday: 5.67M DAI loss)
# 2021-05-19  straitstimes.com/opinion/making-sense-of-the-bitcoin-crash-0 (2021-05-26);
#             ikablog.com/8199.html (BTC low 30,201.90, -31.22 % from the 24h high)
# 2022-05     cryptomonitor.in/index.php/2022/08/30/the-luna-ust-disaster-explains-when-terra-broke-crypto/  # noqa: E501
#             cryptotimes.io/2022/06/30/nansen-places-terra-at-fault-for-steths-de-peg
#             coindesk.com/markets/2022/07/13/wobble-in-steth-price-shows-fear-celsius-might-dump-435m-stake/  # noqa: E501
# 2022-11     coindesk.com/markets/2022/11/09/market-wrap-bitcoin-other-cryptos-continue-to-plummet/
#             socialbites.ca/business/116157.html (BTC -11 % on 11-08, -13 % on 11-09)
# 2024-08-05  mackhal.com/8593.html (Parsec, Spot On Chain); cointeeth.com (BTC -18 %, ETH -26 %)
#             medium.com/rockaway-blockchain (BTC ~-20 %, ETH ~-30 % over the week)
# 2025-10-10  yellow.com/research/trump-100-china-tariff-how-one-announcement-liquidated-dollar19-billion-in-crypto  # noqa: E501
#             ainvest.com (BTC -10..-12 % to 104,782, ETH -15 %); globalstocknews.org (ETH -20 %)
HISTORICAL: tuple[Shock, ...] = (
    _scenario(
        "black-thursday-2020",
        ("2020-03-12", "2020-03-12"),
        {"ETH": -0.43, "BTC": -0.39},
        "newsbtc.com 'Ethereum fell 43% yesterday' (2020-03-13, citing Coin Metrics / "
        "N. Carter); MakerDAO post-mortems (USD 5.67M protocol loss, zero-bid auctions)",
        "daily close; ETH -43 % is its worst day; BTC closed -37..-40 % by source, and fell "
        "~50 % by the 2020-03-13 low",
    ),
    _scenario(
        "crash-2021-05-19",
        ("2021-05-19", "2021-05-19"),
        {"ETH": -0.40, "BTC": -0.30},
        "Straits Times 'Making sense of the bitcoin crash' (2021-05-26): BTC ~-27 % in 24h; "
        "market reports: BTC low 30.2-31.1k, ~-31 % from the day's high; ETH below 2,000",
        "intraday high-to-low; ETH -40..-46 %, BTC -27..-31 % by source",
    ),
    _scenario(
        "ust-luna-2022",
        ("2022-05-07", "2022-05-14"),
        {"ETH": -0.30, "BTC": -0.25, "STETH": -0.05},
        "cryptomonitor.in (2022-08-30): ETH 2,900 -> 1,700, BTC 40k -> 25.4k (2022-05-12 "
        "low); Nansen via cryptotimes.io (2022-06-30): the stETH discount opened on 2022-05-14",
        "over the week; peak-to-low ETH ~-41 %, BTC ~-36 %; -30 % / -25 % are week-scale "
        "moves, uncertain by +-10 points (closes not verified here). stETH traded ~0.95-0.97 "
        "ETH in May; the deepest discount, ~6-8 %, came in June 2022 (CoinDesk, 2022-07-13)",
    ),
    _scenario(
        "ftx-2022",
        ("2022-11-06", "2022-11-09"),
        {"ETH": -0.25, "BTC": -0.22},
        "CoinDesk Market Wrap (2022-11-09): BTC ~16.3k, ETH ~1,150; socialbites.ca: BTC "
        "-11 % on 11-08 and -13 % on 11-09",
        "over four days; ETH -25..-32 % and BTC -22..-25 % depending on the start and low",
    ),
    _scenario(
        "yen-carry-2024",
        ("2024-08-05", "2024-08-05"),
        {"ETH": -0.20, "BTC": -0.15},
        "Parsec/Spot On Chain via public reports: ETH ~-20 % to 2,111, USD 320M DeFi "
        "liquidations (wstETH 78M); other reports ETH -22..-26 %, BTC -15..-18 %",
        "intraday; ETH fell ~38 % over the 15 days before the low",
    ),
    _scenario(
        "cascade-2025-10-10",
        ("2025-10-10", "2025-10-11"),
        {"ETH": -0.18, "BTC": -0.13},
        "Coinglass via press (2025-10-11): ~USD 19B of liquidations, 1.6M accounts; BTC "
        "~122k -> ~104.8k, ETH ~4,370 -> 3,440-3,570",
        "intraday high-to-low; ETH -16..-21 %, BTC -12..-14 % by venue and source",
    ),
)
"""Historical stress scenarios, with sources and uncertainty in each note."""


def historical(name: str) -> Shock:
    """The historical scenario called ``name`` (case-insensitive), with a did-you-mean."""
    names = [s.name for s in HISTORICAL]
    key = name.strip().lower()
    if key in names:
        return HISTORICAL[names.index(key)]
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.4)
    hint = f"did you mean {close[0]}? " if close else ""
    raise InvalidShockError(f"unknown scenario {name!r}: {hint}known: {', '.join(names)}")
