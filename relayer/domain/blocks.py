"""The latest block as the relayer sees it, read once from a node's answer.

Shared by the builder's gateway adapters (`relayer.chain.jsonrpc_gateway`, `web3_gateway`) and the relay
(`relayer.chain.node`). An answer that does not conform (a null block, a missing field, a quantity that is
not a number) means the node cannot serve the call: `ChainUnavailableError` (503, retryable), never a
`TypeError` that would surface as a 500.

>>> head_from_block({"number": "0x1a", "timestamp": 1_700_000_000, "baseFeePerGas": "0x7"})
ChainHead(number=26, timestamp=1700000000, base_fee_wei=7)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from relayer.errors import ChainUnavailableError

_QUANTITY = re.compile(r"0x[0-9a-fA-F]{1,64}", re.ASCII)


@dataclass(frozen=True)
class ChainHead:
    """The latest block: what staleness, fees, deadlines and confirmations are judged against."""

    number: int
    timestamp: int
    """Seconds since the epoch."""
    base_fee_wei: int | None
    """None on chains without EIP-1559."""


def quantity(value: object, what: str = "answer") -> int:
    """A JSON-RPC quantity (`"0x1a"`) or an int (web3 decodes them already), as a non-negative int.

    >>> quantity("0x1a"), quantity(26)
    (26, 26)

    Raises:
        ChainUnavailableError: anything else (null, a bool, a negative number, text that is not 0x-hex).
    """
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and _QUANTITY.fullmatch(value):
        return int(value, 16)
    raise ChainUnavailableError(f"the node's {what} is not a JSON-RPC quantity", got=repr(value)[:80])


def head_from_block(block: object) -> ChainHead:
    """The head from an `eth_getBlockByNumber` result (raw JSON-RPC or web3's decoded block).

    Raises:
        ChainUnavailableError: the node answered no block (null) or a block without a valid number or time.
    """
    if not isinstance(block, Mapping):
        raise ChainUnavailableError("the node answered no block", got=repr(block)[:80])
    base_fee = block.get("baseFeePerGas")
    return ChainHead(
        number=quantity(block.get("number"), "block number"),
        timestamp=quantity(block.get("timestamp"), "block timestamp"),
        base_fee_wei=None if base_fee is None else quantity(base_fee, "base fee"),
    )
