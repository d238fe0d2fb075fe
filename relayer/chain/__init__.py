"""The chain: connecting to a node, the vault's ABI and calls, reverts and events, deployment."""
