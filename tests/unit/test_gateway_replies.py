"""A node whose JSON-RPC results do not conform (`"result": null`, a null block, text that is not hex) makes
the gateway answer `ChainUnavailableError` (503, retryable), never a `TypeError` that surfaces as a 500.

The replies are decoded without a node: `RpcReply` and the decoders directly, and `JsonRpcGateway` over a
transport that answers with canned replies."""

from __future__ import annotations

import doctest
from collections.abc import Sequence
from typing import Any

import anyio
import pytest

from relayer.chain.decoding import hex_data
from relayer.chain.jsonrpc import RpcCall, RpcReply
from relayer.chain.jsonrpc_gateway import JsonRpcGateway
from relayer.domain import blocks
from relayer.domain.blocks import ChainHead, head_from_block, quantity
from relayer.errors import ChainUnavailableError, ExecutionRevertedError

VAULT = "0x" + "44" * 20
BLOCK = {"number": "0x10", "timestamp": "0x6553f100", "baseFeePerGas": "0x3b9aca00"}


def test_doctests() -> None:
    result = doctest.testmod(blocks)
    assert (result.attempted > 0, result.failed) == (True, 0)


def test_conforming_replies_decode() -> None:
    assert RpcReply(result="0x1a").quantity() == 26
    assert RpcReply(result="0x6869").data() == b"hi"
    assert RpcReply(result="0x").data() == b""
    assert RpcReply(result=BLOCK).head() == ChainHead(16, 0x6553F100, 10**9)
    assert head_from_block({"number": 1, "timestamp": 2}) == ChainHead(1, 2, None)  # web3's decoded, legacy


@pytest.mark.parametrize("result", [None, True, -1, "", "0x", "1a", "0xzz", 1.5, {}, []])
def test_a_result_that_is_not_a_quantity(result: Any) -> None:
    with pytest.raises(ChainUnavailableError):
        RpcReply(result=result).quantity()
    with pytest.raises(ChainUnavailableError):
        quantity(result)


@pytest.mark.parametrize("result", [None, 7, "", "0x1", "0xzz", "abcd", "0x 12", {}])
def test_a_result_that_is_not_data(result: Any) -> None:
    with pytest.raises(ChainUnavailableError):
        RpcReply(result=result).data()
    with pytest.raises(ChainUnavailableError):
        hex_data(result)


@pytest.mark.parametrize(
    "block",
    [
        None,
        "0x10",
        [],
        {},
        {"number": None, "timestamp": "0x1"},
        {"number": "0x1"},
        {"number": "0x1", "timestamp": "0x1", "baseFeePerGas": "fast"},
    ],
)
def test_a_result_that_is_not_a_block(block: Any) -> None:
    with pytest.raises(ChainUnavailableError):
        RpcReply(result=block).head()


def test_the_calls_error_still_wins_over_its_result() -> None:
    with pytest.raises(ExecutionRevertedError):
        RpcReply(error={"code": 3, "message": "execution reverted"}).quantity()


class CannedTransport:
    """Answers each method with a fixed result (`"result": null` unless given)."""

    def __init__(self, **results: Any) -> None:
        self.results = results

    async def batch(self, calls: Sequence[RpcCall]) -> list[RpcReply]:
        return [RpcReply(result=self.results.get(call.method)) for call in calls]

    async def call(self, method: str, *params: Any) -> Any:
        (reply,) = await self.batch([RpcCall(method, list(params))])
        return reply.value()

    async def aclose(self) -> None:
        return None


def _gateway(**results: Any) -> JsonRpcGateway:
    return JsonRpcGateway(CannedTransport(**results), VAULT)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "results",
    [
        {},  # every result null
        {"eth_chainId": "0x1", "eth_getCode": None, "eth_getBlockByNumber": BLOCK},
        {"eth_chainId": None, "eth_getCode": "0x", "eth_getBlockByNumber": BLOCK},
        {"eth_chainId": "0x1", "eth_getCode": "0x", "eth_getBlockByNumber": None},
    ],
)
def test_start_on_null_results_is_chain_unavailable(results: dict[str, Any]) -> None:
    with pytest.raises(ChainUnavailableError):
        anyio.run(_gateway(**results).start)


def test_reads_on_null_results_are_chain_unavailable() -> None:
    gateway = _gateway()
    gateway._chain_id = 1  # as if started
    with pytest.raises(ChainUnavailableError):
        anyio.run(gateway.head)
    with pytest.raises(ChainUnavailableError):
        anyio.run(gateway.read_close_state, b"\x01" * 32, b"")
    with pytest.raises(ChainUnavailableError):
        anyio.run(gateway.read_positions, [b"\x01" * 32])
    with pytest.raises(ChainUnavailableError):
        anyio.run(gateway.position_ids_of, VAULT)
    with pytest.raises(ChainUnavailableError):
        anyio.run(gateway.read_markets)
