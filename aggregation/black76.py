"""Black-76 prices and Greeks of European options on a forward, vectorised.

Concept: an option on the forward ``F`` (the futures/forward price of the underlying for
the option's expiry) struck at ``K``, expiring in ``t_years``, with Black volatility
``vol`` (annualised, 0.5 = 50 %) and continuously compounded discount rate ``rate``::

    df = exp(-rate * t)          d1 = (ln(F/K) + vol^2 t / 2) / (vol sqrt(t))
    call = df (F N(d1) - K N(d2))    put = df (K N(-d2) - F N(-d1))    d2 = d1 - vol sqrt(t)

Units (all arrays ``float64``, broadcast together like numpy operands):

- ``price``  quote currency (USD) per 1 unit of underlying;
- ``delta``  dPrice/dF, per 1 unit of forward (call in [0, df], put in [-df, 0]);
- ``gamma``  d2Price/dF2, per unit^2;
- ``vega``   dPrice/dvol per **1 vol point** (0.01 of annualised vol);
- ``theta``  dPrice per **calendar day** as time passes (``-dPrice/dt / 365``),
  with the forward held fixed; negative for a long vanilla unless carry dominates;
- ``vanna``  dDelta/dvol per 1 vol point (= dVega/dF per vol point);
- ``volga``  dVega/dvol: change of ``vega`` (per vol point) per 1 vol point.

Invariants: ``price`` lies within ``[df max(F-K,0), df F]`` (call) and
``[df max(K-F,0), df K]`` (put); ``gamma, vega >= 0``; for equal inputs
``delta_call - delta_put = df`` exactly, also at expiry.

Degenerate inputs never produce NaN or warnings: when ``vol sqrt(t) == 0`` (``t <= 0``
or ``vol == 0``) the price is the discounted intrinsic value, delta is the step
``df 1{F>K}`` (``df/2`` at the money, ``-df 1{F<K}`` for puts), gamma, vanna and volga are
0, vega is its limit (``df F sqrt(t) / sqrt(2 pi)`` at the money, else 0) and theta is the
carry ``rate price / 365`` (0 at expiry). ``t < 0`` is treated as expired. Forwards and
strikes must be positive.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import ndtr  # type: ignore[import-untyped]  # scipy ships no stubs

__all__ = ["DAYS_PER_YEAR", "VOL_POINT", "Greeks", "black76"]

DAYS_PER_YEAR = 365.0
"""Theta is quoted per calendar day: annual theta / 365."""
VOL_POINT = 0.01
"""Vega, vanna and volga are quoted per volatility point (1 % of annualised vol)."""

_INV_SQRT_2PI = 0.3989422804014327


class Greeks(NamedTuple):
    """Black-76 price and Greeks; every field has the broadcast shape of the inputs.

    Units: see the module docstring (vega/vanna/volga per vol point, theta per day).
    """

    price: NDArray[np.float64]
    delta: NDArray[np.float64]
    gamma: NDArray[np.float64]
    vega: NDArray[np.float64]
    theta: NDArray[np.float64]
    vanna: NDArray[np.float64]
    volga: NDArray[np.float64]


def black76(  # noqa: PLR0917  # positional signature is the contract margin.py relies on
    forward: ArrayLike,
    strike: ArrayLike,
    t_years: ArrayLike,
    vol: ArrayLike,
    rate: ArrayLike,
    is_call: ArrayLike,
) -> Greeks:
    """Price and Greeks of European options under Black-76 (see module docstring).

    Args:
        forward: forward price of the underlying at expiry, USD, > 0.
        strike: strike, USD, > 0.
        t_years: time to expiry in years (ACT/365); <= 0 means expired.
        vol: Black (lognormal) volatility, annualised, >= 0.
        rate: continuously compounded discount rate, annualised.
        is_call: True for calls, False for puts.
    """
    f, k, t, v, r, call = np.broadcast_arrays(
        *(np.asarray(a, dtype=np.float64) for a in (forward, strike, t_years, vol, rate)),
        np.asarray(is_call, dtype=bool),
    )
    if f.ndim == 0:  # work on 1-element arrays so that in-place fills apply; reshape back
        one = black76(f[None], k[None], t[None], v[None], r[None], call[None])
        return Greeks(*(a.reshape(()) for a in one))
    t = np.maximum(t, 0.0)
    # theta = +1 for calls, -1 for puts: price = df theta (F N(theta d1) - K N(theta d2)),
    # which keeps out-of-the-money prices accurate (no parity cancellation).
    sign = np.where(call, 1.0, -1.0)
    greeks, df, sqrt_t, sd = _closed_form(f, k, t, v, r, sign)
    degenerate = ~(sd > 0.0)
    if degenerate.any():
        _fill_degenerate(degenerate, f, k, t, r, df, sqrt_t, sign, out=greeks)
    return greeks


def _closed_form(
    *args: NDArray[np.float64],
) -> tuple[Greeks, NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Greeks from ``forward, strike, t, vol, rate, sign``, with ``df, sqrt_t, vol sqrt_t``.

    In-place arithmetic on a handful of buffers: at 1M options memory traffic, not flops,
    sets the time. Entries with ``vol sqrt_t == 0`` are garbage until filled.
    """
    f, k, t, v, r, sign = args
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        df = r * t
        np.exp(np.negative(df, out=df), out=df)
        sqrt_t = np.sqrt(t)
        sd = v * sqrt_t  # total standard deviation vol sqrt(t)
        d1 = f / k
        np.log(d1, out=d1)
        d1 /= sd
        d1 += 0.5 * sd
        d2 = d1 - sd
        nd1 = ndtr(np.multiply(sign, d1))  # N(theta d1)
        nd2 = ndtr(np.multiply(sign, d2))
        df_pdf = d1 * d1  # df n(d1)
        df_pdf *= -0.5
        np.exp(df_pdf, out=df_pdf)
        df_pdf *= df
        df_pdf *= _INV_SQRT_2PI

        price = f * nd1
        nd2 *= k
        price -= nd2
        price *= df
        price *= sign
        delta = nd1
        delta *= df
        delta *= sign
        vega = df_pdf * f  # per 1.00 of vol until scaled below
        vega *= sqrt_t
        gamma = f * sd
        np.divide(df_pdf, gamma, out=gamma)
        theta = vega * v  # df F n(d1) vol / (2 sqrt t) = vega vol / (2 t)
        theta /= t
        theta *= -0.5
        theta += r * price
        theta /= DAYS_PER_YEAR
        vanna = df_pdf * d2  # -df n(d1) d2 / vol
        vanna /= v
        vanna *= -VOL_POINT
        volga = vega * d1  # vega d1 d2 / vol
        volga *= d2
        volga /= v
        volga *= VOL_POINT * VOL_POINT
        vega *= VOL_POINT
    return Greeks(price, delta, gamma, vega, theta, vanna, volga), df, sqrt_t, sd


def _fill_degenerate(mask: NDArray[np.bool_], *inputs: NDArray[np.float64], out: Greeks) -> None:
    """Overwrite ``out`` in place where the total deviation is 0, by the limits.

    ``inputs`` are ``forward, strike, t, rate, df, sqrt_t, sign`` (broadcast, full shape).
    """
    f, k, t, r, df, sqrt_t, s = (a[mask] for a in inputs)
    price, delta, gamma, vega, theta, vanna, volga = out
    moneyness = s * (f - k)
    intrinsic = df * np.maximum(moneyness, 0.0)
    step = np.where(moneyness > 0.0, 1.0, np.where(moneyness == 0.0, 0.5, 0.0))
    price[mask] = intrinsic
    delta[mask] = s * df * step
    gamma[mask] = 0.0
    vega[mask] = np.where(f == k, df * f * sqrt_t * _INV_SQRT_2PI * VOL_POINT, 0.0)
    theta[mask] = np.where(t > 0.0, r * intrinsic / DAYS_PER_YEAR, 0.0)
    vanna[mask] = 0.0
    volga[mask] = 0.0
