"""A node whose JSON-RPC results do not conform (`"result": null`, a null block, text that is not hex) makes
the chain client answer `ChainUnavailableError` (503, retryable), never a `TypeError` that surfaces as a 500.

The replies are decoded without a node: `RpcReply` and the decoders directly, and `ChainClient` over a port
that answers with canned replies."""

from __future__ import annotations

import doctest
from collections.abc import Sequence
from typing import Any

import anyio
import pytest

from relayer.chain.client import ChainClient
from relayer.chain.decoding import hex_data
from relayer.chain.jsonrpc import RpcCall, RpcReply
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


class CannedPort:
    """A chain port that answers each method with a fixed result (`"result": null` unless given)."""

    def __init__(self, **results: Any) -> None:
        self.results = results

    async def batch(self, calls: Sequence[RpcCall]) -> list[RpcReply]:
        return [RpcReply(result=self.results.get(call.method)) for call in calls]

    async def aclose(self) -> None:
        return None


def _client(**results: Any) -> ChainClient:
    return ChainClient(CannedPort(**results), VAULT, retries=1)


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
        anyio.run(_client(**results).start)


def test_reads_on_null_results_are_chain_unavailable() -> None:
    client = _client()
    client._chain_id = 1  # as if started
    with pytest.raises(ChainUnavailableError):
        anyio.run(client.head)
    with pytest.raises(ChainUnavailableError):
        anyio.run(client.read_close_state, b"\x01" * 32, b"")
    with pytest.raises(ChainUnavailableError):
        anyio.run(client.read_positions, [b"\x01" * 32])
    with pytest.raises(ChainUnavailableError):
        anyio.run(client.position_ids_of, VAULT)
    with pytest.raises(ChainUnavailableError):
        anyio.run(client.read_markets)
    # ... and every other read of the client
    with pytest.raises(ChainUnavailableError):
        anyio.run(client.head_and_fees)
    with pytest.raises(ChainUnavailableError):
        anyio.run(client.nonce, VAULT)
    with pytest.raises(ChainUnavailableError):
        anyio.run(client.balance, VAULT)
    with pytest.raises(ChainUnavailableError):
        anyio.run(client.estimate_gas, VAULT, VAULT, b"")
    with pytest.raises(ChainUnavailableError):
        anyio.run(client.block_hash, 0)
    with pytest.raises(ChainUnavailableError):
        anyio.run(client.position, b"\x01" * 32)
    with pytest.raises(ChainUnavailableError):
        anyio.run(client.request_nonce, VAULT)
    with pytest.raises(ChainUnavailableError):
        anyio.run(client.price, "BTCUSDT")
    with pytest.raises(ChainUnavailableError):
        anyio.run(client.vault_events, "PositionOpened", 0, 1)


def test_a_null_receipt_is_not_mined_yet() -> None:
    """`"result": null` for a receipt is the node's normal answer while the transaction is pending."""
    assert anyio.run(_client().receipt, "0x" + "ab" * 32) is None


class SilentPort(CannedPort):
    """A node that never answers."""

    def __init__(self) -> None:
        super().__init__()
        self.batches = 0

    async def batch(self, calls: Sequence[RpcCall]) -> list[RpcReply]:
        self.batches += 1
        raise ChainUnavailableError("the node did not answer")


def test_an_unanswered_batch_is_retried_then_chain_unavailable() -> None:
    port = SilentPort()
    client = ChainClient(port, VAULT, retries=3, backoff_s=0.001)
    with pytest.raises(ChainUnavailableError) as info:
        anyio.run(client.start)
    assert port.batches == 3
    assert info.value.details["reason"] == "the node did not answer"
