"""Pure ABI encoding of vault calls: values in, calldata bytes out, no node involved."""

from __future__ import annotations

from functools import cache
from typing import Any

from eth_utils import to_checksum_address
from web3 import Web3
from web3.contract import Contract

from relayer.artifact import load_artifact


@cache
def _contract() -> type[Contract]:
    # A provider-less contract class only encodes; it never opens a connection.
    return Web3().eth.contract(abi=load_artifact().abi)


def encode_call(function: str, *args: Any) -> bytes:
    """Calldata of `function(*args)` on the vault."""
    return bytes.fromhex(_contract().encode_abi(function, list(args))[2:])


def close_position(position_id: bytes, size_delta: int, allowed_price_e8: int) -> bytes:
    return encode_call("closePosition", position_id, size_delta, allowed_price_e8)


def set_take_profit(position_id: bytes, price_e8: int, close_bps: int) -> bytes:
    return encode_call("setTakeProfit", position_id, price_e8, close_bps)


def set_stop_loss(position_id: bytes, price_e8: int, close_bps: int) -> bytes:
    return encode_call("setStopLoss", position_id, price_e8, close_bps)


def execute_trigger(position_id: bytes) -> bytes:
    return encode_call("executeTrigger", position_id)


def set_operator(operator: str, approved: bool) -> bytes:
    return encode_call("setOperator", to_checksum_address(operator), approved)


def multicall(calls: list[bytes]) -> bytes:
    """One transaction running `calls` in order, all or nothing."""
    return encode_call("multicall", calls)


def decode_call(data: bytes) -> tuple[str, dict[str, Any]]:
    """The vault function and named arguments `data` calls (raises ValueError if it is not a vault call)."""
    function, args = _contract().decode_function_input(data)
    return str(function.fn_name), dict(args)
