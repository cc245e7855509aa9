"""Risk math over a store snapshot: pricing, Greeks, margin, health, exposure, contagion.

One loader reads the store at a watermark vector and turns it into numpy arrays; every
other module is pure, vectorised math over those arrays (Black-76 pricing and Greeks,
vol surfaces, portfolio margin scenario grids, lending health factors, exposure per
asset, stress and contagion cascades, VaR) with no I/O and no logging. Amounts are
scaled from exact integers by token decimals only here; units are in the names
(``price_usd``, ``vol_annual``, ``theta_per_day``, ``vega_per_vol_point``).

May import ``indexer`` (the loader only) and ``chains`` (asset ids).
"""
