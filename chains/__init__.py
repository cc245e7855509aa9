"""Talking to EVM chains: specs and registry, JSON-RPC, ABI encoding, contract artifacts,
and the local anvil devnet with its deployer, seeder and liquidator keepers.

The lowest layer: it imports no other RTRM package. Errors derive from
:class:`chains.exceptions.ChainError`.
"""
