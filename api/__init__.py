"""The HTTP API and dashboard: stateless readers of the store and the risk results.

aiohttp handlers answer "what is this address's total risk, everywhere?", systemic
exposure, stress and insurance questions, described by an OpenAPI spec, plus a static
dashboard page. Every answer states the watermark vector {chain_id: block} it was
computed at. Servers hold no state of their own, so they scale horizontally.

May import ``insurance``, ``aggregation``, ``indexer`` and ``chains``.
"""
