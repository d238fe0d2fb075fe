"""`ChainClientCore`: the one retry policy and per-block cache beneath `relayer.chain.client.ChainClient`.

`ChainClient` (accounts and transactions, the vault's reads) is the one reader and writer of the chain above
the port (`relayer.chain.jsonrpc.RpcPort`); this base holds what each of its reads and writes rests on, so
there is one of each whichever adapter sits below (`JsonRpcTransport` for a node over HTTP, `EmbeddedRpc` for
the in-process chain):

- the client's state, set up in one constructor, and its identity: the vault address, and the chain id
  `start` reads in the batch that checks the vault's code;
- one retry policy (`_batch`: an unanswered batch is retried with doubling backoff, then
  `ChainUnavailableError`; `_batch_chunked` splits long batches at `MAX_RPC_CALLS_PER_BATCH`);
- one per-block cache: the fee suggestion, riding along in every batch that reads the block a transaction
  will be priced on (`head_and_fees`, `_refresh_calls`/`_apply_refresh`: never another block's, never an
  extra round trip) and kept for `fees(head)` of the same block; the vault's `maxPriceAge`, re-read after
  `MAX_PRICE_AGE_CACHE_S`; owners per position id (`_OwnerCache`);
- the node's gas-estimate answer turned into a value or `RelayerOutOfFundsError` (`gas_estimate_of`).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Sequence

from eth_utils.address import to_checksum_address

from relayer.chain.artifact import load_artifact
from relayer.chain.decoding import decode_uint
from relayer.chain.jsonrpc import RpcCall, RpcPort, RpcReply
from relayer.chain.node_errors import Kind, classify_rpc_error
from relayer.constants import (
    MAX_PRICE_AGE_CACHE_S,
    MAX_RPC_CALLS_PER_BATCH,
    POSITION_OWNER_CACHE_SIZE,
    RPC_BACKOFF_S,
    RPC_RETRIES,
)
from relayer.domain import calldata
from relayer.domain.blocks import ChainHead
from relayer.domain.fees import Fees, node_fees
from relayer.errors import ChainUnavailableError, RelayerOutOfFundsError, VaultNotDeployedError
from relayer.services.metrics import NO_METRICS, Metrics

LATEST_BLOCK = RpcCall("eth_getBlockByNumber", ["latest", False])


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


class ChainClientCore:
    """Identity, the retry policy and the per-block cache of a `ChainClient` (the only subclass: use that)."""

    def __init__(
        self,
        port: RpcPort,
        vault_address: str,
        *,
        retries: int = RPC_RETRIES,
        backoff_s: float = RPC_BACKOFF_S,
        metrics: Metrics = NO_METRICS,
    ) -> None:
        self.port = port
        self.retries = retries
        self.backoff_s = backoff_s
        self.metrics = metrics
        """Node round trips and errors by method (`relayer.services.metrics`); the runtime sets its own."""
        self._vault = to_checksum_address(vault_address)
        self._chain_id: int | None = None
        self._legacy = False
        self._owners = _OwnerCache()
        self._max_age: tuple[float, int] | None = None  # (monotonic time read, seconds)
        self._fee_data: tuple[int, int | None] = (-1, None)  # (block number, wei; None: no suggestion)
        self._node_traces = True  # until the node answers that it has no debug_traceTransaction

    # --- identity ------------------------------------------------------------------------------------------

    @property
    def vault_address(self) -> str:
        return self._vault

    @property
    def chain_id(self) -> int:
        if self._chain_id is None:
            raise RuntimeError("ChainClient.start() has not run")
        return self._chain_id

    @property
    def started(self) -> bool:
        return self._chain_id is not None

    async def start(self) -> None:
        """Read the chain id and check the vault's code, in one batch.

        Raises:
            VaultNotDeployedError: the address does not hold this build of the vault.
            ChainUnavailableError: the node does not answer.
        """
        replies = await self._batch(
            [RpcCall("eth_chainId", []), RpcCall("eth_getCode", [self._vault, "latest"]), LATEST_BLOCK]
        )
        chain_id, code, head = replies[0].quantity(), replies[1].data(), replies[2].head()
        if not load_artifact().matches_runtime_code(code):
            raise VaultNotDeployedError(
                "no vault with the expected code at this address", vaultAddress=self._vault
            )
        self._chain_id = chain_id
        self._legacy = head.base_fee_wei is None

    async def aclose(self) -> None:
        await self.port.aclose()

    # --- the one retry policy -----------------------------------------------------------------------------

    async def _batch(self, calls: Sequence[RpcCall]) -> list[RpcReply]:
        """`calls` answered, an unanswered batch retried `retries` times in all with doubling backoff.

        Raises:
            ChainUnavailableError: the node stayed silent.
        """
        delay = self.backoff_s
        for attempt in range(self.retries):
            start = time.perf_counter()
            try:
                replies = await self.port.batch(calls)
            except ChainUnavailableError as exc:
                self.metrics.node_batch(calls, None, time.perf_counter() - start)
                if attempt == self.retries - 1:
                    raise ChainUnavailableError(
                        f"the node did not answer after {self.retries} attempts", reason=exc.message
                    ) from None
            else:
                self.metrics.node_batch(calls, replies, time.perf_counter() - start)
                return replies
            await asyncio.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    async def _batch_chunked(self, calls: list[RpcCall]) -> list[RpcReply]:
        replies: list[RpcReply] = []
        for start in range(0, len(calls), MAX_RPC_CALLS_PER_BATCH):
            replies += await self._batch(calls[start : start + MAX_RPC_CALLS_PER_BATCH])
        return replies

    async def _one(self, call: RpcCall) -> RpcReply:
        (reply,) = await self._batch([call])
        return reply

    # --- blocks and fees (the per-block cache) ------------------------------------------------------------

    async def head(self) -> ChainHead:
        """The latest block. Raises: ChainUnavailableError (also for a node that answers no block)."""
        return self._note_head(await self._one(LATEST_BLOCK))

    async def head_and_fees(self, *extra: RpcCall) -> tuple[ChainHead, Fees]:
        """The latest block and the fees suggested for the next one, in one batch (the fee suggestion rides
        along in every such batch: the block it is for is only known from the answer)."""
        head, fees, _ = await self._head_fees_and(list(extra))
        return head, fees

    async def _head_fees_and(self, extra: list[RpcCall]) -> tuple[ChainHead, Fees, list[RpcReply]]:
        fee_call = self._fee_call()
        replies = await self._batch([LATEST_BLOCK, fee_call, *extra])
        head = self._note_head(replies[0])
        self._apply_refresh([fee_call], replies[1:2], head)  # asked anyway: the freshest, even after a reorg
        return head, node_fees(head.base_fee_wei, self._fee_data[1]), replies[2:]

    async def fees(self, head: ChainHead) -> Fees:
        """Suggested fees for the block after `head`: its base fee plus the node's priority-fee suggestion
        (asked once per block; the default tip when the node lacks `eth_maxPriorityFeePerGas`), or the node's
        gas price on a legacy chain. Caps are the caller's."""
        if self._fee_data[0] != head.number:
            call = self._fee_call()
            self._apply_refresh([call], [await self._one(call)], head)
        return node_fees(head.base_fee_wei, self._fee_data[1])

    def _fee_call(self) -> RpcCall:
        return RpcCall("eth_gasPrice" if self._legacy else "eth_maxPriorityFeePerGas", [])

    def _refresh_calls(self) -> list[RpcCall]:
        """What rides along in a request's batch, no extra round trip: the fee suggestion, always (the block
        it is for is only known from the same batch's answer, and a transaction must not be priced with
        another block's), and the vault's `maxPriceAge` when it is due."""
        calls = [self._fee_call()]
        if self._max_age_due():
            calls.append(self._view_call(calldata.encode_call("maxPriceAge")))
        return calls

    def _apply_refresh(self, calls: list[RpcCall], replies: Sequence[RpcReply], head: ChainHead) -> None:
        for call, reply in zip(calls, replies, strict=True):
            if call.method == "eth_call":
                self._max_age = (asyncio.get_running_loop().time(), decode_uint(reply.data()))
            elif reply.error is None:
                self._fee_data = (head.number, reply.quantity())
            else:  # a node without eth_maxPriorityFeePerGas: no suggestion, the default tip for this block
                self._fee_data = (head.number, None)

    def _max_age_due(self) -> bool:
        return (
            self._max_age is None
            or asyncio.get_running_loop().time() - self._max_age[0] > MAX_PRICE_AGE_CACHE_S
        )

    @staticmethod
    def _note_head(reply: RpcReply) -> ChainHead:
        return reply.head()

    # --- shared by the reads and writes -------------------------------------------------------------------

    def _view_call(self, data: bytes) -> RpcCall:
        return RpcCall("eth_call", [{"to": self._vault, "data": hex_of(data)}, "latest"])

    def _request_nonce_call(self, owner: str) -> RpcCall:
        return self._view_call(calldata.encode_call("nonces", to_checksum_address(owner)))


def gas_estimate_of(reply: RpcReply) -> int:
    """An `eth_estimateGas` reply as gas.

    Raises:
        RelayerOutOfFundsError: the sender cannot pay for the call.
        RelayerError: the decoded vault error when the call reverts (`RpcReply.quantity`).
    """
    if reply.error is not None:
        refusal = classify_rpc_error(reply.error)
        if refusal.kind is Kind.INSUFFICIENT_FUNDS:
            raise RelayerOutOfFundsError("the sender cannot pay for this call", **refusal.details())
    return reply.quantity()


def hex_of(data: bytes) -> str:
    """`data` as the node takes it: 0x-hex."""
    return "0x" + data.hex()
