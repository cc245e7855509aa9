"""Scenario grids for portfolio margin: spot moves x volatility shocks, with weights.

Concept: a portfolio is revalued under every scenario of a grid; the worst *weighted*
P&L sets the requirement (see ``margin.py``). A scenario ``s`` moves the spot of the
underlying being margined to ``spot * spot_multiplier[u, s]`` and moves each option's
volatility up, not at all, or down (``vol_direction[s]`` = +1, 0, -1) by a
:class:`VolShock` model that may depend on the option's own time to expiry. The P&L of
scenario ``s`` is multiplied by ``weight[s]`` (1 for regular scenarios, < 1 for dampened
tail moves), and ``short_otm_only[s]`` marks extended moves that, as on Deribit, only
charge short out-of-the-money options.

Grids (REFERENCES.md section 3; every parameter is a field and can be overridden):

- :func:`derive_pmrm_grid` (Derive / ex-Lyra PMRM, 31 scenarios): spot x{1.18, 1.135,
  1.09, 1.045, 1, 0.955, 0.91, 0.865, 0.82} x vol up/none/down, the +-18 % ends vol-up
  only (23), plus 8 tail moves -66 %, -33 %, +50 %, +100 %, +200 %, +300 %, +400 %,
  +500 % with vol up, weighted 0.77 x 0.18 / |move|. Vol shock: up = max(vol x (1 + 0.5 x
  (30d / max(T, 1d))^p), 0.4), down = vol x max(0, 1 - 0.3 x (same)); p = 0.3 when
  T <= 30 days else 0.13.
- :func:`deribit_pm_grid` (Deribit PM, 35 scenarios): +-16 % in 9 steps (incl. 0) x vol
  up/unchanged/down (27), plus the extended moves above with vol up, weighted 0.16 / |move|
  and charged to short OTM options only. Vol shock: the same term-power model with the
  parameters reported for Deribit BTC (range up 0.5, down 0.25, up-shocked vol floored at
  0.5). The dampener is our assumption (the range-over-move rule Paradex publishes); the
  vol parameters come from a third-party description of Deribit's settings.
- :func:`span16_grid` (CME SPAN, 16 scenarios): price 0, +-1/3, +-2/3, +-3/3 of the price
  scan range x vol up/down (14), plus +-2 x the scan range with vol unchanged, counted at
  35 %. Scan ranges are per underlying (default 15 %); the vol scan is absolute vol points.

Invariants: every scenario array has one entry per scenario; weights lie in (0, 1];
multipliers are > 0; shocked vols are >= 0 and up >= unshocked >= down. Units: moves and
weights are fractions, vols are annualised (``vol_annual``), times in years.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

from aggregation.black76 import DAYS_PER_YEAR

__all__ = [
    "TAIL_MOVES",
    "AbsoluteVolShock",
    "ScenarioGrid",
    "TermPowerVolShock",
    "VolShock",
    "deribit_pm_grid",
    "derive_pmrm_grid",
    "span16_grid",
]

TAIL_MOVES = (-0.66, -0.33, 0.50, 1.00, 2.00, 3.00, 4.00, 5.00)
"""Extended moves shared by the Derive and Deribit grids (REFERENCES.md section 3)."""

Float = NDArray[np.float64]


class VolShock(Protocol):
    """Maps (vol, time to expiry) to the up- and down-shocked vols, elementwise."""

    def shocked(self, vol_annual: ArrayLike, t_years: ArrayLike) -> tuple[Float, Float]:
        """Return ``(vol_up, vol_down)``, both broadcast to the inputs' shape."""
        ...


@dataclass(frozen=True, slots=True)
class TermPowerVolShock:
    """Relative shock that shrinks with maturity: ``x = (pivot / max(T, floor))^p``.

    ``up = max(vol (1 + range_up x), min_up_vol)``, ``down = vol max(0, 1 - range_down x)``,
    ``p = short_power`` when ``T <= pivot`` else ``long_power`` (Deribit/Derive style).
    """

    range_up: float = 0.5
    range_down: float = 0.3
    short_power: float = 0.3
    long_power: float = 0.13
    pivot_days: float = 30.0
    floor_days: float = 1.0
    min_up_vol_annual: float = 0.4

    def shocked(self, vol_annual: ArrayLike, t_years: ArrayLike) -> tuple[Float, Float]:
        vol = np.asarray(vol_annual, dtype=np.float64)
        t_days = np.asarray(t_years, dtype=np.float64) * DAYS_PER_YEAR
        power = np.where(t_days <= self.pivot_days, self.short_power, self.long_power)
        x = (self.pivot_days / np.maximum(t_days, self.floor_days)) ** power
        up = np.maximum(vol * (1.0 + self.range_up * x), self.min_up_vol_annual)
        down = vol * np.maximum(0.0, 1.0 - self.range_down * x)
        return np.broadcast_arrays(up, down)  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class AbsoluteVolShock:
    """SPAN-style volatility scan: ``vol +- points`` (absolute), floored at 0."""

    up_points: float = 0.10
    down_points: float = 0.10

    def shocked(self, vol_annual: ArrayLike, t_years: ArrayLike) -> tuple[Float, Float]:
        vol, _ = np.broadcast_arrays(
            np.asarray(vol_annual, dtype=np.float64), np.asarray(t_years, dtype=np.float64)
        )
        return vol + self.up_points, np.maximum(vol - self.down_points, 0.0)


@dataclass(frozen=True, slots=True)
class ScenarioGrid:
    """An immutable scenario grid (tuples, so grids are hashable and safely shared).

    ``moves[s]`` is the spot move of scenario ``s`` as a fraction; it is multiplied by the
    underlying's ``move_scale`` (1 for absolute grids, the price scan range for SPAN) so
    that ``spot_multipliers[u, s] = 1 + moves[s] * scale[u]``.
    """

    name: str
    source: str
    moves: tuple[float, ...]
    vol_direction: tuple[int, ...]
    weights: tuple[float, ...]
    short_otm_only: tuple[bool, ...]
    vol_shock: VolShock
    default_move_scale: float = 1.0
    move_scale_by_underlying: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        n = len(self.moves)
        lengths = {len(self.vol_direction), len(self.weights), len(self.short_otm_only)}
        if lengths != {n} or n == 0:
            raise ValueError(f"grid {self.name!r}: scenario arrays must share one length {n}")
        if not all(0.0 < w <= 1.0 for w in self.weights):
            raise ValueError(f"grid {self.name!r}: weights must lie in (0, 1]")

    @property
    def n_scenarios(self) -> int:
        return len(self.moves)

    def move_scale(self, n_underlyings: int) -> Float:
        """Scale of the moves per underlying, shape ``(U,)``."""
        scale = np.full(n_underlyings, self.default_move_scale)
        given = self.move_scale_by_underlying[:n_underlyings]
        scale[: len(given)] = given
        return scale

    def spot_multipliers(self, n_underlyings: int) -> Float:
        """Spot multiplier per underlying and scenario, shape ``(U, S)``, all > 0."""
        mult = 1.0 + np.outer(self.move_scale(n_underlyings), np.asarray(self.moves))
        if (mult <= 0.0).any():
            raise ValueError(f"grid {self.name!r}: a move scale takes a spot to <= 0")
        return mult

    def weight_array(self) -> Float:
        return np.asarray(self.weights, dtype=np.float64)

    def direction_array(self) -> NDArray[np.int8]:
        return np.asarray(self.vol_direction, dtype=np.int8)

    def short_otm_array(self) -> NDArray[np.bool_]:
        return np.asarray(self.short_otm_only, dtype=np.bool_)

    def shocked_vols(self, vol_annual: ArrayLike, t_years: ArrayLike) -> Float:
        """Vol of each option (axis 0, shape ``(n,)``) under every scenario: ``(n, S)``."""
        vol = np.asarray(vol_annual, dtype=np.float64)[..., None]
        up, down = self.vol_shock.shocked(vol, np.asarray(t_years, dtype=np.float64)[..., None])
        direction = self.direction_array()
        return np.where(direction > 0, up, np.where(direction < 0, down, vol))


def _regular(spots: tuple[float, ...], vol_up_only: frozenset[float]) -> list[tuple[float, int]]:
    out: list[tuple[float, int]] = []
    for spot in spots:
        directions = (1,) if spot in vol_up_only else (1, 0, -1)
        out.extend((spot, d) for d in directions)
    return out


def _grid(
    name: str,
    source: str,
    regular: list[tuple[float, int]],
    tail_weight: dict[float, float],
    vol_shock: VolShock,
    *,
    tail_short_otm_only: bool,
) -> ScenarioGrid:
    moves = [m for m, _ in regular] + list(tail_weight)
    return ScenarioGrid(
        name=name,
        source=source,
        moves=tuple(moves),
        vol_direction=tuple([d for _, d in regular] + [1] * len(tail_weight)),
        weights=tuple([1.0] * len(regular) + list(tail_weight.values())),
        short_otm_only=tuple([False] * len(regular) + [tail_short_otm_only] * len(tail_weight)),
        vol_shock=vol_shock,
    )


def derive_pmrm_grid(
    *, tail_dampener: float = 0.77, vol_shock: VolShock | None = None
) -> ScenarioGrid:
    """Derive (ex-Lyra) PMRM grid: 23 regular + 8 dampened tail scenarios (31)."""
    spots = (0.18, 0.135, 0.09, 0.045, 0.0, -0.045, -0.09, -0.135, -0.18)
    regular = _regular(spots, frozenset({0.18, -0.18}))
    tails = {m: tail_dampener * 0.18 / abs(m) for m in TAIL_MOVES}
    return _grid(
        "derive-pmrm",
        "Derive PMRM (REFERENCES.md s3): spot x 0.82..1.18, term-power vol shock, tails",
        regular,
        tails,
        vol_shock or TermPowerVolShock(),
        tail_short_otm_only=False,
    )


def deribit_pm_grid(
    *, price_range: float = 0.16, steps: int = 4, vol_shock: VolShock | None = None
) -> ScenarioGrid:
    """Deribit-like PM grid: ``2 steps + 1`` moves over +-range x 3 vols, plus extended moves."""
    spots = tuple(float(x) for x in np.linspace(-price_range, price_range, 2 * steps + 1))
    regular = _regular(spots, frozenset())
    tails = {m: min(1.0, price_range / abs(m)) for m in TAIL_MOVES}
    shock = vol_shock or TermPowerVolShock(range_up=0.5, range_down=0.25, min_up_vol_annual=0.5)
    return _grid(
        "deribit-pm",
        "Deribit PM (REFERENCES.md s3): +-16% x vol up/none/down, extended moves for short OTM",
        regular,
        tails,
        shock,
        tail_short_otm_only=True,
    )


def span16_grid(
    *,
    scan_range: float = 0.15,
    scan_range_by_underlying: tuple[float, ...] = (),
    vol_shock: VolShock | None = None,
    extreme_multiple: float = 2.0,
    extreme_weight: float = 0.35,
) -> ScenarioGrid:
    """CME SPAN 16 scenarios; moves are fractions of each underlying's price scan range."""
    regular: list[tuple[float, int]] = []
    for third in (0.0, 1 / 3, -1 / 3, 2 / 3, -2 / 3, 1.0, -1.0):
        regular.extend([(third, 1), (third, -1)])
    extremes = (extreme_multiple, -extreme_multiple)
    return ScenarioGrid(
        name="span-16",
        source="CME SPAN (REFERENCES.md s3): 0, +-1/3, +-2/3, +-3/3 scan x vol up/down, +-2x",
        moves=tuple([m for m, _ in regular] + list(extremes)),
        vol_direction=tuple([d for _, d in regular] + [0, 0]),
        weights=tuple([1.0] * len(regular) + [extreme_weight] * 2),
        short_otm_only=(False,) * (len(regular) + 2),
        vol_shock=vol_shock or AbsoluteVolShock(),
        default_move_scale=scan_range,
        move_scale_by_underlying=scan_range_by_underlying,
    )
