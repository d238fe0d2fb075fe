"""`ChainClient`, the relay's window on the chain: the node's fee suggestion (`eth_maxPriorityFeePerGas`)
asked once per block, the default tip when the node lacks the method, and one retry policy for a node that
does not answer; on the in-process chain, with the node's answer scripted where it matters."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from anyio.from_thread import BlockingPortal
from web3.exceptions import MethodUnavailable
from web3.types import RPCResponse

from relayer.chain.client import ChainClient
from relayer.chain.connect import Chain, chain_port
from relayer.chain.deploy import Deployment
from relayer.chain.embedded_rpc import EmbeddedRpc
from relayer.chain.jsonrpc import JsonRpcTransport, RpcCall, RpcPort, RpcReply
from relayer.chain.node_errors import Kind
from relayer.constants import BASE_FEE_MULTIPLIER, DEFAULT_PRIORITY_FEE_WEI
from relayer.domain.blocks import ChainHead
from relayer.domain.fees import Fees
from relayer.errors import ChainUnavailableError
from tests.blocking import Blocking

pytestmark = pytest.mark.parametrize("chain", ["eth-tester"], indirect=True)

GWEI = 10**9


@pytest.fixture
def asked(chain: Chain, monkeypatch: pytest.MonkeyPatch) -> Callable[[Any], list[str]]:
    """Script the node's answer to `eth_maxPriorityFeePerGas` (a value, or an exception to raise); returns the
    log of those requests. The embedded chain's port asks web3 like this too, so the script sits below it."""

    def _script(answer: Any) -> list[str]:
        log: list[str] = []
        real = chain.w3.manager.request_blocking

        def request_blocking(method: str, params: Any, *args: Any, **kwargs: Any) -> Any:
            if method != "eth_maxPriorityFeePerGas":
                return real(method, params, *args, **kwargs)  # type: ignore[arg-type]
            log.append(method)
            if isinstance(answer, BaseException):
                raise answer
            return answer

        monkeypatch.setattr(chain.w3.manager, "request_blocking", request_blocking)
        return log

    return _script


class FlakyPort:
    """A port in front of another that does not answer its first `failures` batches; counts the attempts
    and when they came (the loop's clock)."""

    def __init__(self, inner: RpcPort, failures: int) -> None:
        self.inner = inner
        self.failures = failures
        self.attempts: list[float] = []

    async def batch(self, calls: Sequence[RpcCall]) -> list[RpcReply]:
        self.attempts.append(asyncio.get_running_loop().time())
        if len(self.attempts) <= self.failures:
            raise ChainUnavailableError("the node did not answer: ConnectError")
        return await self.inner.batch(calls)

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.fixture
def make_client(
    chain: Chain, deployment: Deployment, portal: BlockingPortal
) -> Iterator[Callable[..., Blocking[ChainClient]]]:
    """Factory: a `ChainClient` on `port` (default: the chain's own), made on the test's loop, started unless
    `start=False`, closed after the test."""
    made: list[ChainClient] = []

    def _make(
        port: Callable[[], RpcPort] | None = None, *, start: bool = True, **options: Any
    ) -> Blocking[ChainClient]:
        async def make() -> ChainClient:
            client = ChainClient(port() if port else chain_port(chain), deployment.address, **options)
            made.append(client)
            if start:
                await client.start()
            return client

        return Blocking(portal.call(make), portal)

    yield _make
    for client in made:
        portal.call(client.aclose)


def _dead_url() -> str:
    """A loopback URL nothing listens on: every connection is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def test_relayed_fees_tip_what_the_node_suggests_once_per_block(
    asked: Callable[[Any], list[str]], make_client: Callable[..., Blocking[ChainClient]]
) -> None:
    log = asked(hex(3 * GWEI))
    client = make_client()
    head = ChainHead(number=10, timestamp=1, base_fee_wei=7 * GWEI)
    assert client.fees(head) == Fees(BASE_FEE_MULTIPLIER * 7 * GWEI + 3 * GWEI, 3 * GWEI)
    assert client.fees(head) == client.fees(head)
    assert len(log) == 1  # cached for the block
    client.fees(ChainHead(number=11, timestamp=2, base_fee_wei=7 * GWEI))
    assert len(log) == 2  # asked again for the next one


def test_the_suggestion_rides_along_with_the_head(
    chain: Chain, asked: Callable[[Any], list[str]], make_client: Callable[..., Blocking[ChainClient]]
) -> None:
    log = asked(hex(3 * GWEI))
    port = EmbeddedRpc(chain)
    client = make_client(lambda: port)
    before = port.batches_answered
    head, fees = client.head_and_fees()
    assert (port.batches_answered - before, len(log)) == (1, 1)  # one batch: the block and the suggestion
    assert fees == Fees(BASE_FEE_MULTIPLIER * int(head.base_fee_wei) + 3 * GWEI, 3 * GWEI)
    assert client.fees(head) == fees  # known for this block: nothing asked
    assert (port.batches_answered - before, len(log)) == (1, 1)
    assert client.head_and_fees() == (head, fees)
    assert port.batches_answered - before == 2  # one round trip again


def test_a_node_without_the_method_gets_the_default_tip(
    asked: Callable[[Any], list[str]], make_client: Callable[..., Blocking[ChainClient]]
) -> None:
    message = "the method eth_maxPriorityFeePerGas does not exist"
    response: RPCResponse = {"jsonrpc": "2.0", "id": 1, "error": {"code": -32601, "message": message}}
    asked(MethodUnavailable(message, rpc_response=response))
    client = make_client()
    fees = client.fees(ChainHead(number=10, timestamp=1, base_fee_wei=GWEI))
    assert fees.max_priority_fee_per_gas_wei == DEFAULT_PRIORITY_FEE_WEI


def test_a_malformed_suggestion_means_the_node_is_unavailable(
    asked: Callable[[Any], list[str]], make_client: Callable[..., Blocking[ChainClient]]
) -> None:
    asked(None)
    client = make_client(backoff_s=0.0)
    with pytest.raises(ChainUnavailableError):
        client.fees(ChainHead(number=10, timestamp=1, base_fee_wei=GWEI))


def test_the_relay_reads_the_same_head_as_the_builder(
    chain: Chain, make_client: Callable[..., Blocking[ChainClient]]
) -> None:
    head = make_client().head()
    block = chain.w3.eth.get_block("latest")
    assert head == ChainHead(block["number"], block["timestamp"], block["baseFeePerGas"])


def test_an_unreachable_node_is_retried_with_doubling_backoff_then_unavailable(
    make_client: Callable[..., Blocking[ChainClient]],
) -> None:
    url = _dead_url()
    flaky: list[FlakyPort] = []

    def port() -> RpcPort:
        flaky.append(FlakyPort(JsonRpcTransport(url, timeout_s=2), failures=0))  # a real refused connection
        return flaky[0]

    client = make_client(port, start=False, retries=3, backoff_s=0.02)
    with pytest.raises(ChainUnavailableError) as raised:
        client.head()
    assert raised.value.message == "the node did not answer after 3 attempts"
    assert raised.value.http_status == 503
    assert "ConnectError" in raised.value.details["reason"]
    first, second, third = flaky[0].attempts  # three attempts in all, none more
    assert second - first >= 0.02 * 0.9
    assert third - second >= 0.04 * 0.9  # the backoff doubles


def test_a_node_back_within_the_retries_answers_the_call(
    chain: Chain, make_client: Callable[..., Blocking[ChainClient]]
) -> None:
    flaky = FlakyPort(EmbeddedRpc(chain), failures=2)
    client = make_client(lambda: flaky, start=False, retries=3, backoff_s=0.0)
    head = client.head()
    assert len(flaky.attempts) == 3
    assert head.number == chain.w3.eth.block_number


def test_a_broadcast_is_never_retried_by_the_client(
    make_client: Callable[..., Blocking[ChainClient]],
) -> None:
    """The sender decides about re-sending (it journals first): the client reports one refusal."""
    flaky: list[FlakyPort] = []

    def port() -> RpcPort:
        flaky.append(FlakyPort(JsonRpcTransport(_dead_url(), timeout_s=2), failures=0))
        return flaky[0]

    client = make_client(port, start=False, retries=3, backoff_s=0.0)
    refusal = client.send_raw(b"\x02\x01")
    assert refusal is not None
    assert refusal.kind is Kind.UNAVAILABLE
    assert len(flaky[0].attempts) == 1
