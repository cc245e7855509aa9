"""Implied-vol surfaces from raw SVI slices, with butterfly and calendar arbitrage checks.

Concept: each expiry carries a raw SVI smile of *total implied variance* (Gatheral 2004)

    w(k) = a + b (rho (k - m) + sqrt((k - m)^2 + sigma^2)),     k = ln(K / F),

so the Black vol of strike ``K`` at that expiry is ``sqrt(w(k) / T)``. Between slices the
surface interpolates total variance linearly in ``T`` at fixed ``k``; before the first
and after the last slice it extrapolates flat in vol (``w = w_slice(k) T / T_slice``).

The on-chain ``VolOracle`` publishes per (underlying, expiry) ``atmVolWad`` (annualised)
and ``sviA, sviB, sviRho, sviM, sviSigma``, all 1e18-scaled integers, with ``a`` and ``b``
in *total* variance for the time left at publication (``chains.deploy.svi_params``:
``a = atm^2 T - b sigma``, ``b = wings sqrt(T)``, so ``w(0) = atm^2 T`` when ``m = 0``).
``VolSurface.from_wad`` therefore reads each slice with ``T_pub = expiry - updatedAt``
and carries it to the valuation time at constant annualised variance (sticky vol between
oracle updates): ``w_now = w_pub T_now / T_pub``.

Invariants: slice parameters satisfy ``b >= 0``, ``|rho| < 1``, ``sigma > 0`` and a
non-negative minimum variance ``a + b sigma sqrt(1 - rho^2)`` (else
``InvalidSurfaceError``). No butterfly arbitrage <=> Durrleman's
``g(k) = (1 - k w'/(2w))^2 - w'^2/4 (1/w + 1/4) + w''/2 >= 0``; no calendar arbitrage <=>
``w`` non-decreasing in ``T`` at every ``k``. Both are checked on a ``k`` grid at
construction; violations are listed in ``surface.arbitrage`` (worst ``k`` per slice or
pair) and ``strict=True`` or ``surface.checked()`` raises ``ArbitrageError`` instead of
pricing off an arbitrageable surface.

Units: ``t_years`` in years (365-day), vols annualised (0.65 = 65 %), ``k`` natural log.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from aggregation.exceptions import ArbitrageError, InvalidSurfaceError

__all__ = [
    "DEFAULT_K_GRID",
    "WAD",
    "ArbitrageViolation",
    "SviSlice",
    "VolSurface",
    "durrleman_g",
    "svi_total_variance",
]

WAD = 10**18
"""Fixed-point scale of every VolOracle value."""
SECONDS_PER_YEAR = 365 * 86_400
DEFAULT_K_GRID: NDArray[np.float64] = np.linspace(-2.5, 2.5, 501)
"""Log-moneyness grid of the arbitrage checks: strikes from 0.08 F to 12 F, step 0.01."""
DEFAULT_K_GRID.setflags(write=False)
_TOLERANCE = 1e-12  # rounding slack of the checks (w and g are O(1e-2..1))


def svi_total_variance(
    k: ArrayLike, *, a: ArrayLike, b: ArrayLike, rho: ArrayLike, m: ArrayLike, sigma: ArrayLike
) -> NDArray[np.float64]:
    """Raw SVI total variance ``w(k)``; all arguments broadcast."""
    km = np.asarray(k, dtype=np.float64) - np.asarray(m, dtype=np.float64)
    w: NDArray[np.float64] = np.asarray(a, dtype=np.float64) + np.asarray(b, dtype=np.float64) * (
        np.asarray(rho, dtype=np.float64) * km + np.hypot(km, sigma)
    )
    return w


def durrleman_g(
    k: ArrayLike, *, a: float, b: float, rho: float, m: float, sigma: float
) -> NDArray[np.float64]:
    """Durrleman's ``g(k)`` of one SVI slice: the risk-neutral density is ``g n(d2) / sqrt(w)``.

    ``g >= 0`` everywhere <=> no butterfly arbitrage. Where ``w <= 0`` g is ``-inf``.
    """
    kk = np.asarray(k, dtype=np.float64)
    km = kk - m
    root = np.hypot(km, sigma)
    w = a + b * (rho * km + root)
    w1 = b * (rho + km / root)
    w2 = b * sigma * sigma / root**3
    with np.errstate(divide="ignore", invalid="ignore"):
        g = (1.0 - kk * w1 / (2.0 * w)) ** 2 - 0.25 * w1 * w1 * (1.0 / w + 0.25) + 0.5 * w2
    out: NDArray[np.float64] = np.where(w > 0.0, g, -np.inf)
    return out


@dataclass(frozen=True, slots=True)
class SviSlice:
    """One expiry: raw SVI total variance for ``t_years`` to expiry.

    ``expiry_s`` (unix seconds) and ``atm_vol`` (annualised, as published) are labels
    for reports; the pricing uses only the SVI parameters and ``t_years``.
    """

    t_years: float
    a: float
    b: float
    rho: float
    m: float
    sigma: float
    expiry_s: int | None = None
    atm_vol: float | None = None

    def __post_init__(self) -> None:
        label = self.label()
        if not self.t_years > 0.0:
            raise InvalidSurfaceError(f"{label}: t_years must be > 0, got {self.t_years}")
        if not (self.b >= 0.0 and -1.0 < self.rho < 1.0 and self.sigma > 0.0):
            raise InvalidSurfaceError(
                f"{label}: SVI needs b >= 0, -1 < rho < 1, sigma > 0; got b={self.b}, "
                f"rho={self.rho}, sigma={self.sigma}"
            )
        if self.min_variance < -_TOLERANCE:
            raise InvalidSurfaceError(
                f"{label}: minimum total variance a + b sigma sqrt(1 - rho^2) = "
                f"{self.min_variance:.3g} < 0; raise a"
            )

    @classmethod
    def from_wad(
        cls,
        t_years: float,
        *,
        atm_vol_wad: int,
        a_wad: int,
        b_wad: int,
        rho_wad: int,
        m_wad: int,
        sigma_wad: int,
        expiry_s: int | None = None,
    ) -> SviSlice:
        """A slice from VolOracle integers; ``t_years`` is the time the variance refers to."""
        return cls(
            t_years,
            a_wad / WAD,
            b_wad / WAD,
            rho_wad / WAD,
            m_wad / WAD,
            sigma_wad / WAD,
            expiry_s=expiry_s,
            atm_vol=atm_vol_wad / WAD,
        )

    def params(self) -> dict[str, float]:
        """``{a, b, rho, m, sigma}`` as keyword arguments of the SVI functions."""
        return {"a": self.a, "b": self.b, "rho": self.rho, "m": self.m, "sigma": self.sigma}

    @property
    def min_variance(self) -> float:
        """``min_k w(k) = a + b sigma sqrt(1 - rho^2)``."""
        return self.a + self.b * self.sigma * float(np.sqrt(1.0 - self.rho * self.rho))

    def label(self) -> str:
        """``expiry 1700000000 (T=0.0192y)`` or ``T=0.0192y``, for messages."""
        t = f"T={self.t_years:.4g}y"
        return t if self.expiry_s is None else f"expiry {self.expiry_s} ({t})"

    def rescaled(self, t_years: float) -> SviSlice:
        """The same annualised variance carried to ``t_years``: a, b scale by ``t / T``."""
        c = t_years / self.t_years
        return SviSlice(
            t_years,
            self.a * c,
            self.b * c,
            self.rho,
            self.m,
            self.sigma,
            expiry_s=self.expiry_s,
            atm_vol=self.atm_vol,
        )

    def total_variance(self, k: ArrayLike) -> NDArray[np.float64]:
        """``w(k)`` of this slice."""
        return svi_total_variance(k, **self.params())


@dataclass(frozen=True, slots=True)
class ArbitrageViolation:
    """The worst point of one arbitrage found on the check grid.

    ``butterfly``: ``value`` is ``min g(k) < 0`` of ``slice_label``.
    ``calendar``: ``value`` is ``w_before(k) - w(k) > 0`` with the earlier slice
    ``before_label``.
    """

    kind: Literal["butterfly", "calendar"]
    slice_label: str
    k: float
    value: float
    before_label: str | None = None

    def __str__(self) -> str:
        if self.kind == "butterfly":
            return (
                f"butterfly arbitrage in {self.slice_label} at k={self.k:+.3f}: "
                f"Durrleman g={self.value:.3g} < 0"
            )
        return (
            f"calendar arbitrage between {self.before_label} and {self.slice_label} at "
            f"k={self.k:+.3f}: total variance falls by {self.value:.3g}"
        )


@dataclass(frozen=True, slots=True, eq=False)
class VolSurface:
    """Slices sorted by ``t_years``; vectorised vols with the module's interpolation."""

    slices: tuple[SviSlice, ...]
    strict: bool = False
    k_grid: NDArray[np.float64] = field(default_factory=lambda: DEFAULT_K_GRID, repr=False)
    arbitrage: tuple[ArbitrageViolation, ...] = field(init=False)
    _t: NDArray[np.float64] = field(init=False, repr=False)
    _params: NDArray[np.float64] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.slices:
            raise InvalidSurfaceError("a vol surface needs at least one SVI slice")
        ordered = tuple(sorted(self.slices, key=lambda s: s.t_years))
        t = np.array([s.t_years for s in ordered])
        if np.any(np.diff(t) <= 0.0):
            raise InvalidSurfaceError(f"two slices share a time to expiry: {t.tolist()}")
        object.__setattr__(self, "slices", ordered)
        object.__setattr__(self, "_t", t)
        params = np.array([[s.a, s.b, s.rho, s.m, s.sigma] for s in ordered])
        object.__setattr__(self, "_params", params)
        object.__setattr__(self, "arbitrage", self._find_arbitrage())
        if self.strict:
            self.checked()

    @classmethod
    def from_wad(
        cls,
        *,
        expiry_s: Sequence[int],
        updated_at_s: Sequence[int],
        atm_vol_wad: Sequence[int],
        svi_a: Sequence[int],
        svi_b: Sequence[int],
        svi_rho: Sequence[int],
        svi_m: Sequence[int],
        svi_sigma: Sequence[int],
        now_s: int,
        strict: bool = False,
    ) -> VolSurface:
        """One underlying's surface from VolOracle rows (one entry per expiry), valued at
        ``now_s`` (block time). Expiries at or before ``now_s`` are dropped."""
        rows = zip(
            expiry_s,
            updated_at_s,
            atm_vol_wad,
            svi_a,
            svi_b,
            svi_rho,
            svi_m,
            svi_sigma,
            strict=True,
        )
        slices = []
        for expiry, updated, atm, a, b, rho, m, sigma in rows:
            if expiry <= now_s:
                continue
            if expiry <= updated:
                raise InvalidSurfaceError(
                    f"expiry {expiry}: published at {updated}, not before expiry"
                )
            t_pub = (expiry - updated) / SECONDS_PER_YEAR
            published = SviSlice.from_wad(
                t_pub,
                atm_vol_wad=atm,
                a_wad=a,
                b_wad=b,
                rho_wad=rho,
                m_wad=m,
                sigma_wad=sigma,
                expiry_s=expiry,
            )
            slices.append(published.rescaled((expiry - now_s) / SECONDS_PER_YEAR))
        return cls(tuple(slices), strict=strict)

    def checked(self) -> VolSurface:
        """``self`` if arbitrage-free on the check grid, else raise ``ArbitrageError``."""
        if self.arbitrage:
            found = "; ".join(str(v) for v in self.arbitrage)
            raise ArbitrageError(
                f"vol surface has {len(self.arbitrage)} arbitrage(s): {found}. "
                "Fix the oracle's SVI parameters, or build with strict=False and inspect "
                "surface.arbitrage."
            )
        return self

    def total_variance(self, k: ArrayLike, t_years: ArrayLike) -> NDArray[np.float64]:
        """``w(k, T)``: linear in ``T`` between slices, flat vol outside; ``T <= 0`` gives 0."""
        kk, t = np.broadcast_arrays(
            np.asarray(k, dtype=np.float64), np.asarray(t_years, dtype=np.float64)
        )
        n = self._t.size
        above = np.searchsorted(self._t, t, side="right")  # slices with T_i <= t
        lo = np.clip(above - 1, 0, n - 1)
        hi = np.clip(above, 0, n - 1)
        t_lo, t_hi = self._t[lo], self._t[hi]
        p_lo, p_hi = self._params[lo], self._params[hi]
        w_lo = _svi_rows(kk, p_lo)
        w_hi = _svi_rows(kk, p_hi)
        inside = lo != hi
        with np.errstate(divide="ignore", invalid="ignore"):
            frac = np.where(inside, (t - t_lo) / (t_hi - t_lo), 0.0)
            w = np.where(inside, w_lo + frac * (w_hi - w_lo), w_lo * t / t_lo)
        out: NDArray[np.float64] = np.maximum(w, 0.0)
        return out

    def vol(self, strike: ArrayLike, forward: ArrayLike, t_years: ArrayLike) -> NDArray[np.float64]:
        """Annualised Black vol at ``strike`` for ``forward`` and ``t_years``, vectorised.

        ``t_years <= 0`` returns the first slice's vol at that ``k`` (an expired option's
        price does not depend on it).
        """
        k = np.log(np.asarray(strike, dtype=np.float64) / np.asarray(forward, dtype=np.float64))
        t = np.asarray(t_years, dtype=np.float64)
        t_pos = np.where(t > 0.0, t, self._t[0])
        out: NDArray[np.float64] = np.sqrt(self.total_variance(k, t_pos) / t_pos)
        return out

    def _find_arbitrage(self) -> tuple[ArbitrageViolation, ...]:
        grid = self.k_grid
        found: list[ArbitrageViolation] = []
        w_all = _svi_rows(grid[None, :], self._params[:, None, :])
        g_all = np.stack([durrleman_g(grid, **sl.params()) for sl in self.slices])
        for i, sl in enumerate(self.slices):  # one entry per slice, not per option
            j = int(np.argmin(g_all[i]))
            if g_all[i, j] < -_TOLERANCE:
                found.append(ArbitrageViolation("butterfly", sl.label(), grid[j], g_all[i, j]))
            if i > 0:
                drop = w_all[i - 1] - w_all[i]
                j = int(np.argmax(drop))
                if drop[j] > _TOLERANCE:
                    before = self.slices[i - 1].label()
                    found.append(
                        ArbitrageViolation("calendar", sl.label(), grid[j], drop[j], before)
                    )
        return tuple(found)


def _svi_rows(k: NDArray[np.float64], params: NDArray[np.float64]) -> NDArray[np.float64]:
    """``w(k)`` with ``params[..., :]`` = (a, b, rho, m, sigma), broadcast against ``k``."""
    a, b, rho, m, sigma = np.moveaxis(params, -1, 0)
    return svi_total_variance(k, a=a, b=b, rho=rho, m=m, sigma=sigma)
