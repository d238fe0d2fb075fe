"""`Web3Gateway`: the chain port (`relayer.chain.gateway.ChainGateway`) over any `Web3`, the embedded
eth-tester chain in particular; and `fee_suggestion_wei`, the node's fee suggestion over any `Web3`, which
the relay's node and `relayer.chain.transact` read too.

py-evm is not thread-safe, so every access goes through one lock, in a worker thread when called from async
code.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

import anyio.to_thread
from eth_utils.address import to_checksum_address
from web3 import Web3
from web3.exceptions import Web3RPCError
from web3.types import RPCEndpoint, TxParams

from relayer.chain.artifact import load_artifact
from relayer.chain.decoding import (
    decode_bytes32_array,
    decode_market_price,
    decode_markets,
    decode_position_with_price,
    decode_uint,
)
from relayer.chain.gateway import CloseState, MarketsState, PositionQuote, VaultGateway
from relayer.chain.revert import translate
from relayer.chain.vault import call_chain
from relayer.domain import calldata
from relayer.domain.blocks import ChainHead, head_from_block, quantity
from relayer.domain.fees import node_fees
from relayer.domain.markets import symbol_to_bytes32
from relayer.errors import VaultNotDeployedError

T = TypeVar("T")


class Web3Gateway(VaultGateway):
    """`ChainGateway` over a `Web3` object, serialized by one lock (py-evm is not thread-safe).

    The `*_sync` methods are the implementation and serve the synchronous library API; the async methods run
    them in a worker thread so the event loop never blocks on py-evm.
    """

    def __init__(self, w3: Web3, vault_address: str, *, lock: threading.RLock | None = None) -> None:
        super().__init__(vault_address)
        self.w3 = w3
        self.lock = lock or threading.RLock()

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
            return self._head()

    def read_close_state_sync(self, position_id: bytes, data: bytes) -> CloseState:
        with self.lock:
            quote = self._quote(position_id)
            head = self._head()
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
            head = self._head()
            return head, [self._quote(pid) for pid in position_ids]

    def position_ids_of_sync(self, owner: str) -> list[bytes]:
        with self.lock:
            return decode_bytes32_array(
                self._call(calldata.encode_call("positionIdsOf", to_checksum_address(owner)))
            )

    def read_markets_sync(self) -> MarketsState:
        with self.lock:
            symbols = decode_markets(self._call(calldata.encode_call("markets")))
            prices = [
                decode_market_price(
                    symbol, self._call(calldata.encode_call("priceOf", symbol_to_bytes32(symbol)))
                )
                for symbol in symbols
            ]
            head = self._head()
            max_age = decode_uint(self._call(calldata.encode_call("maxPriceAge")))
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

    def _head(self) -> ChainHead:
        return head_from_block(call_chain(lambda: self.w3.eth.get_block("latest")))

    def _call(self, data: bytes) -> bytes:
        return bytes(call_chain(lambda: self.w3.eth.call({"to": self._vault, "data": data})))

    def _quote(self, position_id: bytes) -> PositionQuote:
        return decode_position_with_price(
            position_id, self._call(calldata.encode_call("getPositionWithPrice", position_id))
        )

    def _max_price_age(self) -> int:
        if self._max_age is None or self._max_age_due():
            return self._note_max_age(decode_uint(self._call(calldata.encode_call("maxPriceAge"))))
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
