"""The vault's answers and JSON-RPC data decoded to values: pure functions, no node, used by the chain client
(`relayer.chain.client`) and the JSON-RPC replies (`relayer.chain.jsonrpc`).

A malformed answer means the node cannot serve the call: `ChainUnavailableError` (503, retryable), never a
`TypeError` that would surface as a 500.
"""

from __future__ import annotations

import re

from eth_abi.abi import decode
from eth_abi.exceptions import DecodingError

from relayer.chain.quotes import MarketPrice, PositionQuote
from relayer.domain.addresses import checksum_address as to_checksum_address
from relayer.domain.markets import bytes32_to_symbol
from relayer.domain.positions import ExitPlan, OrderView, Position, TriggerOrder
from relayer.errors import ChainUnavailableError, ExecutionRevertedError, VaultNotDeployedError

_WORD = 32
_HEX_DATA = re.compile(r"0x(?:[0-9a-fA-F]{2})*", re.ASCII)
_POSITION_WITH_PRICE_WORDS = 11  # PositionView (9 static words) + price + updatedAt


def decode_position_with_price(position_id: bytes, data: bytes) -> PositionQuote:
    """`getPositionWithPrice`'s return data: every member is a static type, so each is one 32-byte word.

    Slicing words is ~30x faster than the generic ABI decoder on this hot path; a test checks it against
    eth-abi.

    Raises:
        VaultNotDeployedError: empty return data (no contract at the address).
        ExecutionRevertedError: return data of the wrong length.
    """
    if not data:
        raise VaultNotDeployedError("the vault address returned no data: no contract there")
    if len(data) != _POSITION_WITH_PRICE_WORDS * _WORD:
        raise ExecutionRevertedError("unexpected getPositionWithPrice return data", length=len(data))
    words = [int.from_bytes(data[i : i + _WORD], "big") for i in range(0, len(data), _WORD)]
    position = Position(
        position_id=position_id,
        owner=to_checksum_address(data[12:32]),
        market=bytes32_to_symbol(data[32:64]),
        is_long=words[2] != 0,
        size=words[3],
        entry_price_e8=words[4],
        take_profit=TriggerOrder(words[5], words[6]),
        stop_loss=TriggerOrder(words[7], words[8]),
    )
    return PositionQuote(position, price_e8=words[9], price_updated_at=words[10])


_ORDERS_OF_TYPES = ("(uint8,bool,uint256,uint16,uint16,uint256)[]", "uint256")


def decode_orders_of(data: bytes) -> ExitPlan:
    """`ordersOf(positionId)`'s return data: the pending orders (execution priority) and the plan's `D`.

    Raises:
        VaultNotDeployedError: empty return data (no contract at the address).
        ChainUnavailableError: data that is not `ordersOf`'s ABI encoding.
    """
    if not data:
        raise VaultNotDeployedError("the vault address returned no data: no contract there")
    try:
        rows, plan_bps = decode(_ORDERS_OF_TYPES, data)
    except DecodingError:
        raise ChainUnavailableError("the node's answer is not an ABI-encoded ordersOf result") from None
    orders = tuple(
        OrderView(int(order_id), bool(is_tp), int(price), int(share), int(trail), int(size))
        for order_id, is_tp, price, share, trail, size in rows
    )
    return ExitPlan(orders, int(plan_bps))


def decode_bytes32_array(data: bytes) -> list[bytes]:
    """A `bytes32[]` return value (`positionIdsOf`, `markets`).

    Raises:
        ChainUnavailableError: `data` is not an ABI-encoded `bytes32[]`.
    """
    try:
        (values,) = decode(["bytes32[]"], data)
    except DecodingError:
        raise ChainUnavailableError("the node's answer is not an ABI-encoded bytes32[]") from None
    return [bytes(value) for value in values]


def decode_markets(data: bytes) -> list[str]:
    """`markets()`'s return data as symbols."""
    return [bytes32_to_symbol(market) for market in decode_bytes32_array(data)]


def decode_uint(data: bytes) -> int:
    """The first word of return data as an unsigned integer (`maxPriceAge`).

    >>> decode_uint(bytes.fromhex("00" * 31 + "2a"))
    42
    """
    return int.from_bytes(data[:_WORD], "big")


def decode_market_price(market: str, data: bytes) -> MarketPrice:
    """`priceOf(market)`'s return data: (price in USD with 8 decimals, the timestamp it was set at)."""
    return MarketPrice(market, decode_uint(data), decode_uint(data[_WORD:]))


def hex_data(value: object, what: str = "answer") -> bytes:
    """JSON-RPC data (`"0x..."`, an even number of hex digits) as bytes.

    >>> hex_data("0x6869")
    b'hi'

    Raises:
        ChainUnavailableError: anything else (null, a number, odd-length or non-hex text).
    """
    if isinstance(value, str) and _HEX_DATA.fullmatch(value):
        return bytes.fromhex(value[2:])
    raise ChainUnavailableError(f"the node's {what} is not 0x-hex data", got=repr(value)[:80])
