"""The chain I/O the transaction builder and the REST API need, behind one small `ChainGateway` protocol.

Two implementations:

- `JsonRpcGateway`: async, for any JSON-RPC node. Everything one close needs (the position with its price,
  the latest block, the gas estimate from the owner, which doubles as the simulation, and the owner's pending
  nonce) goes out as ONE JSON-RPC batch, and batches from concurrent requests share HTTP requests when the
  node is busy. Owners are cached per position id (they never change), so a build is one round trip.
- `Web3Gateway`: the same reads over any `Web3` (the embedded eth-tester chain in particular). py-evm is not
  thread-safe, so every access goes through one lock, in a worker thread when called from async code.

Node errors leave this module as `RelayerError`s: reverts decoded by `relayer.chain.revert`, unreachable nodes
as `ChainUnavailableError`.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import anyio.to_thread
import httpx
from eth_abi.abi import decode
from eth_abi.exceptions import DecodingError
from eth_utils.address import to_checksum_address
from web3 import Web3
from web3.exceptions import Web3RPCError
from web3.types import RPCEndpoint, TxParams

from relayer.chain.artifact import load_artifact
from relayer.chain.revert import error_from_rpc_error, translate
from relayer.chain.vault import MarketPrice, call_chain
from relayer.constants import (
    DEFAULT_RPC_TIMEOUT_S,
    MAX_PRICE_AGE_CACHE_S,
    MAX_RPC_CALLS_PER_BATCH,
    MAX_RPC_REQUESTS_IN_FLIGHT,
    POSITION_OWNER_CACHE_SIZE,
)
from relayer.domain import calldata
from relayer.domain.blocks import ChainHead as ChainHead  # re-exported: the builder's reads return it
from relayer.domain.blocks import head_from_block, quantity
from relayer.domain.fees import Fees, node_fees
from relayer.domain.markets import bytes32_to_symbol, symbol_to_bytes32
from relayer.domain.positions import Position, TriggerOrder
from relayer.errors import ChainUnavailableError, ExecutionRevertedError, RelayerError, VaultNotDeployedError

T = TypeVar("T")

_WORD = 32
_HEX_DATA = re.compile(r"0x(?:[0-9a-fA-F]{2})*", re.ASCII)
_POSITION_WITH_PRICE_WORDS = 11  # PositionView (9 static words) + price + updatedAt


# --- what the gateway returns -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PositionQuote:
    """A position with its market's oracle price, read in one call (`getPositionWithPrice`)."""

    position: Position
    price_e8: int
    price_updated_at: int


@dataclass(frozen=True)
class CloseState:
    """Everything `TransactionBuilder` checks and prices a close against, read together.

    `gas_estimate` and `simulation_error` are both None when nothing was simulated (no open position);
    `nonce` is then 0.
    """

    chain_id: int
    quote: PositionQuote
    head: ChainHead
    max_price_age_s: int
    fees: Fees
    nonce: int
    gas_estimate: int | None
    simulation_error: RelayerError | None


@dataclass(frozen=True)
class MarketsState:
    head: ChainHead
    max_price_age_s: int
    prices: list[MarketPrice]


class ChainGateway(Protocol):
    """The reads the builder and the API need; one implementation per kind of node."""

    @property
    def vault_address(self) -> str: ...

    @property
    def chain_id(self) -> int:
        """Cached by `start()`."""
        ...

    async def start(self) -> None:
        """Read the chain id and check the vault's code once.

        Raises:
            VaultNotDeployedError: the address does not hold this build of the vault.
            ChainUnavailableError: the node does not answer.
        """
        ...

    async def aclose(self) -> None: ...

    async def head(self) -> ChainHead: ...

    async def read_close_state(self, position_id: bytes, data: bytes) -> CloseState:
        """The position, price, head, fees, and `data` simulated (gas-estimated) from the position's owner."""
        ...

    async def read_positions(
        self, position_ids: Sequence[bytes]
    ) -> tuple[ChainHead, list[PositionQuote]]: ...

    async def position_ids_of(self, owner: str) -> list[bytes]: ...

    async def read_markets(self) -> MarketsState: ...


# --- pure ABI and JSON-RPC value decoding (shared by both gateways) -----------------------------------------


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


def _decode_bytes32_array(data: bytes) -> list[bytes]:
    try:
        (values,) = decode(["bytes32[]"], data)
    except DecodingError:
        raise ChainUnavailableError("the node's answer is not an ABI-encoded bytes32[]") from None
    return [bytes(value) for value in values]


def _decode_uint(data: bytes) -> int:
    return int.from_bytes(data[:_WORD], "big")


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


def _expired(cached: tuple[float, int] | None) -> bool:
    return cached is None or time.monotonic() - cached[0] > MAX_PRICE_AGE_CACHE_S


def _hex(data: bytes) -> str:
    return "0x" + data.hex()


class _OwnerCache:
    """Position id -> owner, bounded (least recently used out). Owners never change for an id on one chain
    history; after a reorg or a test's snapshot revert an id can name another owner, so readers compare the
    cached owner with the one they just read and retry on a mismatch."""

    def __init__(self, size: int = POSITION_OWNER_CACHE_SIZE) -> None:
        self._size = size
        self._owners: OrderedDict[bytes, str] = OrderedDict()

    def get(self, position_id: bytes) -> str | None:
        owner = self._owners.get(position_id)
        if owner is not None:
            self._owners.move_to_end(position_id)
        return owner

    def put(self, position_id: bytes, owner: str) -> None:
        self._owners[position_id] = owner
        self._owners.move_to_end(position_id)
        if len(self._owners) > self._size:
            self._owners.popitem(last=False)


# --- JSON-RPC transport with batching -----------------------------------------------------------------------


@dataclass(frozen=True)
class RpcCall:
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


_Waiter = tuple[list[RpcCall], "asyncio.Future[list[RpcReply]]"]


def _error_object(error: Any) -> Mapping[str, Any]:
    """A JSON-RPC error as an object, even from nodes that send a bare string."""
    return error if isinstance(error, dict) else {"message": str(error)[:300]}


class JsonRpcTransport:
    """JSON-RPC over HTTP with one persistent connection pool.

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
        self._client = httpx.AsyncClient(
            timeout=timeout_s,
            limits=httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight),
            headers={"content-type": "application/json"},
        )
        self._max_in_flight = max_in_flight
        self._max_calls = max_calls
        self._waiting: deque[_Waiter] = deque()
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.http_requests_sent = 0
        """How many HTTP requests carried the batches so far (fewer than `batch` calls under load)."""

    async def aclose(self) -> None:
        await self._client.aclose()

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
        try:
            response = await self._client.post(self.url, content=json.dumps(payload, separators=(",", ":")))
        except httpx.HTTPError as exc:
            raise ChainUnavailableError(f"the node did not answer: {type(exc).__name__}") from exc
        # Errors never carry the URL: hosted nodes put their API key in it, and details reach the client.
        if response.status_code != 200:
            raise ChainUnavailableError(f"the node answered HTTP {response.status_code}")
        try:
            body = json.loads(response.content)
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


# --- the JSON-RPC gateway -----------------------------------------------------------------------------------


class JsonRpcGateway:
    """`ChainGateway` over any JSON-RPC node, one batch per close in the common case."""

    def __init__(self, transport: JsonRpcTransport, vault_address: str) -> None:
        self.transport = transport
        self._vault = to_checksum_address(vault_address)
        self._chain_id: int | None = None
        self._legacy = False
        self._owners = _OwnerCache()
        self._max_age: tuple[float, int] | None = None  # (monotonic time read, seconds)
        self._fee_data: tuple[int, int | None] = (-1, None)  # (block number, wei; None: no suggestion)
        self._last_head_number = 0

    @classmethod
    def connect(
        cls, url: str, vault_address: str, *, timeout_s: float = DEFAULT_RPC_TIMEOUT_S
    ) -> JsonRpcGateway:
        return cls(JsonRpcTransport(url, timeout_s=timeout_s), vault_address)

    @property
    def vault_address(self) -> str:
        return self._vault

    @property
    def chain_id(self) -> int:
        if self._chain_id is None:
            raise RuntimeError("JsonRpcGateway.start() has not run")
        return self._chain_id

    async def aclose(self) -> None:
        await self.transport.aclose()

    async def start(self) -> None:
        replies = await self.transport.batch(
            [
                RpcCall("eth_chainId", []),
                RpcCall("eth_getCode", [self._vault, "latest"]),
                RpcCall("eth_getBlockByNumber", ["latest", False]),
            ]
        )
        chain_id, code, head = replies[0].quantity(), replies[1].data(), replies[2].head()
        if not load_artifact().matches_runtime_code(code):
            raise VaultNotDeployedError(
                "no vault with the expected code at this address", vaultAddress=self._vault
            )
        self._chain_id = chain_id
        self._legacy = head.base_fee_wei is None

    async def head(self) -> ChainHead:
        (reply,) = await self.transport.batch([RpcCall("eth_getBlockByNumber", ["latest", False])])
        return self._note_head(reply)

    async def read_close_state(self, position_id: bytes, data: bytes) -> CloseState:
        owner = self._owners.get(position_id)
        view = self._view_call(calldata.encode_call("getPositionWithPrice", position_id))
        head_call = RpcCall("eth_getBlockByNumber", ["latest", False])
        calls = [view, head_call]
        extra = self._refresh_calls()
        calls += extra
        if owner is not None:
            calls += self._owner_calls(owner, data)
        replies = await self.transport.batch(calls)

        quote = decode_position_with_price(position_id, replies[0].data())
        head = self._note_head(replies[1])
        self._apply_refresh(extra, replies[2 : 2 + len(extra)], head)
        owner_replies = replies[2 + len(extra) :]
        actual = quote.position.owner
        if not quote.position.exists or not quote.position.is_open:
            return self._state(quote, head, 0, None, None)
        if (
            owner != actual
        ):  # first sight of this id (or it now names another owner): simulate as the right one
            self._owners.put(position_id, actual)
            owner_replies = await self.transport.batch(self._owner_calls(actual, data))
        estimate, nonce = owner_replies
        nonce_value = nonce.quantity()
        try:
            return self._state(quote, head, nonce_value, estimate.quantity(), None)
        except RelayerError as error:
            return self._state(quote, head, nonce_value, None, error)

    async def read_positions(self, position_ids: Sequence[bytes]) -> tuple[ChainHead, list[PositionQuote]]:
        calls = [RpcCall("eth_getBlockByNumber", ["latest", False])]
        calls += [self._view_call(calldata.encode_call("getPositionWithPrice", pid)) for pid in position_ids]
        replies = await self._batch_chunked(calls)
        head = self._note_head(replies[0])
        quotes = [
            decode_position_with_price(pid, reply.data())
            for pid, reply in zip(position_ids, replies[1:], strict=True)
        ]
        return head, quotes

    async def position_ids_of(self, owner: str) -> list[bytes]:
        (reply,) = await self.transport.batch(
            [self._view_call(calldata.encode_call("positionIdsOf", to_checksum_address(owner)))]
        )
        return _decode_bytes32_array(reply.data())

    async def read_markets(self) -> MarketsState:
        first = await self.transport.batch(
            [
                self._view_call(calldata.encode_call("markets")),
                self._view_call(calldata.encode_call("maxPriceAge")),
                RpcCall("eth_getBlockByNumber", ["latest", False]),
            ]
        )
        symbols = [bytes32_to_symbol(m) for m in _decode_bytes32_array(first[0].data())]
        max_age = _decode_uint(first[1].data())
        head = self._note_head(first[2])
        replies = await self._batch_chunked(
            [self._view_call(calldata.encode_call("priceOf", symbol_to_bytes32(s))) for s in symbols]
        )
        prices = []
        for symbol, reply in zip(symbols, replies, strict=True):
            raw = reply.data()
            prices.append(MarketPrice(symbol, _decode_uint(raw), _decode_uint(raw[_WORD:])))
        return MarketsState(head, max_age, prices)

    # -- internals --

    def _state(
        self, quote: PositionQuote, head: ChainHead, nonce: int, gas: int | None, error: RelayerError | None
    ) -> CloseState:
        return CloseState(
            chain_id=self.chain_id,
            quote=quote,
            head=head,
            max_price_age_s=self._max_age[1] if self._max_age else 0,
            fees=node_fees(head.base_fee_wei, self._fee_data[1]),
            nonce=nonce,
            gas_estimate=gas,
            simulation_error=error,
        )

    def _view_params(self, data: bytes) -> list[Any]:
        return [{"to": self._vault, "data": _hex(data)}, "latest"]

    def _view_call(self, data: bytes) -> RpcCall:
        return RpcCall("eth_call", self._view_params(data))

    def _owner_calls(self, owner: str, data: bytes) -> list[RpcCall]:
        return [
            RpcCall("eth_estimateGas", [{"from": owner, "to": self._vault, "data": _hex(data)}]),
            RpcCall("eth_getTransactionCount", [owner, "pending"]),
        ]

    def _refresh_calls(self) -> list[RpcCall]:
        """Cached values due for a refresh ride along in the request's batch: no extra round trip."""
        calls = []
        if _expired(self._max_age):
            calls.append(self._view_call(calldata.encode_call("maxPriceAge")))
        if self._fee_data[0] != self._last_head_number:
            calls.append(RpcCall("eth_gasPrice" if self._legacy else "eth_maxPriorityFeePerGas", []))
        return calls

    def _apply_refresh(self, calls: list[RpcCall], replies: list[RpcReply], head: ChainHead) -> None:
        for call, reply in zip(calls, replies, strict=True):
            if call.method == "eth_call":
                self._max_age = (time.monotonic(), _decode_uint(reply.data()))
            elif reply.error is None:
                self._fee_data = (head.number, reply.quantity())
            else:  # a node without eth_maxPriorityFeePerGas: no suggestion, the default tip for this block
                self._fee_data = (head.number, None)

    def _note_head(self, reply: RpcReply) -> ChainHead:
        head = reply.head()
        self._last_head_number = max(self._last_head_number, head.number)
        return head

    async def _batch_chunked(self, calls: list[RpcCall]) -> list[RpcReply]:
        replies: list[RpcReply] = []
        for start in range(0, len(calls), MAX_RPC_CALLS_PER_BATCH):
            replies += await self.transport.batch(calls[start : start + MAX_RPC_CALLS_PER_BATCH])
        return replies


# --- the web3 (embedded chain) gateway ----------------------------------------------------------------------


class Web3Gateway:
    """`ChainGateway` over a `Web3` object, serialized by one lock (py-evm is not thread-safe).

    The `*_sync` methods are the implementation and serve the synchronous library API; the async methods run
    them in a worker thread so the event loop never blocks on py-evm.
    """

    def __init__(self, w3: Web3, vault_address: str, *, lock: threading.RLock | None = None) -> None:
        self.w3 = w3
        self.lock = lock or threading.RLock()
        self._vault = to_checksum_address(vault_address)
        self._chain_id: int | None = None
        self._max_age: tuple[float, int] | None = None  # (monotonic time read, seconds)
        self._fee_data: tuple[int, int | None] = (-1, None)  # (block number, wei; None: no suggestion)

    @property
    def vault_address(self) -> str:
        return self._vault

    @property
    def chain_id(self) -> int:
        if self._chain_id is None:
            raise RuntimeError("Web3Gateway.start() has not run")
        return self._chain_id

    @property
    def started(self) -> bool:
        return self._chain_id is not None

    # -- synchronous implementation --

    def start_sync(self) -> None:
        with self.lock:
            code = call_chain(lambda: self.w3.eth.get_code(self._vault))
            if not load_artifact().matches_runtime_code(bytes(code)):
                raise VaultNotDeployedError(
                    "no vault with the expected code at this address", vaultAddress=self._vault
                )
            self._chain_id = int(call_chain(lambda: self.w3.eth.chain_id))

    def head_sync(self) -> ChainHead:
        with self.lock:
            return head_from_block(call_chain(lambda: self.w3.eth.get_block("latest")))

    def read_close_state_sync(self, position_id: bytes, data: bytes) -> CloseState:
        with self.lock:
            quote = self._quote(position_id)
            head = head_from_block(call_chain(lambda: self.w3.eth.get_block("latest")))
            fees = node_fees(head.base_fee_wei, self._fee_data_for(head))
            nonce, gas, error = 0, None, None
            if quote.position.is_open:
                owner = to_checksum_address(quote.position.owner)
                tx: TxParams = {"from": owner, "to": self._vault, "data": data}
                try:
                    gas = int(self.w3.eth.estimate_gas(tx))
                except Exception as exc:
                    error = translate(exc)
                    if error is None:
                        raise
                nonce = int(call_chain(lambda: self.w3.eth.get_transaction_count(owner, "pending")))
            return CloseState(self.chain_id, quote, head, self._max_price_age(), fees, nonce, gas, error)

    def read_positions_sync(self, position_ids: Sequence[bytes]) -> tuple[ChainHead, list[PositionQuote]]:
        with self.lock:
            head = head_from_block(call_chain(lambda: self.w3.eth.get_block("latest")))
            return head, [self._quote(pid) for pid in position_ids]

    def position_ids_of_sync(self, owner: str) -> list[bytes]:
        with self.lock:
            return _decode_bytes32_array(
                self._call(calldata.encode_call("positionIdsOf", to_checksum_address(owner)))
            )

    def read_markets_sync(self) -> MarketsState:
        with self.lock:
            symbols = [
                bytes32_to_symbol(m)
                for m in _decode_bytes32_array(self._call(calldata.encode_call("markets")))
            ]
            prices = []
            for symbol in symbols:
                raw = self._call(calldata.encode_call("priceOf", symbol_to_bytes32(symbol)))
                prices.append(MarketPrice(symbol, _decode_uint(raw), _decode_uint(raw[_WORD:])))
            head = head_from_block(call_chain(lambda: self.w3.eth.get_block("latest")))
            max_age = _decode_uint(self._call(calldata.encode_call("maxPriceAge")))
            return MarketsState(head, max_age, prices)

    # -- async face (ChainGateway) --

    async def start(self) -> None:
        await self._in_thread(self.start_sync)

    async def aclose(self) -> None:
        return None

    async def head(self) -> ChainHead:
        return await self._in_thread(self.head_sync)

    async def read_close_state(self, position_id: bytes, data: bytes) -> CloseState:
        return await self._in_thread(lambda: self.read_close_state_sync(position_id, data))

    async def read_positions(self, position_ids: Sequence[bytes]) -> tuple[ChainHead, list[PositionQuote]]:
        return await self._in_thread(lambda: self.read_positions_sync(position_ids))

    async def position_ids_of(self, owner: str) -> list[bytes]:
        return await self._in_thread(lambda: self.position_ids_of_sync(owner))

    async def read_markets(self) -> MarketsState:
        return await self._in_thread(self.read_markets_sync)

    # -- internals --

    @staticmethod
    async def _in_thread(fn: Callable[[], T]) -> T:
        return await anyio.to_thread.run_sync(fn)

    def _call(self, data: bytes) -> bytes:
        return bytes(call_chain(lambda: self.w3.eth.call({"to": self._vault, "data": data})))

    def _quote(self, position_id: bytes) -> PositionQuote:
        return decode_position_with_price(
            position_id, self._call(calldata.encode_call("getPositionWithPrice", position_id))
        )

    def _max_price_age(self) -> int:
        if self._max_age is None or _expired(self._max_age):
            self._max_age = (time.monotonic(), _decode_uint(self._call(calldata.encode_call("maxPriceAge"))))
        return self._max_age[1]

    def _fee_data_for(self, head: ChainHead) -> int | None:
        """The node's fee suggestion for `head`'s block, read once per block."""
        if self._fee_data[0] != head.number:
            legacy = head.base_fee_wei is None
            value = call_chain(lambda: fee_suggestion_wei(self.w3, legacy=legacy))
            self._fee_data = (head.number, value)
        return self._fee_data[1]


def fee_suggestion_wei(w3: Web3, *, legacy: bool) -> int | None:
    """What the node suggests paying per gas for the next block, for `relayer.domain.fees.node_fees`: its gas
    price on a legacy chain, else its priority fee (`eth_maxPriorityFeePerGas`); None when the node answers
    that method with an error (most often: it lacks it), as `JsonRpcGateway` does. Transport errors pass
    through as raised (the caller translates or retries them).
    """
    if legacy:
        return quantity(w3.eth.gas_price, "gas price")
    try:
        value = w3.manager.request_blocking(RPCEndpoint("eth_maxPriorityFeePerGas"), [])
    except Web3RPCError:
        return None
    return quantity(value, "priority fee")
