"""The insurance backstop: size the pool, detect bad debt, and pay it out on chain.

Deficits left after liquidations flow through a waterfall (conservation: what is paid
plus what remains uncovered equals the deficit, to the wei) into payouts executed on
chain through a payout executor with an in-memory fake for tests; every payout carries
an attestation tying it to the watermark vector it was computed at. Capital sizing
uses the stress and contagion results from ``aggregation``. Owns its own tables.

May import ``aggregation``, ``indexer`` and ``chains``.
"""
