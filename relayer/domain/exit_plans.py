"""The vault's rules for exit orders, checked before anything is sent: the same checks in the same order as
`Vault.setExitPlan` and `Vault.setOrder`, raising the very error a revert would map to (same class, message
and details, `details.revert` included), so a plan the relayer accepts is one the vault accepts.

Orders are the vault's `ExitOrder` tuples `(orderId, price e8, shareBps, trailBps)`: ids 0..3 take-profits
(reached in id order: id 0 nearest the price), 4..5 stops (a `trailBps` makes one trail). Staleness of the
price and operator rights are not judged here (the builder's simulation and the trading service do).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from relayer.chain.revert import vault_error
from relayer.constants import (
    BPS_DENOMINATOR,
    FIRST_STOP_ID,
    MAX_TRIGGER_PRICE_E8,
    ORDER_COUNT,
    RIGHT_LOOSEN_OR_CANCEL_STOP,
    RIGHT_SET_TAKE_PROFIT,
    RIGHT_TIGHTEN_STOP,
    TAKE_PROFIT_COUNT,
)
from relayer.domain import calldata
from relayer.domain.calldata import ExitOrder
from relayer.domain.positions import ExitPlan, OrderView, tier_size
from relayer.errors import ExitPlanFullError, NothingToChangeError, OrderNotFoundError


def check_order(is_long: bool, price_e8: int, order: ExitOrder, take_profits: dict[int, int]) -> None:
    """`Vault._checkOrder`: price range, share range, trail, side of the current price `price_e8`, and a
    take-profit's place among the pending `take_profits` (id -> trigger price; its own id ignored).

    Raises:
        InvalidPriceError, InvalidCloseBpsError, InvalidTrailBpsError, InvalidTriggerPriceError,
        OrderOutOfSequenceError: as the vault reverts.
    """
    order_id, price, share, trail = order
    if price == 0 or price > MAX_TRIGGER_PRICE_E8:
        raise vault_error("InvalidPrice", price=price)
    if share == 0 or share > BPS_DENOMINATOR:
        raise vault_error("InvalidCloseBps", closeBps=share)
    take_profit = order_id < FIRST_STOP_ID
    if (trail != 0) if take_profit else (trail >= BPS_DENOMINATOR):
        raise vault_error("OrderTrailInvalid", orderId=order_id, trailBps=trail)
    valid = price > price_e8 if is_long == take_profit else price < price_e8
    if not valid:
        raise vault_error(
            "InvalidTriggerPrice", isTakeProfit=take_profit, triggerPrice=price, currentPrice=price_e8
        )
    if not take_profit:
        return
    for other in range(TAKE_PROFIT_COUNT):
        other_price = take_profits.get(other, 0)
        if other == order_id or other_price == 0:
            continue
        reached_first = other_price < price if is_long else other_price > price
        if reached_first != (other < order_id) or other_price == price:
            raise vault_error(
                "OrderOutOfSequence",
                orderId=order_id,
                price=price,
                otherOrderId=other,
                otherPrice=other_price,
            )


def check_exit_plan(is_long: bool, price_e8: int, orders: Sequence[ExitOrder]) -> None:
    """`Vault.setExitPlan`'s checks of a whole plan at the current price `price_e8`, in the vault's order:
    each order in the list (id, duplicate, `check_order` against the take-profits listed before it), then
    the partial shares (below 10_000 each) against 10_000.

    >>> check_exit_plan(True, 96_000, [(0, 97_000, 2_500, 0), (1, 98_000, 2_500, 0), (4, 94_000, 1, 200)])
    >>> check_exit_plan(True, 96_000, [(0, 97_000, 6_000, 0), (4, 94_000, 6_000, 0)])
    Traceback (most recent call last):
    ...
    relayer.errors.PlanSharesExceededError: the partial orders' shares would total 12000 bps, above the...

    Raises:
        InvalidOrderIdError, PlanOrderDuplicatedError, PlanSharesExceededError, and `check_order`'s errors.
    """
    seen: set[int] = set()
    written: dict[int, int] = {}
    shares = 0
    for order in orders:
        order_id, price, share, _ = order
        if order_id >= ORDER_COUNT:
            raise vault_error("OrderIdInvalid", orderId=order_id)
        if order_id in seen:
            raise vault_error("PlanOrderDuplicated", orderId=order_id)
        seen.add(order_id)
        check_order(is_long, price_e8, order, written)
        if share < BPS_DENOMINATOR:
            shares += share
        if order_id < FIRST_STOP_ID:
            written[order_id] = price
    if shares > BPS_DENOMINATOR:
        raise vault_error("PlanSharesExceeded", sharesBps=shares, remainingBps=BPS_DENOMINATOR)


def check_set_order(is_long: bool, price_e8: int, plan: ExitPlan, order: ExitOrder) -> int:
    """`Vault.setOrder`'s checks of one order against the position's pending `plan`; returns the plan's
    denominator `D` after it: a new plan (10_000) when no other partial order is pending and this id held
    none (or a full one), else unchanged.

    Raises:
        InvalidOrderIdError, PlanSharesExceededError, and `check_order`'s errors.
    """
    order_id, _, share, _ = order
    if order_id >= ORDER_COUNT:
        raise vault_error("OrderIdInvalid", orderId=order_id)
    take_profits = {o.order_id: o.price_e8 for o in plan.orders if o.is_take_profit}
    check_order(is_long, price_e8, order, take_profits)
    old = plan.order(order_id)
    others = sum(o.share_bps for o in plan.orders if o.order_id != order_id and o.share_bps < BPS_DENOMINATOR)
    new_plan = others == 0 and (old is None or old.share_bps >= BPS_DENOMINATOR)
    plan_bps = BPS_DENOMINATOR if new_plan else plan.plan_bps
    shares = others + (share if share < BPS_DENOMINATOR else 0)
    if shares > plan_bps:
        raise vault_error("PlanSharesExceeded", sharesBps=shares, remainingBps=plan_bps)
    return plan_bps


# --- order changes and the plan after them ------------------------------------------------------------------

_Orders = dict[int, tuple[int, int, int]]
"""A position's pending orders as the vault stores them: id -> (price e8, share bps, trail bps)."""


@dataclass(frozen=True)
class OrderChange:
    """A change of a position's exit orders, sent as one transaction.

    `whole_plan`: one `setExitPlan(set)` (every order not listed cancelled, the plan's `D` back to 10_000);
    otherwise `setOrder` for each of `set`, in the order given. Then `cancelOrder` for each of `cancel`. One
    call goes out as is, several as one `multicall` (all or nothing).
    """

    position_id: bytes
    set: tuple[ExitOrder, ...] = ()
    cancel: tuple[int, ...] = ()
    whole_plan: bool = False

    def calls(self) -> list[bytes]:
        pid = self.position_id
        calls = (
            [calldata.set_exit_plan(pid, list(self.set))]
            if self.whole_plan
            else [calldata.set_order(pid, *order) for order in self.set]
        )
        return calls + [calldata.cancel_order(pid, order_id) for order_id in self.cancel]

    def calldata(self) -> bytes:
        """The transaction's calldata: the single call, or a `multicall` of them."""
        calls = self.calls()
        return calls[0] if len(calls) == 1 else calldata.multicall(calls)


def encode_change(change: OrderChange) -> bytes:
    return change.calldata()


def _orders_of(plan: ExitPlan) -> _Orders:
    return {o.order_id: (o.price_e8, o.share_bps, o.trail_bps) for o in plan.orders}


def _view(size: int, orders: _Orders, plan_bps: int) -> ExitPlan:
    """What `ordersOf` reports for `orders` on a position of `size`: stops (4, 5), then take-profits by id,
    each with `tierSize(size, share, D)`; no orders when the position is closed."""
    if size == 0:
        return ExitPlan((), plan_bps)
    views = []
    for k in range(ORDER_COUNT):
        order_id = (k + FIRST_STOP_ID) % ORDER_COUNT
        if order_id not in orders:
            continue
        price, share, trail = orders[order_id]
        closes, _ = tier_size(size, share, plan_bps)
        views.append(OrderView(order_id, order_id < FIRST_STOP_ID, price, share, trail, closes))
    return ExitPlan(tuple(views), plan_bps)


def _partial_shares_except(orders: _Orders, order_id: int) -> int:
    return sum(share for i, (_, share, _) in orders.items() if i != order_id and share < BPS_DENOMINATOR)


def _stop_is_tighter(
    is_long: bool, was: tuple[int, int, int], was_plan_bps: int, now: tuple[int, int, int], now_plan_bps: int
) -> bool:
    """`Vault._stopIsTighter`: the trigger does not move away from the price, the effective fraction
    `min(1, share / D)` does not shrink, and the stop neither stops trailing nor trails wider."""
    if now[0] < was[0] if is_long else now[0] > was[0]:
        return False
    was_num, was_den = (1, 1) if was[1] >= was_plan_bps else (was[1], was_plan_bps)
    now_num, now_den = (1, 1) if now[1] >= now_plan_bps else (now[1], now_plan_bps)
    if now_num * was_den < was_num * now_den:
        return False
    return not (was[2] != 0 and (now[2] == 0 or now[2] > was[2]))


_NONE = (0, 0, 0)


def stop_change_right(
    is_long: bool,
    was: tuple[int, int, int],
    was_plan_bps: int,
    now: tuple[int, int, int],
    now_plan_bps: int,
) -> int:
    """`Vault._stopChangeRight`: the right an operator needs to turn stop `was` (price, share, trail under
    `was_plan_bps`; price 0 = none) into `now`: 0 when nothing changes, `RIGHT_TIGHTEN_STOP` for a new or
    tighter stop, else `RIGHT_LOOSEN_OR_CANCEL_STOP` (a cancellation included)."""
    if now[0] == 0:
        return 0 if was[0] == 0 else RIGHT_LOOSEN_OR_CANCEL_STOP
    if was[0] == 0:
        return RIGHT_TIGHTEN_STOP
    same_fraction = was[1] >= BPS_DENOMINATOR or was_plan_bps == now_plan_bps
    if now == was and same_fraction:
        return 0
    if _stop_is_tighter(is_long, was, was_plan_bps, now, now_plan_bps):
        return RIGHT_TIGHTEN_STOP
    return RIGHT_LOOSEN_OR_CANCEL_STOP


def _apply(
    is_long: bool, price_e8: int | None, plan: ExitPlan, change: OrderChange
) -> tuple[_Orders, int, int]:
    """Steps `change` through the vault's logic: the orders and `D` after it, and the rights it needs.
    With `price_e8` the vault's checks run first at each step (raising its errors); with None they are
    skipped (rights of a change known to be valid)."""
    orders = _orders_of(plan)
    plan_bps = plan.plan_bps
    rights = 0
    if change.whole_plan:
        if price_e8 is not None:
            check_exit_plan(is_long, price_e8, change.set)
        new: _Orders = {order_id: (price, share, trail) for order_id, price, share, trail in change.set}
        if any(i < FIRST_STOP_ID for i in [*orders, *new]):
            rights |= RIGHT_SET_TAKE_PROFIT
        for stop_id in range(FIRST_STOP_ID, ORDER_COUNT):
            rights |= stop_change_right(
                is_long, orders.get(stop_id, _NONE), plan_bps, new.get(stop_id, _NONE), BPS_DENOMINATOR
            )
        orders, plan_bps = new, BPS_DENOMINATOR
    else:
        for order in change.set:
            order_id, price, share, trail = order
            if price_e8 is not None:
                plan_bps_after = check_set_order(is_long, price_e8, _view(1, orders, plan_bps), order)
            else:
                old = orders.get(order_id)
                new_plan = _partial_shares_except(orders, order_id) == 0 and (
                    old is None or old[1] >= BPS_DENOMINATOR
                )
                plan_bps_after = BPS_DENOMINATOR if new_plan else plan_bps
            if order_id < FIRST_STOP_ID:
                rights |= RIGHT_SET_TAKE_PROFIT
            else:
                rights |= stop_change_right(
                    is_long, orders.get(order_id, _NONE), plan_bps, (price, share, trail), plan_bps_after
                )
            orders[order_id] = (price, share, trail)
            plan_bps = plan_bps_after
    for order_id in change.cancel:
        if order_id >= ORDER_COUNT:
            raise vault_error("OrderIdInvalid", orderId=order_id)
        rights |= RIGHT_SET_TAKE_PROFIT if order_id < FIRST_STOP_ID else RIGHT_LOOSEN_OR_CANCEL_STOP
        orders.pop(order_id, None)
    return orders, plan_bps, rights


def plan_after(is_long: bool, size: int, price_e8: int, plan: ExitPlan, change: OrderChange) -> ExitPlan:
    """The plan exactly as the vault's `ordersOf` will report it after `change` on a position of `size` at
    the oracle price `price_e8` (orders in execution priority, `D`, each order's `size_if_executed`).

    Mirrors `Vault._setOrder` (checks, `_planBpsAfterSet`: a new plan at D = 10_000 when no other partial
    order is pending), `_cancelOrder` (D unchanged) and `_setExitPlan` (D = 10_000), step by step as a
    multicall runs them.

    Raises:
        PositionNotFoundError: `size` 0 (the vault refuses orders on a closed position).
        The vault's own errors for a change it would refuse (`check_exit_plan`, `check_set_order`).
    """
    if size == 0:
        raise vault_error("PositionNotFound", positionId=change.position_id)
    orders, plan_bps, _ = _apply(is_long, price_e8, plan, change)
    return _view(size, orders, plan_bps)


def plan_after_close(size_after: int, plan: ExitPlan) -> ExitPlan:
    """The plan after a manual (partial) close leaves `size_after`: the same orders and `D`, sizes by the size
    rule from what remains; no orders after a full close (`ordersOf` of a closed position)."""
    return _view(size_after, _orders_of(plan), plan.plan_bps)


def same_plan(a: ExitPlan, b: ExitPlan) -> bool:
    """Whether two plans hold the same orders (id, price, share, trail) and the same `D`: a change from one
    to the other would change nothing the vault keeps (sizes follow from these)."""
    return a.plan_bps == b.plan_bps and _orders_of(a) == _orders_of(b)


def checked_change(is_long: bool, size: int, price_e8: int, plan: ExitPlan, change: OrderChange) -> ExitPlan:
    """`plan_after`, refusing also what the vault accepts but the sender would pay for in vain: a cancel of
    an id holding no pending order (and not set by the same change), and a change after which the plan is the
    plan now (the same orders and `D`). The one check of the builder's order changes and of signed ones.

    Raises:
        OrderNotFoundError: a cancelled id holds no order. NothingToChangeError: the plan would not change.
        And `plan_after`'s errors (a change the vault would refuse).
    """
    after = plan_after(is_long, size, price_e8, plan, change)
    pid = "0x" + change.position_id.hex()
    set_ids = {order[0] for order in change.set}
    for order_id in change.cancel:
        if order_id not in set_ids and plan.order(order_id) is None:
            raise OrderNotFoundError(
                f"the position has no pending order {order_id}: nothing to cancel, nothing was sent"
                " (see get_orders)",
                positionId=pid,
                orderId=order_id,
            )
    if same_plan(after, plan):
        raise NothingToChangeError(
            "the exit plan already is what this change asks for: nothing was sent",
            positionId=pid,
            planRemainingBps=plan.plan_bps,
        )
    return after


def rights_needed(is_long: bool, plan: ExitPlan, change: OrderChange) -> int:
    """The `RIGHT_*` bits an operator needs for `change` (the owner needs none), as the vault demands them:
    a take-profit set or cancelled (or any take-profit before or after a whole plan): `RIGHT_SET_TAKE_PROFIT`;
    a new or tighter stop: `RIGHT_TIGHTEN_STOP`; a looser stop, a cancelled one (also one a whole plan leaves
    out) or any `cancelOrder` of a stop id: `RIGHT_LOOSEN_OR_CANCEL_STOP`; an unchanged stop: nothing."""
    return _apply(is_long, None, plan, change)[2]


def add_take_profit(
    is_long: bool, plan: ExitPlan, price_e8: int, share_bps: int, position_id: bytes
) -> OrderChange:
    """A new take-profit tier at `price_e8` closing `share_bps` of the plan.

    Take-profit ids follow the order a price reaches them, so the tier takes the LOWEST free id above the
    pending take-profits the price reaches before it and below those it reaches after (a `setOrder`).
    When there is no such id but there would be after renumbering, and the plan is new (D = 10_000, so a
    rewrite changes no share's meaning), the change is a whole plan (`setExitPlan`): every pending order
    kept (same prices, shares, trails), the take-profits renumbered 0.. in price order with the new one
    among them.

    Raises:
        ExitPlanFullError: four take-profits are pending.
        OrderOutOfSequenceError: a take-profit is pending at this very price, or no id fits and the plan has
            already executed some of its orders (D below 10_000).
    """
    take_profits = sorted((o for o in plan.orders if o.is_take_profit), key=lambda o: o.order_id)
    if len(take_profits) >= TAKE_PROFIT_COUNT:
        raise ExitPlanFullError(
            f"the position already has {TAKE_PROFIT_COUNT} take-profits pending (ids 0..3): cancel or replace"
            " one first",
            takeProfits=[o.order_id for o in take_profits],
        )
    for other in take_profits:
        if other.price_e8 == price_e8:
            raise vault_error(
                "OrderOutOfSequence",
                orderId=other.order_id,
                price=price_e8,
                otherOrderId=other.order_id,
                otherPrice=other.price_e8,
            )
    before = [o for o in take_profits if (o.price_e8 < price_e8 if is_long else o.price_e8 > price_e8)]
    after = [o for o in take_profits if o not in before]
    low = before[-1].order_id + 1 if before else 0
    high = after[0].order_id if after else TAKE_PROFIT_COUNT
    if low < high:
        return OrderChange(position_id, set=((low, price_e8, share_bps, 0),))
    if plan.plan_bps != BPS_DENOMINATOR:
        blocking = after[0] if after else before[-1]
        raise vault_error(
            "OrderOutOfSequence",
            orderId=low,
            price=price_e8,
            otherOrderId=blocking.order_id,
            otherPrice=blocking.price_e8,
        )
    ladder = [
        *((o.price_e8, o.share_bps) for o in before),
        (price_e8, share_bps),
        *((o.price_e8, o.share_bps) for o in after),
    ]
    new_orders: list[ExitOrder] = [(i, price, share, 0) for i, (price, share) in enumerate(ladder)]
    new_orders += [
        (o.order_id, o.price_e8, o.share_bps, o.trail_bps) for o in plan.orders if not o.is_take_profit
    ]
    return OrderChange(position_id, set=tuple(new_orders), whole_plan=True)
