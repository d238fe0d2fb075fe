"""The service core: a `CloseRequest` in, a checked, priced transaction the owner can sign out.

`TransactionBuilder.build` encodes the calldata (it depends on the request only), reads everything it checks
against in one go through the `ChainClient` (position, price, latest block, fees, and the gas estimate from
the owner, which is also the simulation), then runs the pure `assemble`: precise checks first (position open,
price fresh, size, slippage, trigger sides), the simulation's verdict after, then gas, fees and the preview.
Its answers (`BuiltTransaction`, `ClosePreview`, `PositionSummary`, ...) and their wire shapes are in
`relayer.services.builder_answers`. REST routes, the CLI and the library API only adapt arguments and results.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from relayer.chain.client import ChainClient
from relayer.chain.quotes import CloseState, MarketsState, PositionQuote
from relayer.constants import CLOSE_ALL_SIZE, GAS_LIMIT_MARGIN_BPS
from relayer.domain import calldata
from relayer.domain.addresses import checksum_address as to_checksum_address
from relayer.domain.exit_plans import (
    OrderChange,
    checked_change,
    plan_after,
    plan_after_close,
    rights_needed,
)
from relayer.domain.fees import gas_limit_with_margin
from relayer.domain.markets import symbol_to_bytes32
from relayer.domain.positions import (
    NO_ORDER,
    ExitPlan,
    Position,
    TriggerOrder,
    price_within_bound,
    side_name,
    trigger_on_valid_side,
)
from relayer.domain.requests import (
    SIZE_DELTA,
    STOP_LOSS,
    TAKE_PROFIT,
    CloseRequest,
    parse_close_request,
    parse_owner,
    parse_position_id,
)
from relayer.domain.units import size_text, usd_text
from relayer.errors import (
    InvalidFieldError,
    InvalidTriggerPriceError,
    PositionNotFoundError,
    PriceNotSetError,
    PriceSlippageError,
    SizeDeltaExceedsPositionError,
    StalePriceError,
)
from relayer.services.builder_answers import (
    BuiltTransaction,
    ClosePreview,
    ExitClose,
    ExitPreview,
    Health,
    OwnerPositions,
    PlanPreview,
    PositionSummary,
    Preview,
)

P = TypeVar("P", bound=Preview)
"""A preview's type, carried from `priced`'s argument to the `BuiltTransaction` it returns."""

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
    check_open_and_priced(state)
    quote = state.quote
    position = quote.position
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
    plan = request_plan_after(request, position.is_long, position.size - size_delta, price, state.plan)
    if state.simulation_error is not None:
        raise state.simulation_error
    if size_delta == position.size:  # a full close clears both orders
        take_profit = stop_loss = NO_ORDER
    return ClosePreview(
        position,
        price,
        quote.price_updated_at,
        size_delta,
        request.allowed_price_e8,
        take_profit,
        stop_loss,
        plan,
    )


def check_open_and_priced(state: CloseState) -> None:
    """The position exists and is open, and its market's price is set and fresh at the latest block.

    Raises:
        PositionNotFoundError, PriceNotSetError, StalePriceError.
    """
    quote = state.quote
    position = quote.position
    if not position.exists:
        raise PositionNotFoundError.unknown(position.position_id)
    if not position.is_open:
        raise PositionNotFoundError.closed(position.position_id)
    _check_price(position.market, quote.price_updated_at, state)


def _check_price(market: str, updated_at: int, state: CloseState) -> None:
    if updated_at == 0:
        raise PriceNotSetError.of_market(market)
    if state.head.timestamp > updated_at + state.max_price_age_s:
        raise StalePriceError.of_market(
            market, updated_at, state.max_price_age_s, blockTimestamp=state.head.timestamp
        )


def request_plan_after(
    request: CloseRequest, is_long: bool, size_after: int, price_e8: int, plan: ExitPlan
) -> ExitPlan:
    """The plan after a `CloseRequest`, in the order its calls run: the close (`plan_after_close`), then the
    primary take-profit (`setTakeProfit`: order 0, no trail; price 0 cancels), then the primary stop
    (`setStopLoss`: order 4, no trail).

    Raises:
        The vault's own errors for an order it would refuse (`plan_after`).
    """
    pid = request.position_id
    if request.closes:
        plan = plan_after_close(size_after, plan)
    for order_id, update in ((0, request.take_profit), (4, request.stop_loss)):
        if update is None:
            continue
        change = (
            OrderChange(pid, set=((order_id, update.price_e8, update.close_bps, 0),))
            if update.active
            else OrderChange(pid, cancel=(order_id,))
        )
        plan = plan_after(is_long, size_after, price_e8, plan, change)
    return plan


def check_orders(change: OrderChange, state: CloseState) -> PlanPreview:
    """Check an order change against the chain state it was simulated on; the plan after it, with the
    rights an operator needs for it judged on that same state (`rights_needed`).

    The vault accepts a change that changes nothing (a `setOrder` repeating the order, a `cancelOrder` of an
    empty id) and the sender would pay for it: refused here instead.

    Raises:
        PositionNotFoundError, PriceNotSetError, StalePriceError, the vault's own error for a change it would
        refuse (`plan_after`), OrderNotFoundError (a cancelled id holds no order),
        NothingToChangeError (the plan after is the plan now: same orders, same `D`), or the simulation's
        decoded revert.
    """
    check_open_and_priced(state)
    position, price = state.quote.position, state.quote.price_e8
    plan = checked_change(position.is_long, position.size, price, state.plan, change)
    if state.simulation_error is not None:
        raise state.simulation_error
    return PlanPreview(position, price, plan, rights_needed(position.is_long, state.plan, change))


def check_exit(owner: str, market: str | None, state: CloseState, quotes: list[PositionQuote]) -> ExitPreview:
    """Check an emergency exit of `owner` (in `market` only, unless None) against the chain state: it closes
    every open position there, each whole at its market's oracle price, and reverts as a whole if one of
    those prices is stale or unset (the vault's `_emergencyExit`).

    Raises:
        PositionNotFoundError: no open position (in that market). PriceNotSetError, StalePriceError. Or the
        simulation's decoded revert.
    """
    market_id = symbol_to_bytes32(market) if market is not None else None
    closes = [
        q
        for q in quotes
        if q.position.is_open and (market_id is None or symbol_to_bytes32(q.position.market) == market_id)
    ]
    if not closes:
        where = f" in {market}" if market is not None else ""
        raise PositionNotFoundError(f"the account has no open position{where}", owner=owner, market=market)
    for q in closes:
        _check_price(q.position.market, q.price_updated_at, state)
    if state.simulation_error is not None:
        raise state.simulation_error
    return ExitPreview(owner, market, tuple(ExitClose(q.position, q.price_e8) for q in closes))


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
) -> BuiltTransaction[ClosePreview]:
    """Checks, preview, gas and fees: everything after the chain reads, with no I/O."""
    preview = check_request(request, state)
    return priced(
        request.action, data, state, preview, preview.position.owner, vault_address, gas_limit_margin_bps
    )


def priced(
    action: str,
    data: bytes,
    state: CloseState,
    preview: P,
    sender: str,
    vault_address: str,
    gas_limit_margin_bps: int = GAS_LIMIT_MARGIN_BPS,
) -> BuiltTransaction[P]:
    """A checked transaction with its gas and fees (sent by `sender`, the owner it was simulated from)."""
    assert state.gas_estimate is not None  # checked, so simulated without a revert
    return BuiltTransaction(
        action=action,
        vault_address=to_checksum_address(vault_address),
        calldata=data,
        chain_id=state.chain_id,
        sender=sender,
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

    async def build(self, request: CloseRequest) -> BuiltTransaction[ClosePreview]:
        data = encode_request(request)
        state = await self.chain.read_close_state(request.position_id, data)
        return assemble(
            request, data, state, self.chain.vault_address, gas_limit_margin_bps=self.gas_limit_margin_bps
        )

    async def build_orders(self, change: OrderChange) -> BuiltTransaction[PlanPreview]:
        """A transaction setting / cancelling exit orders (`setOrder`s and `cancelOrder`s, or a whole
        `setExitPlan`), simulated from the position's owner; its preview is the plan after it.

        Raises:
            PositionNotFoundError, PriceNotSetError, StalePriceError, the vault's own error for a change it
            would refuse, or the simulation's decoded revert.
        """
        data = change.calldata()
        state = await self.chain.read_close_state(change.position_id, data)
        preview = check_orders(change, state)
        action = "set_exit_plan" if change.whole_plan else "set_orders"
        return priced(
            action,
            data,
            state,
            preview,
            preview.position.owner,
            self.chain.vault_address,
            self.gas_limit_margin_bps,
        )

    async def build_emergency_exit(self, owner: str, market: str | None) -> BuiltTransaction[ExitPreview]:
        """`emergencyExit(owner, market)` (None: every market) from the owner: closes each open position.

        Raises:
            InvalidFieldError: `owner` is not an address. InvalidMarketError: `market` is not a symbol.
            PositionNotFoundError: no open position (in that market). PriceNotSetError, StalePriceError, or
            the simulation's decoded revert.
        """
        address = parse_owner(owner)
        data = calldata.emergency_exit(address, market)
        state, quotes = await self.chain.read_exit_state(address, data)
        preview = check_exit(address, market, state, quotes)
        return priced(
            "emergency_exit",
            data,
            state,
            preview,
            address,
            self.chain.vault_address,
            self.gas_limit_margin_bps,
        )

    async def plan(self, position_id: str) -> PlanPreview:
        """A position's pending orders at the current price (none once closed), by its 0x-hex id.

        Raises:
            InvalidFieldError: a malformed id. PositionNotFoundError: no position ever had this id.
        """
        pid = parse_position_id(position_id)
        _, quote, plan = await self.chain.read_plan(pid)
        if not quote.position.exists:
            raise PositionNotFoundError.unknown(pid)
        return PlanPreview(quote.position, quote.price_e8, plan)

    async def build_from_json(self, body: Mapping[str, Any]) -> BuiltTransaction[ClosePreview]:
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
