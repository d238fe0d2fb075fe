"""The vault's rules for exit orders, checked before anything is sent: the same checks in the same order as
`Vault.setExitPlan` and `Vault.setOrder`, raising the very error a revert would map to (same class, message
and details, `details.revert` included), so a plan the relayer accepts is one the vault accepts.

Orders are the vault's `ExitOrder` tuples `(orderId, price e8, shareBps, trailBps)`: ids 0..3 take-profits
(reached in id order: id 0 nearest the price), 4..5 stops (a `trailBps` makes one trail). Staleness of the
price and operator rights are not judged here (the builder's simulation and the trading service do).
"""

from __future__ import annotations

from collections.abc import Sequence

from relayer.chain.revert import vault_error
from relayer.constants import (
    BPS_DENOMINATOR,
    FIRST_STOP_ID,
    MAX_TRIGGER_PRICE_E8,
    ORDER_COUNT,
    TAKE_PROFIT_COUNT,
)
from relayer.domain.calldata import ExitOrder
from relayer.domain.positions import ExitPlan


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
