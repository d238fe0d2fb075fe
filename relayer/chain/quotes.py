"""What `relayer.chain.client.ChainClient` reads for the builder and the REST API: plain values."""

from __future__ import annotations

from dataclasses import dataclass

from relayer.domain.blocks import ChainHead as ChainHead  # re-exported: the builder's reads return it
from relayer.domain.fees import Fees
from relayer.domain.positions import NO_PLAN, ExitPlan, Position
from relayer.errors import RelayerError


@dataclass(frozen=True)
class MarketPrice:
    """The oracle price of a market (USD, 8 decimals) and the block timestamp it was set at (0 = never)."""

    market: str
    price_e8: int
    updated_at: int


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
    plan: ExitPlan = NO_PLAN
    """The position's pending orders and `D` (`ordersOf`), read in the same batch."""


@dataclass(frozen=True)
class MarketsState:
    head: ChainHead
    max_price_age_s: int
    prices: list[MarketPrice]
