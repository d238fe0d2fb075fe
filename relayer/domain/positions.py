"""Positions as the relayer sees them, and the vault's PnL arithmetic mirrored exactly in Python.

Everything here is pure: integers in the vault's units in, integers out. `realized_pnl_e8` and `tier_size`
must agree with `Vault.realizedPnl` and `Vault.tierSize` to the last unit (property tests check them against
the chain).
"""

from __future__ import annotations

from dataclasses import dataclass

from relayer.constants import BPS_DENOMINATOR, MIN_REMAINING_SIZE, SIZE_DECIMALS

SIZE_ONE = 10**SIZE_DECIMALS


@dataclass(frozen=True)
class TriggerOrder:
    """A take-profit or stop-loss as the vault stores it: a price and the share of the size it closes.

    `price_e8 == 0` means none: a position's order that is not set, or in a request (`CloseRequest`, the
    trading service) the order cancelled, with `close_bps` 0. One type for both, since the vault's
    `setTakeProfit(id, price, closeBps)` takes exactly what it stores.
    """

    price_e8: int
    close_bps: int

    @property
    def active(self) -> bool:
        """Whether the order is set (in a request: sets one rather than cancelling it)."""
        return self.price_e8 != 0


NO_ORDER = TriggerOrder(0, 0)
"""No order: what a full close leaves, and what a request with price 0 asks for."""


@dataclass(frozen=True)
class Position:
    """A vault position in chain units (size 18 decimals, prices 8 decimals)."""

    position_id: bytes
    owner: str
    market: str
    is_long: bool
    size: int
    entry_price_e8: int
    take_profit: TriggerOrder
    stop_loss: TriggerOrder

    @property
    def exists(self) -> bool:
        return self.owner != "0x0000000000000000000000000000000000000000"

    @property
    def is_open(self) -> bool:
        return self.size > 0


def side_name(is_long: bool) -> str:
    """`"long"` or `"short"`: how every answer names a side."""
    return "long" if is_long else "short"


def realized_pnl_e8(is_long: bool, entry_price_e8: int, exit_price_e8: int, size_delta: int) -> int:
    """USD PnL (8 decimals) of closing `size_delta` at `exit_price_e8`, rounded in the vault's favour.

    A profit rounds down, a loss rounds up (away from zero), exactly as the contract does.

    >>> realized_pnl_e8(True, 9_500_000_000_000, 9_620_000_000_000, 14 * 10**16)  # +$168 on 0.14 BTC
    16800000000
    >>> realized_pnl_e8(False, 100, 101, 1)  # a one-wei loss still costs one unit
    -1
    """
    profit = exit_price_e8 > entry_price_e8 if is_long else exit_price_e8 < entry_price_e8
    product = abs(exit_price_e8 - entry_price_e8) * size_delta
    if profit:
        return product // SIZE_ONE
    return -((product + SIZE_ONE - 1) // SIZE_ONE)


def tier_size(size: int, share_bps: int, plan_bps: int) -> tuple[int, int]:
    """The size rule (`Vault.tierSize`): what executing an order of `share_bps` closes from `size` when the
    plan's remaining denominator is `plan_bps`, and the denominator after it.

    A share at or above what remains of the plan closes everything (and leaves no plan); otherwise
    `floor(size * share / plan)`, or everything when the rest would fall below `MIN_REMAINING_SIZE`. A ladder
    of 25/25/25 and a stop for the rest closes 0.105 of 0.42 four times:

    >>> tier_size(42 * 10**16, 2_500, 10_000), tier_size(315 * 10**15, 2_500, 7_500)
    ((105000000000000000, 7500), (105000000000000000, 5000))
    >>> tier_size(21 * 10**16, 10_000, 5_000), tier_size(10**9 + 1, 5_000, 10_000)
    ((210000000000000000, 0), (1000000001, 5000))
    """
    if share_bps >= plan_bps:
        return size, 0
    size_delta = size * share_bps // plan_bps
    if size - size_delta < MIN_REMAINING_SIZE:
        size_delta = size
    return size_delta, plan_bps - share_bps


@dataclass(frozen=True)
class OrderView:
    """One pending order as the vault's `ordersOf` lists it: ids 0..3 take-profits, 4..5 stops; `share_bps`
    of the plan, `trail_bps` (stops only, 0 = fixed) and what executing it now would close."""

    order_id: int
    is_take_profit: bool
    price_e8: int
    share_bps: int
    trail_bps: int
    size_if_executed: int

    @property
    def is_trailing(self) -> bool:
        return self.trail_bps != 0


@dataclass(frozen=True)
class ExitPlan:
    """A position's pending orders in the vault's execution priority (stops first, then take-profits by id)
    and the plan's remaining denominator `D` (`plan_bps`)."""

    orders: tuple[OrderView, ...]
    plan_bps: int

    def order(self, order_id: int) -> OrderView | None:
        return next((order for order in self.orders if order.order_id == order_id), None)


NO_PLAN = ExitPlan((), BPS_DENOMINATOR)
"""No pending order, a new plan (D = 10_000): what a position without orders holds."""


def order_crossed(is_long: bool, order: OrderView, price_e8: int) -> bool:
    """Whether the price reached the order: a long's take-profit at or above it, its stop at or below it
    (the other way round for a short)."""
    if is_long == order.is_take_profit:
        return price_e8 >= order.price_e8
    return price_e8 <= order.price_e8


def next_crossed(is_long: bool, orders: tuple[OrderView, ...] | list[OrderView], price_e8: int) -> int | None:
    """The order `executeTrigger` executes next at `price_e8` (`Vault._nextCrossed`), or None.

    Stops first, the one nearer the price first (a long's higher trigger; ties by id); then the first pending
    take-profit by id, if crossed (ids follow the order a price reaches them, so no later one can be crossed
    before it).
    """
    stops = [o for o in orders if not o.is_take_profit and order_crossed(is_long, o, price_e8)]
    if stops:
        return min(stops, key=lambda o: (-o.price_e8 if is_long else o.price_e8, o.order_id)).order_id
    take_profits = sorted((o for o in orders if o.is_take_profit), key=lambda o: o.order_id)
    if take_profits and order_crossed(is_long, take_profits[0], price_e8):
        return take_profits[0].order_id
    return None


def walk_fills(size: int, is_long: bool, plan: ExitPlan) -> list[tuple[int, int]]:
    """What each pending order closes if the price walks through every take-profit in turn and then back to
    the stops (which execute nearest first), by the size rule from `size` and the plan's `D`: the plan as a
    preview shows it, `(order id, size it closes)` in that order, orders that would find nothing left last
    with 0. The seed's ladder closes 0.105 of 0.42 four times:

    >>> orders = tuple(OrderView(i, i < 4, p, s, 0, 0) for i, p, s in [(4, 94, 10_000), (0, 97, 2_500),
    ...     (1, 98, 2_500), (2, 99, 2_500)])
    >>> walk_fills(42 * 10**16, True, ExitPlan(orders, 10_000))
    [(0, 105000000000000000), (1, 105000000000000000), (2, 105000000000000000), (4, 105000000000000000)]
    """
    take_profits = sorted((o for o in plan.orders if o.is_take_profit), key=lambda o: o.order_id)
    stops = sorted(
        (o for o in plan.orders if not o.is_take_profit),
        key=lambda o: (-o.price_e8 if is_long else o.price_e8, o.order_id),
    )
    fills: list[tuple[int, int]] = []
    plan_bps = plan.plan_bps
    for order in [*take_profits, *stops]:
        closed = 0
        if size > 0:
            closed, plan_bps = tier_size(size, order.share_bps, plan_bps)
            size -= closed
        fills.append((order.order_id, closed))
    return fills


def trailed_trigger(is_long: bool, price_e8: int, trail_bps: int) -> int:
    """Where `ratchetStop` moves a trailing stop at `price_e8`: `trail_bps` below it for a long, above it for
    a short (the distance rounded down, as the vault does).

    >>> trailed_trigger(True, 10_000_000, 150), trailed_trigger(False, 10_000_000, 150)
    (9850000, 10150000)
    """
    distance = price_e8 * trail_bps // BPS_DENOMINATOR
    return price_e8 - distance if is_long else price_e8 + distance


def ratchet_gain_bps(is_long: bool, trigger_e8: int, proposed_e8: int, price_e8: int) -> int:
    """How far ratcheting moves the stop the trader's way, in basis points of the price (rounded down;
    negative or zero: not a ratchet the vault accepts).

    >>> ratchet_gain_bps(True, 9_500, 9_600, 10_000), ratchet_gain_bps(False, 9_500, 9_600, 10_000)
    (100, -100)
    """
    gain = proposed_e8 - trigger_e8 if is_long else trigger_e8 - proposed_e8
    return gain * BPS_DENOMINATOR // price_e8


def trigger_on_valid_side(
    is_long: bool, is_take_profit: bool, trigger_price_e8: int, current_price_e8: int
) -> bool:
    """A take-profit must sit on the profitable side of the current price, a stop-loss on the losing side."""
    if is_long == is_take_profit:
        return trigger_price_e8 > current_price_e8
    return trigger_price_e8 < current_price_e8


def price_within_bound(is_long: bool, price_e8: int, allowed_price_e8: int) -> bool:
    """Whether closing at `price_e8` respects the slippage bound.

    A long may not close below `allowed_price_e8`, a short not above it; 0 means no bound.
    """
    if allowed_price_e8 == 0:
        return True
    return price_e8 >= allowed_price_e8 if is_long else price_e8 <= allowed_price_e8
