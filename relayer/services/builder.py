"""The service core: a `CloseRequest` in, a checked, priced transaction the owner can sign out.

`TransactionBuilder.build` encodes the calldata (it depends on the request only), reads everything it checks
against in one go through the `ChainClient` (position, price, latest block, fees, and the gas estimate from
the owner, which is also the simulation), then runs the pure `assemble`: precise checks first (position open,
price fresh, size, slippage, trigger sides), the simulation's verdict after, then gas, fees and the preview.
REST routes, the CLI and the library API only adapt arguments and results.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import rlp  # type: ignore[import-untyped]  # eth-account's own RLP codec; it ships no type hints
from eth_account.typed_transactions.dynamic_fee_transaction import DynamicFeeTransaction
from eth_utils.address import to_canonical_address, to_checksum_address

from relayer.chain.client import ChainClient
from relayer.chain.quotes import ChainHead, CloseState, MarketsState, PositionQuote
from relayer.constants import (
    CLOSE_ALL_SIZE,
    ETH_DECIMALS,
    GAS_LIMIT_MARGIN_BPS,
    PNL_DECIMALS,
)
from relayer.domain import calldata
from relayer.domain.fees import Fees, fee_fields, gas_limit_with_margin, max_cost_wei
from relayer.domain.positions import (
    NO_ORDER,
    Position,
    TriggerOrder,
    price_within_bound,
    realized_pnl_e8,
    side_name,
    trigger_on_valid_side,
)
from relayer.domain.requests import (
    SIZE_DELTA,
    STOP_LOSS,
    TAKE_PROFIT,
    CloseAction,
    CloseRequest,
    parse_close_request,
    parse_owner,
    parse_position_id,
)
from relayer.domain.units import format_fixed, size_text, usd_text
from relayer.errors import (
    InvalidFieldError,
    InvalidTriggerPriceError,
    PositionNotFoundError,
    PriceNotSetError,
    PriceSlippageError,
    SizeDeltaExceedsPositionError,
    StalePriceError,
)


def _order(order: TriggerOrder) -> dict[str, Any] | None:
    return {"price": usd_text(order.price_e8), "closePercent": order.close_bps} if order.active else None


# --- results ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClosePreview:
    """What the transaction does to the position at the current oracle price, in chain units."""

    position: Position
    current_price_e8: int
    price_updated_at: int
    size_delta: int
    """Size the transaction closes (0 when it only sets orders)."""
    allowed_price_e8: int
    take_profit: TriggerOrder
    """The position's take-profit after the transaction (cleared by a full close)."""
    stop_loss: TriggerOrder

    @property
    def size_after(self) -> int:
        return self.position.size - self.size_delta

    @property
    def realized_pnl_e8(self) -> int:
        """PnL booked by this close, rounded exactly as the vault rounds it."""
        p = self.position
        return realized_pnl_e8(p.is_long, p.entry_price_e8, self.current_price_e8, self.size_delta)

    @property
    def remaining_unrealized_pnl_e8(self) -> int:
        """PnL of what stays open if it were closed at the current price (vault rounding)."""
        p = self.position
        return realized_pnl_e8(p.is_long, p.entry_price_e8, self.current_price_e8, self.size_after)

    def to_dict(self) -> dict[str, Any]:
        """The wire shape: exact decimal strings in human units (base asset, USD)."""
        p = self.position
        return {
            "positionId": "0x" + p.position_id.hex(),
            "owner": p.owner,
            "market": p.market,
            "side": side_name(p.is_long),
            "entryPrice": usd_text(p.entry_price_e8),
            "currentPrice": usd_text(self.current_price_e8),
            "priceUpdatedAt": self.price_updated_at,
            "allowedPrice": usd_text(self.allowed_price_e8) if self.allowed_price_e8 else None,
            "sizeBefore": size_text(p.size),
            "sizeDelta": size_text(self.size_delta),
            "sizeAfter": size_text(self.size_after),
            "realizedPnl": format_fixed(self.realized_pnl_e8, PNL_DECIMALS),
            "remainingUnrealizedPnl": format_fixed(self.remaining_unrealized_pnl_e8, PNL_DECIMALS),
            "takeProfit": _order(self.take_profit),
            "stopLoss": _order(self.stop_loss),
        }


@dataclass(frozen=True)
class BuiltTransaction:
    """A transaction checked against the chain, ready for the owner to sign, and what it will do."""

    action: CloseAction
    vault_address: str
    calldata: bytes
    chain_id: int
    sender: str
    nonce: int
    gas_estimate: int
    gas_limit: int
    fees: Fees
    preview: ClosePreview
    head: ChainHead
    """The block it was checked and simulated against."""

    @property
    def required_gas_fee_wei(self) -> int:
        """The most the sender can pay for gas: gas limit x the per-gas price cap."""
        return max_cost_wei(self.gas_limit, self.fees)

    @property
    def transaction(self) -> dict[str, str]:
        """The unsigned transaction as a JSON-RPC transaction object (what `eth_sendTransaction` takes).

        Every quantity is a 0x-hex string, never a JSON number: JavaScript's `JSON.parse` silently rounds
        integers above 2**53, and a wei amount gets there quickly. `eth_account.Account.sign_transaction`
        accepts this dict as is (hex quantities, `type` "0x2", and `from`, which it checks against the key).
        Legacy chains (no base fee) get `gasPrice` and no `type`: eth-account refuses `type` "0x0".
        """
        return {
            "chainId": hex(self.chain_id),
            "from": self.sender,
            "to": self.vault_address,
            "data": "0x" + self.calldata.hex(),
            "value": hex(0),
            "gas": hex(self.gas_limit),
            "nonce": hex(self.nonce),
            **{name: hex(value) for name, value in fee_fields(self.fees).items()},
        }

    @property
    def serialized_transaction(self) -> bytes:
        """The same transaction, unsigned, as EIP-2718 bytes: what viem's `parseTransaction` and ethers'
        `Transaction.from` read, so a JavaScript client signs it without mapping any field.

        EIP-1559: `0x02 || rlp([chainId, nonce, maxPriorityFeePerGas, maxFeePerGas, gas, to, value, data,
        accessList])`. Legacy: the EIP-155 signing payload `rlp([nonce, gasPrice, gas, to, value, data,
        chainId, 0, 0])`. Either way its keccak is the hash the owner signs (tests/interop checks that against
        eth-account's signature and against viem's and ethers' parsers).
        """
        to = to_canonical_address(self.vault_address)
        if self.fees.gas_price_wei is not None:
            legacy = [self.nonce, self.fees.gas_price_wei, self.gas_limit, to, 0, self.calldata]
            payload: bytes = rlp.encode([*legacy, self.chain_id, 0, 0])
            return payload
        fields = [
            self.chain_id,
            self.nonce,
            self.fees.max_priority_fee_per_gas_wei,
            self.fees.max_fee_per_gas_wei,
            self.gas_limit,
            to,
            0,
            self.calldata,
            [],
        ]
        typed: bytes = bytes([DynamicFeeTransaction.transaction_type]) + rlp.encode(fields)
        return typed

    def to_dict(self) -> dict[str, Any]:
        """The wire shape of `POST /api/closeposition`.

        The transaction twice: `transaction` as a JSON-RPC object (eth-account's `sign_transaction`, a browser
        wallet's `eth_sendTransaction`) and `serializedTransaction` as unsigned EIP-2718 hex (viem, ethers).
        Wei and other quantities are hex or decimal strings, exact in any JSON parser; `gasEstimate` stays a
        JSON integer (gas is far below 2**53).
        """
        return {
            "calldata": "0x" + self.calldata.hex(),
            "vaultAddress": self.vault_address,
            "requiredGasFee": format_fixed(self.required_gas_fee_wei, ETH_DECIMALS),
            "action": self.action.value,
            "gasEstimate": self.gas_estimate,
            "transaction": self.transaction,
            "serializedTransaction": "0x" + self.serialized_transaction.hex(),
            "preview": self.preview.to_dict(),
        }


@dataclass(frozen=True)
class PositionSummary:
    """A position as the API shows it: with its market price and unrealized PnL at that price."""

    quote: PositionQuote

    def to_dict(self) -> dict[str, Any]:
        p, price = self.quote.position, self.quote.price_e8
        return {
            "positionId": "0x" + p.position_id.hex(),
            "owner": p.owner,
            "market": p.market,
            "side": side_name(p.is_long),
            "status": "open" if p.is_open else "closed",
            "size": size_text(p.size),
            "entryPrice": usd_text(p.entry_price_e8),
            "currentPrice": usd_text(price),
            "priceUpdatedAt": self.quote.price_updated_at,
            "unrealizedPnl": format_fixed(
                realized_pnl_e8(p.is_long, p.entry_price_e8, price, p.size), PNL_DECIMALS
            ),
            "takeProfit": _order(p.take_profit),
            "stopLoss": _order(p.stop_loss),
        }


@dataclass(frozen=True)
class OwnerPositions:
    owner: str
    positions: list[PositionSummary]

    def to_dict(self) -> dict[str, Any]:
        return {"owner": self.owner, "positions": [p.to_dict() for p in self.positions]}


@dataclass(frozen=True)
class Health:
    chain_id: int
    head: ChainHead
    vault_address: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "chainId": self.chain_id,
            "blockNumber": self.head.number,
            "blockTimestamp": self.head.timestamp,
            "vaultAddress": self.vault_address,
        }


def markets_to_dict(state: MarketsState) -> dict[str, Any]:
    """`GET /api/markets`: each market's price and its age against the latest block."""
    return {
        "blockNumber": state.head.number,
        "blockTimestamp": state.head.timestamp,
        "maxPriceAge": state.max_price_age_s,
        "markets": [
            {
                "symbol": m.market,
                "price": usd_text(m.price_e8),
                "updatedAt": m.updated_at,
                "ageSeconds": max(0, state.head.timestamp - m.updated_at),
                "stale": state.head.timestamp > m.updated_at + state.max_price_age_s,
            }
            for m in state.prices
        ],
    }


# --- pure core ----------------------------------------------------------------------------------------------


def encode_request(request: CloseRequest) -> bytes:
    """The calldata: close first, then orders, so orders apply to what remains; several calls: `multicall`."""
    pid = request.position_id
    calls = []
    if request.closes:
        size = CLOSE_ALL_SIZE if request.size_delta is None else request.size_delta
        calls.append(calldata.close_position(pid, size, request.allowed_price_e8))
    if request.take_profit is not None:
        calls.append(
            calldata.set_take_profit(pid, request.take_profit.price_e8, request.take_profit.close_bps)
        )
    if request.stop_loss is not None:
        calls.append(calldata.set_stop_loss(pid, request.stop_loss.price_e8, request.stop_loss.close_bps))
    return calls[0] if len(calls) == 1 else calldata.multicall(calls)


def check_request(request: CloseRequest, state: CloseState) -> ClosePreview:
    """Check `request` against the chain state it was simulated on; the preview of what it will do.

    Precise checks come first, so a client learns *why* (e.g. `price_slippage` with both prices) rather than
    only that the simulation reverted; a revert none of them foresaw is raised last, decoded.

    Raises:
        PositionNotFoundError, StalePriceError, PriceNotSetError, SizeDeltaExceedsPositionError,
        InvalidFieldError, PriceSlippageError, InvalidTriggerPriceError, or the simulation's decoded revert.
    """
    quote = state.quote
    position = quote.position
    if not position.exists:
        raise PositionNotFoundError.unknown(position.position_id)
    if not position.is_open:
        raise PositionNotFoundError.closed(position.position_id)
    if quote.price_updated_at == 0:
        raise PriceNotSetError.of_market(position.market)
    if state.head.timestamp > quote.price_updated_at + state.max_price_age_s:
        raise StalePriceError.of_market(
            position.market,
            quote.price_updated_at,
            state.max_price_age_s,
            blockTimestamp=state.head.timestamp,
        )

    size_delta = 0
    if request.closes:
        size_delta = position.size if request.size_delta is None else request.size_delta
    if size_delta > position.size:
        raise SizeDeltaExceedsPositionError(
            "sizeDelta is larger than the position",
            sizeDelta=size_text(size_delta),
            size=size_text(position.size),
        )
    if request.sets_triggers and size_delta == position.size:
        raise InvalidFieldError(
            SIZE_DELTA,
            "closes the whole position, so no take-profit or stop-loss can be set on it afterwards;"
            " close less, or close it without takeProfit/stopLoss",
            size=size_text(position.size),
        )
    price = quote.price_e8
    if request.closes and not price_within_bound(position.is_long, price, request.allowed_price_e8):
        raise PriceSlippageError.worse_than_allowed(
            usd_text(price), usd_text(request.allowed_price_e8), side_name(position.is_long)
        )
    take_profit = _checked_order(position, request.take_profit, True, price, position.take_profit)
    stop_loss = _checked_order(position, request.stop_loss, False, price, position.stop_loss)
    if state.simulation_error is not None:
        raise state.simulation_error
    if size_delta == position.size:  # a full close clears both orders
        take_profit = stop_loss = NO_ORDER
    return ClosePreview(
        position, price, quote.price_updated_at, size_delta, request.allowed_price_e8, take_profit, stop_loss
    )


def _checked_order(
    position: Position,
    update: TriggerOrder | None,
    is_take_profit: bool,
    price_e8: int,
    current: TriggerOrder,
) -> TriggerOrder:
    if update is None:
        return current
    if not update.active:
        return NO_ORDER
    if not trigger_on_valid_side(position.is_long, is_take_profit, update.price_e8, price_e8):
        raise InvalidTriggerPriceError.wrong_side(
            is_take_profit,
            usd_text(update.price_e8),
            usd_text(price_e8),
            is_long=position.is_long,
            field=TAKE_PROFIT if is_take_profit else STOP_LOSS,
        )
    return update


def assemble(
    request: CloseRequest,
    data: bytes,
    state: CloseState,
    vault_address: str,
    *,
    gas_limit_margin_bps: int = GAS_LIMIT_MARGIN_BPS,
) -> BuiltTransaction:
    """Checks, preview, gas and fees: everything after the chain reads, with no I/O."""
    preview = check_request(request, state)
    assert state.gas_estimate is not None  # an open position is always simulated
    return BuiltTransaction(
        action=request.action,
        vault_address=to_checksum_address(vault_address),
        calldata=data,
        chain_id=state.chain_id,
        sender=preview.position.owner,
        nonce=state.nonce,
        gas_estimate=state.gas_estimate,
        gas_limit=gas_limit_with_margin(state.gas_estimate, gas_limit_margin_bps),
        fees=state.fees,
        preview=preview,
        head=state.head,
    )


# --- the service --------------------------------------------------------------------------------------------


class TransactionBuilder:
    """Builds close / modify transactions and serves the position and market reads behind the REST API."""

    def __init__(self, chain: ChainClient, *, gas_limit_margin_bps: int = GAS_LIMIT_MARGIN_BPS) -> None:
        self.chain = chain
        self.gas_limit_margin_bps = gas_limit_margin_bps

    async def build(self, request: CloseRequest) -> BuiltTransaction:
        data = encode_request(request)
        state = await self.chain.read_close_state(request.position_id, data)
        return assemble(
            request, data, state, self.chain.vault_address, gas_limit_margin_bps=self.gas_limit_margin_bps
        )

    async def build_from_json(self, body: Mapping[str, Any]) -> BuiltTransaction:
        """`build` for a decoded JSON body (see `relayer.domain.jsonio.loads_object`)."""
        return await self.build(parse_close_request(body))

    async def position(self, position_id: str) -> PositionSummary:
        """A position by its 0x-hex id, open or closed.

        Raises:
            InvalidFieldError: a malformed id. PositionNotFoundError: no position ever had this id.
        """
        pid = parse_position_id(position_id)
        _, (quote,) = await self.chain.read_positions([pid])
        if not quote.position.exists:
            raise PositionNotFoundError.unknown(pid)
        return PositionSummary(quote)

    async def positions_of(self, owner: str, *, include_closed: bool = False) -> OwnerPositions:
        """The owner's positions, oldest first; closed ones only when asked.

        Raises:
            InvalidFieldError: `owner` is not an address.
        """
        address = parse_owner(owner)
        ids = await self.chain.position_ids_of(address)
        _, quotes = await self.chain.read_positions(ids)
        shown = [PositionSummary(q) for q in quotes if include_closed or q.position.is_open]
        return OwnerPositions(address, shown)

    async def markets(self) -> MarketsState:
        return await self.chain.read_markets()

    async def health(self) -> Health:
        """Raises `ChainUnavailableError` when the node does not answer."""
        return Health(self.chain.chain_id, await self.chain.head(), self.chain.vault_address)
