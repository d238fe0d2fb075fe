"""The chain port: the reads the transaction builder and the REST API need, as one `ChainGateway` protocol.

This module holds the port only: the protocol, the values it returns, and what both adapters keep alike
(`VaultGateway`: the vault's address, the chain id, the per-block caches). The adapters live beside it:

- `relayer.chain.jsonrpc_gateway.JsonRpcGateway`: async, for any JSON-RPC node; one batch per close in the
  common case, over the batching transport of `relayer.chain.jsonrpc`.
- `relayer.chain.web3_gateway.Web3Gateway`: the same reads over any `Web3` (the embedded eth-tester chain in
  particular), serialized by one lock.

Both decode the vault's answers with `relayer.chain.decoding`. Node errors leave them as `RelayerError`s:
reverts decoded by `relayer.chain.revert`, unreachable nodes as `ChainUnavailableError`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from eth_utils.address import to_checksum_address

from relayer.chain.vault import MarketPrice
from relayer.constants import MAX_PRICE_AGE_CACHE_S
from relayer.domain.blocks import ChainHead as ChainHead  # re-exported: the builder's reads return it
from relayer.domain.fees import Fees
from relayer.domain.positions import Position
from relayer.errors import RelayerError

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


# --- what both adapters keep --------------------------------------------------------------------------------


class VaultGateway:
    """The state both adapters keep alike: the vault's address, the chain id `start()` reads, the vault's
    `maxPriceAge` (re-read after `MAX_PRICE_AGE_CACHE_S`) and the node's fee suggestion (once per block)."""

    def __init__(self, vault_address: str) -> None:
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
            raise RuntimeError(f"{type(self).__name__}.start() has not run")
        return self._chain_id

    @property
    def started(self) -> bool:
        return self._chain_id is not None

    def _max_age_due(self) -> bool:
        """Whether the cached `maxPriceAge` is missing or older than `MAX_PRICE_AGE_CACHE_S`."""
        return self._max_age is None or time.monotonic() - self._max_age[0] > MAX_PRICE_AGE_CACHE_S

    def _note_max_age(self, max_age_s: int) -> int:
        self._max_age = (time.monotonic(), max_age_s)
        return max_age_s
