"""`ChainClient` against real chains, over both adapters of the chain port (`EmbeddedRpc` on eth-tester,
`JsonRpcTransport` on anvil): the same reads give the same answers, the simulation's reverts decoded from each
node's error format, the owner cache surviving an id that changes owner (a reorg, or here a snapshot revert),
one batch per close in the common case, and batch coalescing over HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import pytest
from anyio.from_thread import BlockingPortal
from eth_abi.abi import encode
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak

from relayer.chain.client import ChainClient
from relayer.chain.connect import Chain, chain_port
from relayer.chain.deploy import Deployment
from relayer.chain.embedded_rpc import EmbeddedRpc
from relayer.chain.jsonrpc import JsonRpcTransport, RpcCall, RpcPort
from relayer.chain.revert import error_from_rpc_error
from relayer.domain.requests import parse_close_request
from relayer.errors import ChainUnavailableError, PriceSlippageError, SizeDeltaExceedsPositionError
from relayer.services.builder import encode_request
from tests.blocking import Blocking

on_anvil = pytest.mark.parametrize("chain", ["anvil"], indirect=True)


def run(fn: Callable[[], Any]) -> Any:
    return anyio.run(fn)


def batches_sent(port: RpcPort) -> int:
    """How many batches reached the chain through `port` (HTTP requests for a node)."""
    if isinstance(port, EmbeddedRpc):
        return port.batches_answered
    assert isinstance(port, JsonRpcTransport)
    return port.http_requests_sent


@pytest.fixture
def client(chain: Chain, deployment: Deployment, portal: BlockingPortal) -> Iterator[Blocking[ChainClient]]:
    """A started `ChainClient` over the backend's own port, living on this test's loop."""
    chain_client = ChainClient(chain_port(chain), deployment.address)
    portal.call(chain_client.start)
    try:
        yield Blocking(chain_client, portal)
    finally:
        portal.call(chain_client.aclose)


def test_the_port_is_the_backends_own(chain: Chain, client: Blocking[ChainClient]) -> None:
    expected = EmbeddedRpc if chain.is_embedded else JsonRpcTransport
    assert isinstance(client.port, expected)
    assert client.chain_id == chain.w3.eth.chain_id


def test_the_simulation_decodes_the_vaults_revert_on_every_port(
    client: Blocking[ChainClient], open_position: Callable[..., bytes]
) -> None:
    position_id = open_position(size="1")
    over = parse_close_request({"positionId": "0x" + position_id.hex(), "sizeDelta": "1.5"})
    slipped = parse_close_request({"positionId": "0x" + position_id.hex(), "allowedPrice": "96000.01"})

    too_large = client.read_close_state(over.position_id, encode_request(over))
    before = batches_sent(client.port)
    slippage = client.read_close_state(slipped.position_id, encode_request(slipped))

    assert isinstance(too_large.simulation_error, SizeDeltaExceedsPositionError), client.port
    assert isinstance(slippage.simulation_error, PriceSlippageError), client.port
    assert slippage.simulation_error.details["price"] == "96000"
    assert too_large.gas_estimate is None
    # The owner is known now: position, price, head, fees, estimate and nonce of a close are ONE batch.
    assert batches_sent(client.port) - before == 1


def test_the_same_reads_give_the_same_answers_as_web3(
    chain: Chain,
    client: Blocking[ChainClient],
    open_position: Callable[..., bytes],
    accounts: list[LocalAccount],
) -> None:
    position_id = open_position(size="0.5", owner=accounts[2])
    head = client.head()
    block = chain.w3.eth.get_block("latest")
    assert (head.number, head.timestamp) == (block["number"], block["timestamp"])
    assert head.base_fee_wei == block.get("baseFeePerGas")
    assert client.block_hash(0) == "0x" + bytes(chain.w3.eth.get_block(0)["hash"]).hex()
    assert client.balance(accounts[2].address) == chain.w3.eth.get_balance(accounts[2].address)
    assert client.nonce(accounts[2].address, "latest") == chain.w3.eth.get_transaction_count(
        accounts[2].address, "latest"
    )
    assert client.position_owner(position_id) == accounts[2].address
    assert client.position_ids_of(accounts[2].address) == [position_id]
    quote = client.position(position_id)
    assert (quote.position.size, quote.position.is_long) == (5 * 10**17, True)
    assert quote.price_e8 == client.price("BTCUSDT").price_e8 == 96_000 * 10**8


def test_an_id_that_changes_owner_is_simulated_as_the_new_owner(
    chain: Chain,
    client: Blocking[ChainClient],
    open_position: Callable[..., bytes],
    accounts: list[LocalAccount],
) -> None:
    before = chain.snapshot()
    first_id = open_position(owner=accounts[1])
    request = parse_close_request({"positionId": "0x" + first_id.hex()})
    data = encode_request(request)

    first = client.read_close_state(first_id, data)  # caches accounts[1] as the owner
    with chain.lock:
        chain.revert(before)
    assert open_position(owner=accounts[2]) == first_id  # the same id, another owner
    second = client.read_close_state(first_id, data)

    assert first.quote.position.owner == accounts[1].address
    assert second.quote.position.owner == accounts[2].address
    assert second.simulation_error is None  # not NotAuthorized: estimated from the right owner
    assert second.nonce == chain.w3.eth.get_transaction_count(accounts[2].address, "pending")


@on_anvil
def test_concurrent_batches_share_http_requests_and_get_their_own_answers(
    chain: Chain, accounts: list[LocalAccount]
) -> None:
    async def many() -> tuple[list[Any], int]:
        transport = JsonRpcTransport(chain.name, max_in_flight=1)
        try:
            replies = await asyncio.gather(
                *[
                    transport.batch(
                        [RpcCall("eth_getBalance", [a.address, "latest"]), RpcCall("eth_chainId", [])]
                    )
                    for a in accounts * 5
                ]
            )
            return replies, transport.http_requests_sent
        finally:
            await transport.aclose()

    replies, sent = run(many)
    assert len(replies) == len(accounts) * 5
    for account, (balance, chain_id) in zip(accounts * 5, replies, strict=True):
        assert int(balance.value(), 16) == chain.w3.eth.get_balance(account.address)
        assert int(chain_id.value(), 16) == chain.w3.eth.chain_id
    assert sent < len(replies)


def test_the_nodes_error_objects_become_relayer_errors(chain: Chain, deployment: Deployment) -> None:
    async def call(method: str, *params: Any) -> Any:
        port = chain_port(chain)
        try:
            (reply,) = await port.batch([RpcCall(method, list(params))])
            return reply.value()
        finally:
            await port.aclose()

    with pytest.raises(ChainUnavailableError) as info:
        run(lambda: call("eth_noSuchMethod"))
    assert info.value.details["nodeCode"] == -32601


def test_rpc_error_objects_in_the_shapes_providers_use() -> None:
    revert = keccak(text="PriceSlippage(uint256,uint256)")[:4] + encode(["uint256", "uint256"], [1, 2])
    slippage = "0x" + revert.hex()
    assert isinstance(
        error_from_rpc_error({"code": 3, "message": "execution reverted", "data": slippage}),
        PriceSlippageError,
    )
    assert isinstance(
        error_from_rpc_error({"code": -32000, "message": "x", "data": {"data": slippage}}), PriceSlippageError
    )
    assert error_from_rpc_error({"code": 3, "message": "execution reverted"}).code == "execution_reverted"
    assert (
        error_from_rpc_error({"code": 3, "message": "execution reverted", "data": "0xabc"}).code
        == "execution_reverted"
    )
    down = error_from_rpc_error({"code": -32005, "message": "rate limited"})
    assert (down.code, down.http_status, down.retryable) == ("chain_unavailable", 503, True)
