"""JSON-RPC over HTTP with batching: the transport under `relayer.chain.jsonrpc_gateway.JsonRpcGateway`.

`JsonRpcTransport.batch` sends calls as one JSON-RPC batch, and batches from concurrent requests share HTTP
requests while the node is busy. Each call's answer is an `RpcReply`: its result decoded on demand (quantity,
data, block), or the node's error object raised as a `RelayerError` (reverts decoded by selector in
`relayer.chain.revert`). A node that does not answer, or answers something that is not JSON-RPC, is
`ChainUnavailableError`.

The HTTP client is aiohttp's (web3's own dependency): its C parser costs about a quarter of httpx's CPU per
request (0.18 ms against 0.65 ms a round trip to anvil on the dev box), and under load the relayer's CPU is
what bounds `POST /api/closeposition` (`scripts/bench.py build`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from relayer.chain.decoding import hex_data
from relayer.chain.revert import error_from_rpc_error
from relayer.constants import DEFAULT_RPC_TIMEOUT_S, MAX_RPC_CALLS_PER_BATCH, MAX_RPC_REQUESTS_IN_FLIGHT
from relayer.domain.blocks import ChainHead, head_from_block, quantity
from relayer.errors import ChainUnavailableError


@dataclass(frozen=True)
class RpcCall:
    """One JSON-RPC call: its method and positional params."""

    method: str
    params: list[Any]


@dataclass(frozen=True)
class RpcReply:
    """One call's answer: `result`, or the node's JSON-RPC `error` object."""

    result: Any = None
    error: Mapping[str, Any] | None = None

    def value(self) -> Any:
        """The result, or the error as a `RelayerError` (reverts decoded by selector)."""
        if self.error is not None:
            raise error_from_rpc_error(self.error)
        return self.result

    def quantity(self) -> int:
        """The result as a JSON-RPC quantity (chain id, gas, nonce, fee).

        Raises:
            RelayerError: the call's error; `ChainUnavailableError` for a result that is not a quantity.
        """
        return quantity(self.value())

    def data(self) -> bytes:
        """The result as JSON-RPC data (`eth_call`, `eth_getCode`).

        Raises:
            RelayerError: the call's error; `ChainUnavailableError` for a result that is not 0x-hex.
        """
        return hex_data(self.value())

    def head(self) -> ChainHead:
        """The result as a block (`eth_getBlockByNumber`).

        Raises:
            RelayerError: the call's error; `ChainUnavailableError` for null or a malformed block.
        """
        return head_from_block(self.value())


class RpcPort(Protocol):
    """THE chain port: JSON-RPC calls in, replies out, in order. Everything the relayer asks a chain goes
    through one of its two adapters, `JsonRpcTransport` (any node over HTTP, batched) and
    `relayer.chain.embedded_rpc.EmbeddedRpc` (the in-process eth-tester chain, answering like a node);
    `relayer.chain.client.ChainClient` is the one reader above both."""

    async def batch(self, calls: Sequence[RpcCall]) -> list[RpcReply]:
        """The replies to `calls`, in order; per-call errors are in the replies, not raised.

        Raises:
            ChainUnavailableError: the chain did not answer at all.
        """
        ...

    async def aclose(self) -> None: ...


_Waiter = tuple[list[RpcCall], "asyncio.Future[list[RpcReply]]"]


def _error_object(error: Any) -> Mapping[str, Any]:
    """A JSON-RPC error as an object, even from nodes that send a bare string."""
    return error if isinstance(error, dict) else {"message": str(error)[:300]}


def _failure_name(exc: BaseException) -> str:
    """How the node failed to answer, in the names the error's `reason` has always had (httpx's, the
    client before aiohttp): `ConnectError`, `ConnectTimeout`, `ReadTimeout`, `RemoteProtocolError`,
    `NetworkError`."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return "ConnectTimeout"
    if isinstance(exc, TimeoutError):
        return "ReadTimeout"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "ConnectError"
    if isinstance(
        exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError | aiohttp.ClientResponseError
    ):
        return "RemoteProtocolError"
    return "NetworkError"


class JsonRpcTransport:
    """JSON-RPC over HTTP with one persistent connection pool (opened on first use, in the loop that uses it).

    `batch(calls)` sends its calls as one JSON-RPC batch. While `max_in_flight` HTTP requests are already out,
    further batches wait and then leave together in the next HTTP request (up to `max_calls` calls), so under
    load the node sees a few large requests instead of many small ones, and no caller waits longer than one
    round trip for a slot.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = DEFAULT_RPC_TIMEOUT_S,
        max_in_flight: int = MAX_RPC_REQUESTS_IN_FLIGHT,
        max_calls: int = MAX_RPC_CALLS_PER_BATCH,
    ) -> None:
        self.url = url
        # Per operation, as before with httpx: connecting, and each wait for the node's bytes.
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout_s, sock_read=timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self._proxy: tuple[Any, aiohttp.BasicAuth | None] = (None, None)
        self._max_in_flight = max_in_flight
        self._max_calls = max_calls
        self._waiting: deque[_Waiter] = deque()
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.http_requests_sent = 0
        """How many HTTP requests carried the batches so far (fewer than `batch` calls under load)."""

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        # Made in the running loop (aiohttp binds a session to it), once. The proxy variables (HTTP_PROXY,
        # NO_PROXY...) are honoured as httpx did, read once here: aiohttp's `trust_env` would read them (and
        # ~/.netrc) in a worker thread on every request.
        if self._session is None:
            with contextlib.suppress(LookupError, ValueError):  # no proxy for it, or not a URL
                self._proxy = get_env_proxy_for_url(URL(self.url))
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_in_flight),
                timeout=self._timeout,
                headers={"content-type": "application/json"},
            )
        return self._session

    async def call(self, method: str, *params: Any) -> Any:
        """One call's result (raises its error as a `RelayerError`)."""
        (reply,) = await self.batch([RpcCall(method, list(params))])
        return reply.value()

    async def batch(self, calls: Sequence[RpcCall]) -> list[RpcReply]:
        """The replies to `calls`, in order; per-call errors are in the replies, not raised.

        Raises:
            ChainUnavailableError: the node did not answer, or answered something that is not JSON-RPC.
        """
        future: asyncio.Future[list[RpcReply]] = asyncio.get_running_loop().create_future()
        self._waiting.append((list(calls), future))
        self._pump()
        return await future

    def _pump(self) -> None:
        while self._waiting and self._in_flight < self._max_in_flight:
            group: list[_Waiter] = []
            size = 0
            while self._waiting and (not group or size + len(self._waiting[0][0]) <= self._max_calls):
                waiter = self._waiting.popleft()
                group.append(waiter)
                size += len(waiter[0])
            self._in_flight += 1
            task = asyncio.create_task(self._send(group))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, group: list[_Waiter]) -> None:
        try:
            payload = [
                {"jsonrpc": "2.0", "id": index, "method": call.method, "params": call.params}
                for index, call in enumerate(call for calls, _ in group for call in calls)
            ]
            try:
                replies = await self._post(payload)
            except Exception as error:  # every waiter gets it: none may hang (a bug surfaces as a 500 there)
                for _, future in group:
                    if not future.done():
                        future.set_exception(error)
                return
            start = 0
            for calls, future in group:
                if not future.done():  # the caller may have gone (client disconnected)
                    future.set_result(replies[start : start + len(calls)])
                start += len(calls)
        finally:
            self._in_flight -= 1
            self._pump()

    async def _post(self, payload: list[dict[str, Any]]) -> list[RpcReply]:
        self.http_requests_sent += 1
        data = json.dumps(payload, separators=(",", ":")).encode()
        try:
            session, (proxy, proxy_auth) = self._client(), self._proxy
            async with session.post(
                self.url, data=data, allow_redirects=False, proxy=proxy, proxy_auth=proxy_auth
            ) as response:
                status, content = response.status, await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ChainUnavailableError(f"the node did not answer: {_failure_name(exc)}") from exc
        # Errors never carry the URL: hosted nodes put their API key in it, and details reach the client.
        if status != 200:
            raise ChainUnavailableError(f"the node answered HTTP {status}")
        try:
            body = json.loads(content)
        except ValueError as exc:
            raise ChainUnavailableError("the node's answer is not JSON") from exc
        if isinstance(body, dict) and "error" in body:  # the node refused the whole batch
            return [RpcReply(error=_error_object(body["error"]))] * len(payload)
        if not isinstance(body, list):
            raise ChainUnavailableError("the node's answer is not a JSON-RPC batch reply")
        by_id = {item.get("id"): item for item in body if isinstance(item, dict)}
        missing = {"code": -32603, "message": "the node sent no reply for this call"}
        replies = []
        for index in range(len(payload)):
            item = by_id.get(index)
            if item is None:
                replies.append(RpcReply(error=missing))
            elif item.get("error") is not None:
                replies.append(RpcReply(error=_error_object(item["error"])))
            else:
                replies.append(RpcReply(result=item.get("result")))
        return replies
