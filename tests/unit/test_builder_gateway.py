"""The chain gateways against real nodes: the simulation's reverts decoded from each node's error format, the
owner cache surviving an id that changes owner (a reorg, or here a snapshot revert), and batch coalescing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from eth_abi.abi import encode
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak

from relayer.chain.connect import Chain
from relayer.chain.deploy import Deployment
from relayer.chain.gateway import ChainGateway
from relayer.chain.jsonrpc import JsonRpcTransport, RpcCall
from relayer.chain.jsonrpc_gateway import JsonRpcGateway
from relayer.chain.revert import error_from_rpc_error
from relayer.chain.web3_gateway import Web3Gateway
from relayer.domain.requests import parse_close_request
from relayer.errors import ChainUnavailableError, PriceSlippageError, SizeDeltaExceedsPositionError
from relayer.services.builder import encode_request

on_anvil = pytest.mark.parametrize("chain", ["anvil"], indirect=True)


def gateways(chain: Chain, deployment: Deployment) -> list[ChainGateway]:
    found: list[ChainGateway] = [Web3Gateway(chain.w3, deployment.address)]
    if not chain.is_embedded:
        found.append(JsonRpcGateway.connect(chain.name, deployment.address))
    return found


def run(fn: Callable[[], Any]) -> Any:
    return anyio.run(fn)


def test_the_simulation_decodes_the_vaults_revert_on_every_gateway(
    chain: Chain, deployment: Deployment, open_position: Callable[..., bytes]
) -> None:
    position_id = open_position(size="1")
    over = parse_close_request({"positionId": "0x" + position_id.hex(), "sizeDelta": "1.5"})
    slipped = parse_close_request({"positionId": "0x" + position_id.hex(), "allowedPrice": "96000.01"})
    for gateway in gateways(chain, deployment):

        async def read(gw: ChainGateway = gateway) -> Any:
            await gw.start()
            try:
                return [await gw.read_close_state(r.position_id, encode_request(r)) for r in (over, slipped)]
            finally:
                await gw.aclose()

        too_large, slippage = run(read)
        assert isinstance(too_large.simulation_error, SizeDeltaExceedsPositionError), gateway
        assert isinstance(slippage.simulation_error, PriceSlippageError), gateway
        assert slippage.simulation_error.details["price"] == "96000"
        assert too_large.gas_estimate is None


@on_anvil
def test_an_id_that_changes_owner_is_simulated_as_the_new_owner(
    chain: Chain, deployment: Deployment, open_position: Callable[..., bytes], accounts: list[LocalAccount]
) -> None:
    before = chain.snapshot()
    first_id = open_position(owner=accounts[1])
    request = parse_close_request({"positionId": "0x" + first_id.hex()})
    data = encode_request(request)

    async def read_twice() -> Any:
        gateway = JsonRpcGateway.connect(chain.name, deployment.address)
        await gateway.start()
        try:
            first = await gateway.read_close_state(first_id, data)  # caches accounts[1] as the owner
            chain.revert(before)
            assert open_position(owner=accounts[2]) == first_id  # the same id, another owner
            return first, await gateway.read_close_state(first_id, data)
        finally:
            await gateway.aclose()

    first, second = run(read_twice)
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


@on_anvil
def test_the_nodes_error_objects_become_relayer_errors(chain: Chain, deployment: Deployment) -> None:
    async def call(method: str, *params: Any) -> Any:
        transport = JsonRpcTransport(chain.name)
        try:
            return await transport.call(method, *params)
        finally:
            await transport.aclose()

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
