"""`relayer.domain.exit_plans`' order changes, pure: the plan after a change (`plan_after`,
`plan_after_close`), the rights an operator needs (`rights_needed`) and where a new take-profit tier goes
(`add_take_profit`). The same functions are checked against the vault itself in
tests/builder/test_plan_after_chain.py."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relayer.constants import (
    BPS_DENOMINATOR,
    RIGHT_LOOSEN_OR_CANCEL_STOP,
    RIGHT_SET_TAKE_PROFIT,
    RIGHT_TIGHTEN_STOP,
)
from relayer.domain import calldata
from relayer.domain.exit_plans import (
    OrderChange,
    add_take_profit,
    encode_change,
    plan_after,
    plan_after_close,
    rights_needed,
)
from relayer.domain.positions import NO_PLAN, ExitPlan, walk_fills
from relayer.errors import (
    ExitPlanFullError,
    InvalidOrderIdError,
    OrderOutOfSequenceError,
    PlanSharesExceededError,
    PositionNotFoundError,
)

PID = b"\x07" * 32
SIZE = 42 * 10**16  # 0.42 BTC
TIER = 105 * 10**15  # 0.105 BTC
PRICE = 96_000 * 10**8


def usd(n: int) -> int:
    return n * 10**8


LADDER = OrderChange(
    PID,
    set=(
        (0, usd(97_000), 2_500, 0),
        (1, usd(98_000), 2_500, 0),
        (2, usd(99_000), 2_500, 0),
        (4, usd(94_000), 10_000, 150),
    ),
    whole_plan=True,
)


def ladder() -> ExitPlan:
    return plan_after(True, SIZE, PRICE, NO_PLAN, LADDER)


def test_the_seed_ladder_as_ordersof_lists_it() -> None:
    plan = ladder()
    assert [o.order_id for o in plan.orders] == [4, 0, 1, 2]  # stops first, then take-profits by id
    assert plan.plan_bps == BPS_DENOMINATOR
    assert [o.size_if_executed for o in plan.orders] == [SIZE, TIER, TIER, TIER]
    assert plan.orders[0].trail_bps == 150
    assert not plan.orders[0].is_take_profit
    assert walk_fills(SIZE, True, plan) == [(0, TIER), (1, TIER), (2, TIER), (4, TIER)]


def test_calldata_is_one_call_or_a_multicall_sets_before_cancels() -> None:
    assert LADDER.calldata() == calldata.set_exit_plan(PID, list(LADDER.set))
    one = OrderChange(PID, set=((0, usd(97_000), 2_500, 0),))
    assert encode_change(one) == calldata.set_order(PID, 0, usd(97_000), 2_500, 0)
    both = OrderChange(PID, set=((4, usd(95_000), 10_000, 0),), cancel=(1,))
    assert both.calldata() == calldata.multicall(
        [calldata.set_order(PID, 4, usd(95_000), 10_000, 0), calldata.cancel_order(PID, 1)]
    )


def test_a_partial_close_keeps_d_and_the_shape() -> None:
    after = plan_after_close(SIZE // 2, ladder())
    assert after.plan_bps == BPS_DENOMINATOR
    assert [o.size_if_executed for o in after.orders] == [SIZE // 2, TIER // 2, TIER // 2, TIER // 2]
    closed = plan_after_close(0, ladder())
    assert closed.orders == ()
    assert closed.plan_bps == BPS_DENOMINATOR


def test_cancel_keeps_d_and_a_new_partial_order_then_starts_a_new_plan() -> None:
    executed = plan_after_close(SIZE - TIER, ExitPlan(ladder().orders, 7_500))  # tier 0 executed: D 7500
    executed = ExitPlan(tuple(o for o in executed.orders if o.order_id != 0), 7_500)
    cancelled = plan_after(True, SIZE - TIER, PRICE, executed, OrderChange(PID, cancel=(1, 2)))
    assert cancelled.plan_bps == 7_500  # cancelOrder leaves D alone
    assert [o.order_id for o in cancelled.orders] == [4]
    renewed = plan_after(
        True, SIZE - TIER, PRICE, cancelled, OrderChange(PID, set=((0, usd(97_500), 5_000, 0),))
    )
    assert renewed.plan_bps == BPS_DENOMINATOR  # no partial order pending: a new plan
    assert renewed.order(0) is not None
    assert renewed.order(0).size_if_executed == (SIZE - TIER) // 2  # type: ignore[union-attr]


def test_changes_apply_in_order_and_refusals_are_the_vaults() -> None:
    with pytest.raises(PlanSharesExceededError):
        plan_after(True, SIZE, PRICE, ladder(), OrderChange(PID, set=((3, usd(99_500), 2_600, 0),)))
    with pytest.raises(OrderOutOfSequenceError):
        plan_after(True, SIZE, PRICE, ladder(), OrderChange(PID, set=((3, usd(98_500), 2_500, 0),)))
    with pytest.raises(InvalidOrderIdError):
        plan_after(True, SIZE, PRICE, ladder(), OrderChange(PID, cancel=(6,)))
    with pytest.raises(PositionNotFoundError):
        plan_after(True, 0, PRICE, ladder(), OrderChange(PID, cancel=(0,)))
    # Moving tier 2 beyond a new tier 3 in one multicall: the set runs first, so tier 3 lands beyond it.
    moved = plan_after(
        True,
        SIZE,
        PRICE,
        ladder(),
        OrderChange(PID, set=((3, usd(99_500), 2_500, 0),), cancel=(2,)),
    )
    assert [o.order_id for o in moved.orders] == [4, 0, 1, 3]


def test_rights_needed_mirror_the_vault() -> None:
    plan = ladder()
    tp = OrderChange(PID, set=((3, usd(99_500), 2_500, 0),))
    assert rights_needed(True, plan, tp) == RIGHT_SET_TAKE_PROFIT
    assert rights_needed(True, plan, OrderChange(PID, cancel=(0,))) == RIGHT_SET_TAKE_PROFIT
    assert rights_needed(True, plan, OrderChange(PID, cancel=(5,))) == RIGHT_LOOSEN_OR_CANCEL_STOP
    assert rights_needed(True, plan, OrderChange(PID)) == 0
    higher = OrderChange(PID, set=((4, usd(95_000), 10_000, 150),))
    lower = OrderChange(PID, set=((4, usd(93_000), 10_000, 150),))
    wider = OrderChange(PID, set=((4, usd(94_000), 10_000, 300),))
    fixed = OrderChange(PID, set=((4, usd(95_000), 10_000, 0),))
    smaller = OrderChange(PID, set=((4, usd(95_000), 2_500, 150),))
    assert rights_needed(True, plan, higher) == RIGHT_TIGHTEN_STOP
    assert rights_needed(False, plan, lower) == RIGHT_TIGHTEN_STOP  # a short's stop moving down
    for looser in (lower, wider, fixed, smaller):
        assert rights_needed(True, plan, looser) == RIGHT_LOOSEN_OR_CANCEL_STOP
    same = OrderChange(PID, set=((4, usd(94_000), 10_000, 150),))
    assert rights_needed(True, plan, same) == 0
    new_stop = OrderChange(PID, set=((5, usd(93_000), 10_000, 0),))
    assert rights_needed(True, plan, new_stop) == RIGHT_TIGHTEN_STOP
    # A whole plan that leaves the stop out cancels it; one that keeps everything needs only the TP right.
    without_stop = OrderChange(PID, set=LADDER.set[:3], whole_plan=True)
    assert rights_needed(True, plan, without_stop) == RIGHT_SET_TAKE_PROFIT | RIGHT_LOOSEN_OR_CANCEL_STOP
    assert rights_needed(True, plan, LADDER) == RIGHT_SET_TAKE_PROFIT
    only_stop = OrderChange(PID, set=((4, usd(94_000), 10_000, 100),), whole_plan=True)
    assert rights_needed(True, NO_PLAN, only_stop) == RIGHT_TIGHTEN_STOP


def test_add_take_profit_takes_the_lowest_free_id_in_price_order() -> None:
    plan = plan_after(
        True, SIZE, PRICE, NO_PLAN, OrderChange(PID, set=((1, usd(98_000), 2_500, 0),), whole_plan=True)
    )
    assert add_take_profit(True, plan, usd(97_000), 2_500, PID) == OrderChange(
        PID, set=((0, usd(97_000), 2_500, 0),)
    )
    assert add_take_profit(True, plan, usd(99_000), 2_500, PID).set == ((2, usd(99_000), 2_500, 0),)
    assert add_take_profit(True, NO_PLAN, usd(99_000), 2_500, PID).set == ((0, usd(99_000), 2_500, 0),)


def test_add_take_profit_renumbers_a_new_plan_and_refuses_otherwise() -> None:
    plan = plan_after(True, SIZE, PRICE, NO_PLAN, OrderChange(PID, set=((0, usd(98_000), 2_500, 0),)))
    change = add_take_profit(True, plan, usd(97_000), 2_500, PID)
    assert change.whole_plan
    assert change.set == ((0, usd(97_000), 2_500, 0), (1, usd(98_000), 2_500, 0))
    with pytest.raises(OrderOutOfSequenceError):
        add_take_profit(True, ExitPlan(plan.orders, 7_500), usd(97_000), 2_500, PID)
    with pytest.raises(OrderOutOfSequenceError):
        add_take_profit(True, plan, usd(98_000), 2_500, PID)  # a tier at this very price
    full = plan_after(
        True,
        SIZE,
        PRICE,
        ladder(),
        OrderChange(PID, set=((3, usd(99_500), 1_000, 0),)),
    )
    with pytest.raises(ExitPlanFullError) as info:
        add_take_profit(True, full, usd(100_000), 1_000, PID)
    assert info.value.details["takeProfits"] == [0, 1, 2, 3]


@given(
    is_long=st.booleans(),
    offsets=st.lists(st.integers(1, 50), min_size=1, max_size=4, unique=True),
)
def test_tiers_added_in_any_order_keep_ids_in_price_order(is_long: bool, offsets: list[int]) -> None:
    """Adding up to four tiers one by one, in any price order, on a new plan: each change is accepted by the
    vault's checks, and the ids end up following the order a price reaches the tiers."""
    plan = NO_PLAN
    sign = 1 if is_long else -1
    for offset in offsets:
        change = add_take_profit(is_long, plan, PRICE + sign * usd(offset * 100), 2_000, PID)
        plan = plan_after(is_long, SIZE, PRICE, plan, change)
    take_profits = [o for o in plan.orders if o.is_take_profit]
    prices = [o.price_e8 for o in take_profits]
    assert prices == sorted(prices, reverse=not is_long)
    assert len(take_profits) == len(offsets)
    assert plan.plan_bps == BPS_DENOMINATOR
