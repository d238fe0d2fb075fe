"""`ChainClient`: the one reader and writer of the chain, above the port (`relayer.chain.jsonrpc.RpcPort`).

The builder, the relay, trading and the keeper all talk to the chain through one `ChainClient`, whichever
adapter sits below it (`JsonRpcTransport` for a node over HTTP, `EmbeddedRpc` for the in-process chain). So
there is one of each: one retry policy (`_batch`: an unanswered batch is retried with doubling backoff, then
`ChainUnavailableError`), one per-block cache (the fee suggestion, asked once per block, riding along in the
batch that learns of the block; the vault's `maxPriceAge`, re-read after `MAX_PRICE_AGE_CACHE_S`; owners per
position id), one place that turns node answers into values (`RpcReply`, `relayer.chain.decoding`) and
reverts into `RelayerError`s (`relayer.chain.revert`), events into `VaultEvent`s (`relayer.chain.events`).
The retry policy, the cache and the client's identity live in its base, `ChainClientCore`
(`relayer.chain.client_core`); this module adds accounts and transactions, and the vault's reads.

Everything one close needs (the position with its price, the latest block, the gas estimate from the owner,
which doubles as the simulation, the owner's pending nonce) goes out as ONE batch in the common case.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eth_utils.crypto import keccak

from relayer.chain.client_core import LATEST_BLOCK, ChainClientCore, gas_estimate_of, hex_of
from relayer.chain.decoding import (
    decode_bytes32_array,
    decode_market_price,
    decode_markets,
    decode_orders_of,
    decode_position_with_price,
    decode_uint,
)
from relayer.chain.events import VaultEvent, decode_events, topic_of
from relayer.chain.jsonrpc import RpcCall, RpcReply
from relayer.chain.node_errors import Kind, NodeError, classify_rpc_error
from relayer.chain.quotes import CloseState, MarketPrice, MarketsState, PositionQuote
from relayer.constants import SYNC_SEND_WAIT_S
from relayer.domain import calldata
from relayer.domain.addresses import checksum_address as to_checksum_address
from relayer.domain.blocks import ChainHead
from relayer.domain.fees import Fees, node_fees
from relayer.domain.markets import symbol_to_bytes32
from relayer.domain.operators import OperatorGrant
from relayer.domain.positions import NO_ORDER, NO_PLAN, ExitPlan, Position
from relayer.domain.records import Mined
from relayer.errors import ChainUnavailableError, RelayerError, RelayerOutOfFundsError

_ZERO_ADDRESS = "0x" + "00" * 20


@dataclass(frozen=True)
class Receipt:
    """A receipt as the node gave it: what the record keeps of it (`mined`, its `events` still empty), and
    what only settling the record needs beside it."""

    mined: Mined
    transaction_index: int
    """The transaction's place in its block: a replay on the state before the block is honest only at 0."""
    logs: list[Any]
    """The wire logs, decoded into `mined.events` once the transaction is known to have succeeded."""


@dataclass(frozen=True)
class SenderState:
    """What `ChainClient.sender_state` read of a transaction's sender, and the latest block it was read at."""

    head: ChainHead
    latest_nonce: int
    balance_wei: int
    _estimate: RpcReply

    def gas_estimate(self) -> int:
        """The simulation's gas.

        Raises:
            RelayerOutOfFundsError: the sender cannot pay for the call.
            RelayerError: the decoded vault error when the call reverts.
        """
        return gas_estimate_of(self._estimate)


class ChainClient(ChainClientCore):
    """Typed reads and writes of one vault's chain over a `RpcPort`. Call `start()` once before use."""

    # --- accounts and transactions ------------------------------------------------------------------------

    async def nonce(self, address: str, block: str = "pending") -> int:
        return (
            await self._one(RpcCall("eth_getTransactionCount", [to_checksum_address(address), block]))
        ).quantity()

    async def balance(self, address: str) -> int:
        return (
            await self._one(RpcCall("eth_getBalance", [to_checksum_address(address), "latest"]))
        ).quantity()

    async def estimate_gas(self, sender: str, to: str, data: bytes, value_wei: int = 0) -> int:
        """`eth_estimateGas` of the exact call: the simulation and the estimate in one.

        Raises:
            RelayerOutOfFundsError: the sender cannot pay for the call.
            RelayerError: the decoded vault error when the call reverts (nothing is ever sent then).
        """
        return gas_estimate_of((await self._batch([_estimate_call(sender, to, data, value_wei)]))[0])

    async def balance_and_estimate(self, sender: str, to: str, data: bytes) -> tuple[int, int]:
        """`sender`'s balance and `estimate_gas` of the call from it, in one batch.

        Raises:
            RelayerOutOfFundsError: the sender cannot pay for the call (`balanceWei` in its details).
            RelayerError: the decoded vault error when the call reverts.
        """
        balance_reply, estimate = await self._batch(
            [
                RpcCall("eth_getBalance", [to_checksum_address(sender), "latest"]),
                _estimate_call(sender, to, data, 0),
            ]
        )
        balance = balance_reply.quantity()
        try:
            return balance, gas_estimate_of(estimate)
        except RelayerOutOfFundsError as error:
            error.details["balanceWei"] = str(balance)
            raise

    async def sender_state(self, sender: str, to: str, data: bytes, value_wei: int) -> SenderState:
        """A user-signed transaction's sender, read in one batch with the latest block (its base fee): its
        mined nonce, its balance, and the call simulated from it (decoded when asked for, so the caller checks
        in its own order)."""
        block, nonce, balance, estimate = await self._batch(
            [
                LATEST_BLOCK,
                RpcCall("eth_getTransactionCount", [to_checksum_address(sender), "latest"]),
                RpcCall("eth_getBalance", [to_checksum_address(sender), "latest"]),
                _estimate_call(sender, to, data, value_wei),
            ]
        )
        return SenderState(self._note_head(block), nonce.quantity(), balance.quantity(), estimate)

    async def send_raw(self, raw_tx: bytes) -> NodeError | None:
        """Broadcast signed bytes once (never retried here: the sender decides). None: the node took them."""
        calls = [RpcCall("eth_sendRawTransaction", ["0x" + raw_tx.hex()])]
        start = time.perf_counter()
        try:
            (reply,) = await self.port.batch(calls)
        except ChainUnavailableError as exc:
            self.metrics.node_batch(calls, None, time.perf_counter() - start)
            return NodeError(Kind.UNAVAILABLE, exc.message)
        self.metrics.node_batch(calls, [reply], time.perf_counter() - start)
        return None if reply.error is None else classify_rpc_error(reply.error)

    _sync_send: bool | None = None
    """Whether the node has `eth_sendRawTransactionSync` (EIP-7966): probed once, None until then."""

    async def send_raw_many(self, raw_txs: Sequence[bytes], *, sync_allowed: bool = True) -> list[Sent]:
        """Broadcast signed bytes in ONE JSON-RPC batch, in the order given (a signer's in nonce order: the
        node takes a batch's calls in order), once each (never retried here: the sender decides).

        On a node that mines each transaction on arrival and has `eth_sendRawTransactionSync` (EIP-7966:
        anvil, geth >= 1.16.6, erigon >= 3.4.0) the sync method is used when `sync_allowed` (the sender
        allows it for a call sent alone), and each answer carries its receipt. Elsewhere the plain method:
        with block times the sync method would hold the batch for a block (the relay's sends wait on it),
        while the plain batch lands in the next block all the same and the rounds read its receipts, one
        batch per round. Both are learnt once per chain, in one batch (`probe_sync_send`: the method, with
        empty bytes, "method not found" meaning no; and whether the node mines on arrival, `anvil_getAutomine`
        / `hardhat_getAutomine`, a node without either never doing so): no round trip before a send. A node
        switched to block times later holds a sync send; after `SYNC_SEND_WAIT_S` the batch is answered
        unknown (the sender re-broadcasts the same bytes the plain way: "already known") and sync sends stop
        for this chain.
        """
        sync = sync_allowed and await self._mines_on_arrival()
        method = "eth_sendRawTransactionSync" if sync else "eth_sendRawTransaction"
        calls = [RpcCall(method, ["0x" + raw.hex()]) for raw in raw_txs]
        start = time.perf_counter()
        try:
            if sync:
                replies = await asyncio.wait_for(self.port.batch(calls), SYNC_SEND_WAIT_S)
            else:
                replies = await self.port.batch(calls)
        except TimeoutError:
            self._sync_send = False  # it did not pay here: the plain way from now on
            self.metrics.node_batch(calls, None, time.perf_counter() - start)
            unknown = NodeError(Kind.UNAVAILABLE, "the node did not answer the sync send in time")
            return [Sent(unknown, None)] * len(raw_txs)
        except ChainUnavailableError as exc:
            self.metrics.node_batch(calls, None, time.perf_counter() - start)
            return [Sent(NodeError(Kind.UNAVAILABLE, exc.message), None)] * len(raw_txs)
        self.metrics.node_batch(calls, replies, time.perf_counter() - start)
        sent = []
        for raw, reply in zip(raw_txs, replies, strict=True):
            if reply.error is not None:
                if sync and _sync_timed_out(reply.error):  # taken, not mined within the node's wait
                    sent.append(Sent(None, None))
                else:
                    sent.append(Sent(classify_rpc_error(reply.error), None))
            elif sync and isinstance(reply.result, dict) and reply.result.get("blockNumber"):
                sent.append(Sent(None, _receipt("0x" + keccak(raw).hex(), reply.result)))
            else:
                sent.append(Sent(None, None))
        return sent

    async def _mines_on_arrival(self) -> bool:
        """Whether a sync send pays here: the node has the method and mined each transaction on arrival when
        probed (`probe_sync_send`, once per chain)."""
        if self._sync_send is None:
            await self.probe_sync_send()
        return bool(self._sync_send)

    async def probe_sync_send(self) -> bool:
        """Learn, once, in one batch (the automine question asked of hardhat too when anvil's is unknown),
        whether this node takes `eth_sendRawTransactionSync` and mines on arrival; the relay asks at resume,
        so no request pays for it. A node that does not answer is asked again at the next send.
        """
        calls = [RpcCall("eth_sendRawTransactionSync", ["0x"]), RpcCall("anvil_getAutomine", [])]
        try:
            method, automine = await self.port.batch(calls)
            if automine.error is not None and automine.error.get("code") in _RPC_METHOD_UNSUPPORTED:
                (automine,) = await self.port.batch([RpcCall("hardhat_getAutomine", [])])
        except ChainUnavailableError:
            return False
        has_method = method.error is None or method.error.get("code") not in _RPC_METHOD_UNSUPPORTED
        self._sync_send = has_method and automine.error is None and automine.result is True
        return self._sync_send

    async def receipt(self, tx_hash: str) -> Receipt | None:
        """The receipt of `tx_hash`, or None while it is not mined."""
        (receipt,) = await self.receipts([tx_hash])
        return receipt

    async def receipts(self, tx_hashes: Sequence[str]) -> list[Receipt | None]:
        """The receipts of `tx_hashes` (None: not mined), in one batch."""
        replies = await self._batch_chunked([RpcCall("eth_getTransactionReceipt", [h]) for h in tx_hashes])
        found: list[Receipt | None] = []
        for tx_hash, reply in zip(tx_hashes, replies, strict=True):
            raw = reply.value()
            found.append(_receipt(tx_hash, raw) if isinstance(raw, dict) and raw.get("blockNumber") else None)
        return found

    async def head_and_nonces(
        self, addresses: Sequence[str], block: str = "latest"
    ) -> tuple[ChainHead, dict[str, int]]:
        """The latest block and the transaction count of each address at `block`, in one batch."""
        calls = [RpcCall("eth_getTransactionCount", [to_checksum_address(a), block]) for a in addresses]
        replies = await self._batch_chunked([LATEST_BLOCK, *calls])
        head = self._note_head(replies[0])
        return head, {a: r.quantity() for a, r in zip(addresses, replies[1:], strict=True)}

    async def block_hash(self, number: int) -> str:
        """The 0x-hex hash of block `number` (the genesis block names a chain beyond its id).

        Raises:
            ChainUnavailableError: the node does not answer, or has no such block.
        """
        block = (await self._one(RpcCall("eth_getBlockByNumber", [hex(number), False]))).value()
        if not isinstance(block, dict) or not isinstance(block.get("hash"), str):
            raise ChainUnavailableError("the node answered no block", number=number)
        return str(block["hash"]).lower()

    async def trace_top_call(self, tx_hash: str) -> tuple[Any, str | None]:
        """The node's call-tracer top call of a mined transaction (`debug_traceTransaction`), and None; or
        None and why there is none: the node does not trace (remembered when it lacks the method, then
        never asked again) or refused this trace (its message, e.g. the embedded chain's failed replay)."""
        if not self._node_traces:
            return None, "the node offers no trace"
        reply = await self._one(RpcCall("debug_traceTransaction", [tx_hash, _TOP_CALL_TRACER]))
        if reply.error is not None:
            if reply.error.get("code") in _RPC_METHOD_UNSUPPORTED:
                self._node_traces = False
                return None, "the node offers no trace"
            return None, str(reply.error.get("message", ""))[:300]
        return reply.result, None

    async def call_at(self, sender: str, to: str, data: bytes, gas: int, block_number: int) -> RpcReply:
        """`eth_call` of the exact call on the state after `block_number`, as the node answered it."""
        params = {
            "from": to_checksum_address(sender),
            "to": to_checksum_address(to),
            "data": hex_of(data),
            "gas": hex(gas),
        }
        return await self._one(RpcCall("eth_call", [params, hex(block_number)]))

    # --- the vault ----------------------------------------------------------------------------------------

    async def position(self, position_id: bytes) -> PositionQuote:
        """A position with its market's price (zero owner: never existed); its owner noted in the cache."""
        reply = await self._one(self._view_call(calldata.encode_call("getPositionWithPrice", position_id)))
        quote = decode_position_with_price(position_id, reply.data())
        if quote.position.owner != _ZERO_ADDRESS:
            self._owners.put(position_id, quote.position.owner)
        return quote

    async def position_and_orders(self, position_id: bytes) -> tuple[PositionQuote, ExitPlan]:
        """A position with its market's price and its pending orders (`ordersOf`), in one batch; its owner
        noted in the cache (as `position`)."""
        replies = await self._batch(
            [
                self._view_call(calldata.encode_call("getPositionWithPrice", position_id)),
                self._view_call(calldata.encode_call("ordersOf", position_id)),
            ]
        )
        quote = decode_position_with_price(position_id, replies[0].data())
        if quote.position.owner != _ZERO_ADDRESS:
            self._owners.put(position_id, quote.position.owner)
        return quote, decode_orders_of(replies[1].data())

    async def position_owner(self, position_id: bytes) -> str:
        """The owner of a position (zero address when it never existed), read; noted in the owner cache."""
        return (await self.position(position_id)).position.owner

    async def signed_request_state(self, position_id: bytes) -> tuple[ChainHead, Fees, str, int]:
        """`position_request_state` with the position's owner only (the zero address: it never existed)."""
        head, fees, quote, _, nonce = await self.position_request_state(position_id)
        return head, fees, quote.position.owner, nonce

    async def position_request_state(
        self, position_id: bytes, *, orders: bool = False
    ) -> tuple[ChainHead, Fees, PositionQuote, ExitPlan | None, int]:
        """What checking a signed request about a position needs, in one batch in the common case: the head,
        the fees, the position with its price (its owner read, never taken from the cache: after a reorg or a
        snapshot revert an id can name another owner; the zero address when it never existed), with `orders`
        its pending orders (`ordersOf`; None when not asked), and that owner's next vault nonce (asked for the
        owner last seen for the id, and once more when that was not the owner; 0 for no owner)."""
        cached = self._owners.get(position_id)
        extra = [self._view_call(calldata.encode_call("getPositionWithPrice", position_id))]
        if orders:
            extra.append(self._view_call(calldata.encode_call("ordersOf", position_id)))
        if cached is not None:
            extra.append(self._request_nonce_call(cached))
        head, fees, replies = await self._head_fees_and(extra)
        quote = decode_position_with_price(position_id, replies[0].data())
        plan = decode_orders_of(replies[1].data()) if orders else None
        owner = quote.position.owner
        if owner == _ZERO_ADDRESS:
            return head, fees, quote, plan, 0
        if owner == cached:
            return head, fees, quote, plan, decode_uint(replies[-1].data())
        self._owners.put(position_id, owner)
        return head, fees, quote, plan, await self.request_nonce(owner)

    async def owner_request_state(self, owner: str) -> tuple[ChainHead, Fees, int]:
        """What checking a signed request naming its `owner` needs, in one batch: the head, the fees and the
        owner's next vault nonce (no position is read)."""
        head, fees, nonce, _ = await self.owner_request_state_and(owner, None)
        return head, fees, nonce

    async def owner_request_state_and(
        self, owner: str, probe: bytes | None
    ) -> tuple[ChainHead, Fees, int, int | None]:
        """`owner_request_state`, and in the same batch the uint the vault returns for the call `probe` made
        by `owner` (an `eth_call`, e.g. how many positions `emergencyExit(owner, market)` would close).

        Raises:
            RelayerError: the vault error `probe` reverts with.
        """
        calls = [self._request_nonce_call(owner)]
        if probe is not None:
            calls.append(
                RpcCall("eth_call", [{"from": owner, "to": self._vault, "data": hex_of(probe)}, "latest"])
            )
        head, fees, replies = await self._head_fees_and(calls)
        probed = decode_uint(replies[1].data()) if probe is not None else None
        return head, fees, decode_uint(replies[0].data()), probed

    async def request_nonce(self, owner: str) -> int:
        """The vault's next signed-request nonce of `owner`."""
        return decode_uint((await self._one(self._request_nonce_call(owner))).data())

    async def operator_grants(self, owner: str, operators: Sequence[str]) -> list[OperatorGrant]:
        """What `owner` granted each of `operators` (`operatorGrant`: rights and expiry), in one batch."""
        calls = [
            self._view_call(
                calldata.encode_call(
                    "operatorGrant", to_checksum_address(owner), to_checksum_address(operator)
                )
            )
            for operator in operators
        ]
        replies = await self._batch_chunked(calls)
        return [
            OperatorGrant(decode_uint(data), decode_uint(data[32:])) for data in (r.data() for r in replies)
        ]

    async def vault_events(self, name: str, from_block: int, to_block: int) -> list[VaultEvent]:
        """The vault's `name` events in blocks `from_block..to_block`."""
        logs = (
            await self._one(
                RpcCall(
                    "eth_getLogs",
                    [
                        {
                            "address": self._vault,
                            "topics": [topic_of(name)],
                            "fromBlock": hex(from_block),
                            "toBlock": hex(to_block),
                        }
                    ],
                )
            )
        ).value()
        if not isinstance(logs, list):
            raise ChainUnavailableError("the node's eth_getLogs answer is not a list")
        return decode_events(logs, self._vault)

    async def read_close_state(self, position_id: bytes, data: bytes) -> CloseState:
        """The position, price, its pending orders (`ordersOf`), head, fees, and `data` simulated
        (gas-estimated) from the position's owner."""
        owner = self._owners.get(position_id)
        calls = [
            self._view_call(calldata.encode_call("getPositionWithPrice", position_id)),
            self._view_call(calldata.encode_call("ordersOf", position_id)),
            LATEST_BLOCK,
        ]
        extra = self._refresh_calls()
        calls += extra
        if owner is not None:
            calls += self._owner_calls(owner, data)
        replies = await self._batch(calls)
        quote = decode_position_with_price(position_id, replies[0].data())
        plan = decode_orders_of(replies[1].data())
        head = self._note_head(replies[2])
        self._apply_refresh(extra, replies[3 : 3 + len(extra)], head)
        owner_replies = replies[3 + len(extra) :]
        actual = quote.position.owner
        if not quote.position.exists or not quote.position.is_open:
            return await self._state(quote, head, 0, None, None, plan)
        if (
            owner != actual
        ):  # first sight of this id (or it now names another owner): simulate as the right one
            self._owners.put(position_id, actual)
            owner_replies = await self._batch(self._owner_calls(actual, data))
        estimate, nonce = owner_replies
        nonce_value = nonce.quantity()
        try:
            return await self._state(quote, head, nonce_value, gas_estimate_of(estimate), None, plan)
        except RelayerError as error:
            return await self._state(quote, head, nonce_value, None, error, plan)

    async def read_plan(self, position_id: bytes) -> tuple[ChainHead, PositionQuote, ExitPlan]:
        """The latest block, a position with its market's price, and its pending orders, in one batch."""
        replies = await self._batch(
            [
                self._view_call(calldata.encode_call("getPositionWithPrice", position_id)),
                self._view_call(calldata.encode_call("ordersOf", position_id)),
                LATEST_BLOCK,
            ]
        )
        quote = decode_position_with_price(position_id, replies[0].data())
        return self._note_head(replies[2]), quote, decode_orders_of(replies[1].data())

    async def read_exit_state(self, owner: str, data: bytes) -> tuple[CloseState, list[PositionQuote]]:
        """What an emergency exit of `owner` is checked and priced against: head, fees, `data` simulated from
        `owner` with its nonce (one batch with its position ids), then each position with its price (a
        second batch). The `CloseState`'s quote is the first position's (a zero one when there is none)."""
        address = to_checksum_address(owner)
        calls = [self._view_call(calldata.encode_call("positionIdsOf", address)), LATEST_BLOCK]
        extra = self._refresh_calls()
        calls += extra
        calls += self._owner_calls(address, data)
        replies = await self._batch(calls)
        ids = decode_bytes32_array(replies[0].data())
        head = self._note_head(replies[1])
        self._apply_refresh(extra, replies[2 : 2 + len(extra)], head)
        estimate, nonce = replies[2 + len(extra) :]
        quotes: list[PositionQuote] = []
        if ids:
            position_replies = await self._batch_chunked(
                [self._view_call(calldata.encode_call("getPositionWithPrice", pid)) for pid in ids]
            )
            quotes = [
                decode_position_with_price(pid, reply.data())
                for pid, reply in zip(ids, position_replies, strict=True)
            ]
        first = quotes[0] if quotes else PositionQuote(_NO_POSITION, 0, 0)
        nonce_value = nonce.quantity()
        try:
            state = await self._state(first, head, nonce_value, gas_estimate_of(estimate), None)
        except RelayerError as error:
            state = await self._state(first, head, nonce_value, None, error)
        return state, quotes

    async def read_positions(self, position_ids: Sequence[bytes]) -> tuple[ChainHead, list[PositionQuote]]:
        calls = [LATEST_BLOCK]
        calls += [self._view_call(calldata.encode_call("getPositionWithPrice", pid)) for pid in position_ids]
        replies = await self._batch_chunked(calls)
        head = self._note_head(replies[0])
        quotes = [
            decode_position_with_price(pid, r.data())
            for pid, r in zip(position_ids, replies[1:], strict=True)
        ]
        return head, quotes

    async def position_ids_of(self, owner: str) -> list[bytes]:
        data = calldata.encode_call("positionIdsOf", to_checksum_address(owner))
        return decode_bytes32_array((await self._one(self._view_call(data))).data())

    async def read_markets(self) -> MarketsState:
        first = await self._batch(
            [
                self._view_call(calldata.encode_call("markets")),
                self._view_call(calldata.encode_call("maxPriceAge")),
                LATEST_BLOCK,
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

    async def price(self, market: str) -> MarketPrice:
        reply = await self._one(self._view_call(calldata.encode_call("priceOf", symbol_to_bytes32(market))))
        return decode_market_price(market, reply.data())

    # --- internals ----------------------------------------------------------------------------------------

    async def _state(
        self,
        quote: PositionQuote,
        head: ChainHead,
        nonce: int,
        gas: int | None,
        error: RelayerError | None,
        plan: ExitPlan = NO_PLAN,
    ) -> CloseState:
        if self._max_age is None:  # only when the refresh could not ride along (never in practice)
            self._max_age = (
                asyncio.get_running_loop().time(),
                decode_uint((await self._one(self._view_call(calldata.encode_call("maxPriceAge")))).data()),
            )
        return CloseState(
            chain_id=self.chain_id,
            quote=quote,
            head=head,
            max_price_age_s=self._max_age[1],
            fees=node_fees(head.base_fee_wei, self._fee_data[1]),  # read in this very batch
            nonce=nonce,
            gas_estimate=gas,
            simulation_error=error,
            plan=plan,
        )

    def _owner_calls(self, owner: str, data: bytes) -> list[RpcCall]:
        return [
            _estimate_call(owner, self._vault, data, 0),
            RpcCall("eth_getTransactionCount", [owner, "pending"]),
        ]


@dataclass(frozen=True)
class Sent:
    """One broadcast's outcome (`ChainClient.send_raw_many`): the node's refusal (None: it took the bytes),
    and the receipt when a sync send brought it back mined."""

    refusal: NodeError | None
    receipt: Receipt | None


def _sync_timed_out(error: Mapping[str, Any]) -> bool:
    """A sync send the node took but did not see mined within its wait (EIP-7966: code 4; anvil: -32603
    "Transaction confirmation timeout"): sent, its receipt left to the rounds."""
    message = str(error.get("message", "")).lower()
    return error.get("code") == 4 or (error.get("code") == -32603 and "timeout" in message)


_NO_POSITION = Position(bytes(32), _ZERO_ADDRESS, "", False, 0, 0, NO_ORDER, NO_ORDER)
"""The `CloseState` quote of an emergency exit of an account without positions."""

_TOP_CALL_TRACER = {"tracer": "callTracer", "tracerConfig": {"onlyTopCall": True}}
"""`debug_traceTransaction` options: geth's call tracer (anvil, erigon, reth have it too), top call only."""

_RPC_METHOD_UNSUPPORTED = frozenset({-32601, -32004})
"""JSON-RPC codes for "method not found" (JSON-RPC 2.0) and "method not supported" (EIP-1474)."""


def _estimate_call(sender: str, to: str, data: bytes, value_wei: int) -> RpcCall:
    params: dict[str, str] = {
        "from": to_checksum_address(sender),
        "to": to_checksum_address(to),
        "data": hex_of(data),
    }
    if value_wei:
        params["value"] = hex(value_wei)
    # On the latest block, named: nodes differ on the default (anvil simulates on its pending state), and a
    # simulation must mean the same on every chain.
    return RpcCall("eth_estimateGas", [params, "latest"])


def _receipt(tx_hash: str, raw: dict[str, Any]) -> Receipt:
    from relayer.domain.blocks import quantity

    mined = Mined(
        tx_hash=tx_hash,
        block_number=quantity(raw.get("blockNumber"), "receipt block number"),
        block_hash=str(raw.get("blockHash")),
        gas_used=quantity(raw.get("gasUsed"), "receipt gas used"),
        effective_gas_price_wei=quantity(raw.get("effectiveGasPrice") or 0, "receipt gas price"),
        success=quantity(raw.get("status"), "receipt status") == 1,
    )
    logs = raw.get("logs")
    return Receipt(
        mined,
        transaction_index=quantity(raw.get("transactionIndex"), "receipt transaction index"),
        logs=list(logs) if isinstance(logs, list) else [],
    )
