"""`JsonRpcGateway`: the chain port (`relayer.chain.gateway.ChainGateway`) over any JSON-RPC node.

Everything one close needs (the position with its price, the latest block, the gas estimate from the owner,
which doubles as the simulation, and the owner's pending nonce) goes out as ONE JSON-RPC batch over
`relayer.chain.jsonrpc.JsonRpcTransport`, and batches from concurrent requests share HTTP requests when the
node is busy. Owners are cached per position id (they never change), so a build is one round trip; cached
values due for a refresh (`maxPriceAge`, the fee suggestion of a new block) ride along in the same batch.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from eth_utils.address import to_checksum_address

from relayer.chain.artifact import load_artifact
from relayer.chain.decoding import (
    decode_bytes32_array,
    decode_market_price,
    decode_markets,
    decode_position_with_price,
    decode_uint,
)
from relayer.chain.gateway import CloseState, MarketsState, PositionQuote, VaultGateway
from relayer.chain.jsonrpc import JsonRpcTransport, RpcCall, RpcReply
from relayer.constants import DEFAULT_RPC_TIMEOUT_S, MAX_RPC_CALLS_PER_BATCH, POSITION_OWNER_CACHE_SIZE
from relayer.domain import calldata
from relayer.domain.blocks import ChainHead
from relayer.domain.fees import node_fees
from relayer.domain.markets import symbol_to_bytes32
from relayer.errors import RelayerError, VaultNotDeployedError

_LATEST_BLOCK = RpcCall("eth_getBlockByNumber", ["latest", False])


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


class JsonRpcGateway(VaultGateway):
    """`ChainGateway` over any JSON-RPC node, one batch per close in the common case."""

    def __init__(self, transport: JsonRpcTransport, vault_address: str) -> None:
        super().__init__(vault_address)
        self.transport = transport
        self._legacy = False
        self._owners = _OwnerCache()
        self._last_head_number = 0

    @classmethod
    def connect(
        cls, url: str, vault_address: str, *, timeout_s: float = DEFAULT_RPC_TIMEOUT_S
    ) -> JsonRpcGateway:
        return cls(JsonRpcTransport(url, timeout_s=timeout_s), vault_address)

    async def aclose(self) -> None:
        await self.transport.aclose()

    async def start(self) -> None:
        replies = await self.transport.batch(
            [RpcCall("eth_chainId", []), RpcCall("eth_getCode", [self._vault, "latest"]), _LATEST_BLOCK]
        )
        chain_id, code, head = replies[0].quantity(), replies[1].data(), replies[2].head()
        if not load_artifact().matches_runtime_code(code):
            raise VaultNotDeployedError(
                "no vault with the expected code at this address", vaultAddress=self._vault
            )
        self._chain_id = chain_id
        self._legacy = head.base_fee_wei is None

    async def head(self) -> ChainHead:
        (reply,) = await self.transport.batch([_LATEST_BLOCK])
        return self._note_head(reply)

    async def read_close_state(self, position_id: bytes, data: bytes) -> CloseState:
        owner = self._owners.get(position_id)
        calls = [self._view_call(calldata.encode_call("getPositionWithPrice", position_id)), _LATEST_BLOCK]
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
        calls = [_LATEST_BLOCK]
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
        return decode_bytes32_array(reply.data())

    async def read_markets(self) -> MarketsState:
        first = await self.transport.batch(
            [
                self._view_call(calldata.encode_call("markets")),
                self._view_call(calldata.encode_call("maxPriceAge")),
                _LATEST_BLOCK,
            ]
        )
        symbols = decode_markets(first[0].data())
        max_age = decode_uint(first[1].data())
        head = self._note_head(first[2])
        replies = await self._batch_chunked(
            [self._view_call(calldata.encode_call("priceOf", symbol_to_bytes32(s))) for s in symbols]
        )
        prices = [decode_market_price(s, reply.data()) for s, reply in zip(symbols, replies, strict=True)]
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

    def _view_call(self, data: bytes) -> RpcCall:
        return RpcCall("eth_call", [{"to": self._vault, "data": _hex(data)}, "latest"])

    def _owner_calls(self, owner: str, data: bytes) -> list[RpcCall]:
        return [
            RpcCall("eth_estimateGas", [{"from": owner, "to": self._vault, "data": _hex(data)}]),
            RpcCall("eth_getTransactionCount", [owner, "pending"]),
        ]

    def _refresh_calls(self) -> list[RpcCall]:
        """Cached values due for a refresh ride along in the request's batch: no extra round trip."""
        calls = []
        if self._max_age_due():
            calls.append(self._view_call(calldata.encode_call("maxPriceAge")))
        if self._fee_data[0] != self._last_head_number:
            calls.append(RpcCall("eth_gasPrice" if self._legacy else "eth_maxPriorityFeePerGas", []))
        return calls

    def _apply_refresh(self, calls: list[RpcCall], replies: list[RpcReply], head: ChainHead) -> None:
        for call, reply in zip(calls, replies, strict=True):
            if call.method == "eth_call":
                self._note_max_age(decode_uint(reply.data()))
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


def _hex(data: bytes) -> str:
    return "0x" + data.hex()
