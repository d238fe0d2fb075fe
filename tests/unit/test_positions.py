"""The vault's PnL, size rule, order priority, trigger and slippage rules mirrored in Python, checked on chain
by the contract suite."""

from __future__ import annotations

import pytest
from eth_abi.abi import encode
from hypothesis import given
from hypothesis import strategies as st

from relayer.chain.decoding import decode_orders_of
from relayer.constants import BPS_DENOMINATOR, MAX_POSITION_SIZE, MAX_TRIGGER_PRICE_E8, MIN_REMAINING_SIZE
from relayer.domain.positions import (
    SIZE_ONE,
    ExitPlan,
    OrderView,
    Position,
    TriggerOrder,
    next_crossed,
    price_within_bound,
    ratchet_gain_bps,
    realized_pnl_e8,
    tier_size,
    trailed_trigger,
    trigger_on_valid_side,
    walk_fills,
)
from relayer.errors import ChainUnavailableError, VaultNotDeployedError

prices = st.integers(min_value=1, max_value=MAX_TRIGGER_PRICE_E8)
sizes = st.integers(min_value=1, max_value=MAX_POSITION_SIZE)
bps = st.integers(min_value=1, max_value=BPS_DENOMINATOR)


def test_realized_pnl_examples() -> None:
    assert realized_pnl_e8(True, 9_500_000_000_000, 9_620_000_000_000, 14 * 10**16) == 16_800_000_000
    assert realized_pnl_e8(False, 9_500_000_000_000, 9_620_000_000_000, 14 * 10**16) == -16_800_000_000
    assert realized_pnl_e8(True, 100, 101, 1) == 0  # a profit of 1e-18 unit rounds down to nothing
    assert realized_pnl_e8(True, 101, 100, 1) == -1  # the same loss costs a whole unit


@given(is_long=st.booleans(), entry=prices, exit_=prices, size=sizes)
def test_realized_pnl_rounds_in_the_vaults_favour(is_long: bool, entry: int, exit_: int, size: int) -> None:
    pnl = realized_pnl_e8(is_long, entry, exit_, size)
    exact_numerator = (exit_ - entry) * size * (1 if is_long else -1)  # pnl * SIZE_ONE, before rounding
    if exact_numerator > 0:
        assert pnl * SIZE_ONE <= exact_numerator < (pnl + 1) * SIZE_ONE  # profit rounds down
    elif exact_numerator < 0:
        assert pnl * SIZE_ONE <= exact_numerator < (pnl + 1) * SIZE_ONE  # loss rounds away from zero
        assert pnl < 0  # even a loss of one wei of size costs the trader a unit
    else:
        assert pnl == 0


@given(entry=prices, exit_=prices, size=sizes)
def test_realized_pnl_is_symmetric_between_long_and_short(entry: int, exit_: int, size: int) -> None:
    long_pnl = realized_pnl_e8(True, entry, exit_, size)
    short_pnl = realized_pnl_e8(False, entry, exit_, size)
    # A long from entry to exit and a short from exit to entry make the same trade.
    assert long_pnl == realized_pnl_e8(False, exit_, entry, size)
    assert short_pnl == realized_pnl_e8(True, exit_, entry, size)
    # Opposite sides are opposite, except that both round against the trader.
    if (exit_ - entry) * size % SIZE_ONE == 0:
        assert long_pnl == -short_pnl
    else:
        assert long_pnl + short_pnl == -1


@given(is_long=st.booleans(), price=prices, size=sizes)
def test_realized_pnl_zero_gap_is_zero(is_long: bool, price: int, size: int) -> None:
    assert realized_pnl_e8(is_long, price, price, size) == 0


@given(is_long=st.booleans(), entry=prices, exit_=prices)
def test_realized_pnl_of_nothing_is_zero(is_long: bool, entry: int, exit_: int) -> None:
    assert realized_pnl_e8(is_long, entry, exit_, 0) == 0


@pytest.mark.parametrize(
    ("size", "share_bps", "plan_bps", "expected"),
    [
        (10**18, 10_000, 10_000, (10**18, 0)),  # a full order closes everything
        (10**18, 5_000, 10_000, (5 * 10**17, 5_000)),
        (42 * 10**16, 2_500, 10_000, (105 * 10**15, 7_500)),  # the seed's ladder: 0.105 of 0.42 ...
        (315 * 10**15, 2_500, 7_500, (105 * 10**15, 5_000)),  # ... of what remains, the same 0.105 ...
        (21 * 10**16, 2_500, 5_000, (105 * 10**15, 2_500)),  # ... and again
        (105 * 10**15, 2_500, 2_500, (105 * 10**15, 0)),  # the last share of the plan closes the rest
        (21 * 10**16, 10_000, 5_000, (21 * 10**16, 0)),  # a share above what remains of the plan: all
        (3 * 10**9, 5_000, 10_000, (15 * 10**8, 5_000)),  # leaves 1.5e9, above MIN_REMAINING_SIZE
        (2 * 10**9 - 2, 5_000, 10_000, (2 * 10**9 - 2, 5_000)),  # would leave dust below it: all
        (3, 5_000, 10_000, (3, 5_000)),  # dust position: closed whole
        (7, 1, 0, (7, 0)),  # no plan left: all (never a division by zero)
    ],
)
def test_tier_size_examples(size: int, share_bps: int, plan_bps: int, expected: tuple[int, int]) -> None:
    assert tier_size(size, share_bps, plan_bps) == expected


@given(size=sizes, share_bps=bps, plan_bps=bps)
def test_tier_size_never_over_closes_nor_leaves_dust(size: int, share_bps: int, plan_bps: int) -> None:
    closed, plan_after = tier_size(size, share_bps, plan_bps)
    assert 0 <= closed <= size
    if share_bps >= plan_bps:
        assert (closed, plan_after) == (size, 0)
    else:
        assert plan_after == plan_bps - share_bps
        assert closed == size or size - closed >= MIN_REMAINING_SIZE
        assert closed * plan_bps <= size * share_bps or closed == size  # rounded down unless dust


def test_ladder_of_three_quarters_and_a_stop_closes_quarters_to_the_unit() -> None:
    size, plan = 42 * 10**16, BPS_DENOMINATOR
    fills = []
    for share in (2_500, 2_500, 2_500, BPS_DENOMINATOR):
        closed, plan = tier_size(size, share, plan)
        fills.append(closed)
        size -= closed
    assert fills == [105 * 10**15] * 4
    assert size == 0


def _order(order_id: int, price: int, share: int = 2_500, trail: int = 0) -> OrderView:
    return OrderView(order_id, order_id < 4, price, share, trail, 0)


def test_next_crossed_runs_stops_first_then_take_profits_by_id() -> None:
    long_orders = [_order(4, 95), _order(5, 94), _order(0, 97), _order(1, 98)]
    assert next_crossed(True, long_orders, 96) is None
    assert next_crossed(True, long_orders, 97) == 0
    assert next_crossed(True, long_orders, 99) == 0  # a gap: tier 0 first, tier 1 on the next call
    assert next_crossed(True, [o for o in long_orders if o.order_id != 0], 99) == 1
    assert next_crossed(True, long_orders, 95) == 4
    assert next_crossed(True, long_orders, 90) == 4  # both stops crossed: the higher (nearer) first
    assert next_crossed(True, [_order(4, 94), _order(5, 95)], 90) == 5
    assert next_crossed(True, [_order(4, 95), _order(5, 95)], 90) == 4  # a tie: by id
    short_orders = [_order(4, 105), _order(5, 106), _order(0, 103), _order(1, 102)]
    assert next_crossed(False, short_orders, 110) == 4  # a short's lower stop first
    assert next_crossed(False, short_orders, 102) == 0
    assert next_crossed(False, short_orders, 104) is None


def test_trailing_stop_arithmetic() -> None:
    assert trailed_trigger(True, 100_000 * 10**8, 200) == 98_000 * 10**8
    assert trailed_trigger(False, 100_000 * 10**8, 200) == 102_000 * 10**8
    assert ratchet_gain_bps(True, 95_000, 98_000, 100_000) == 300
    assert ratchet_gain_bps(False, 105_000, 102_000, 100_000) == 300
    assert ratchet_gain_bps(True, 98_000, 97_000, 100_000) == -100  # against the trader


@pytest.mark.parametrize(
    ("is_long", "is_take_profit", "trigger", "current", "valid"),
    [
        (True, True, 110, 100, True),  # long TP above the price
        (True, True, 90, 100, False),
        (True, False, 90, 100, True),  # long SL below the price
        (True, False, 110, 100, False),
        (False, True, 90, 100, True),  # short TP below the price
        (False, True, 110, 100, False),
        (False, False, 110, 100, True),  # short SL above the price
        (False, False, 90, 100, False),
    ],
)
def test_trigger_on_valid_side(
    is_long: bool, is_take_profit: bool, trigger: int, current: int, valid: bool
) -> None:
    assert trigger_on_valid_side(is_long, is_take_profit, trigger, current) is valid


@given(is_long=st.booleans(), is_take_profit=st.booleans(), price=prices)
def test_trigger_at_the_current_price_is_never_valid(is_long: bool, is_take_profit: bool, price: int) -> None:
    assert not trigger_on_valid_side(is_long, is_take_profit, price, price)


@given(is_long=st.booleans(), trigger=prices, current=prices)
def test_take_profit_and_stop_loss_sit_on_opposite_sides(is_long: bool, trigger: int, current: int) -> None:
    tp = trigger_on_valid_side(is_long, True, trigger, current)
    sl = trigger_on_valid_side(is_long, False, trigger, current)
    assert (tp and sl) is False
    assert (tp or sl) is (trigger != current)


@pytest.mark.parametrize(
    ("is_long", "price", "allowed", "ok"),
    [
        (True, 100, 100, True),
        (True, 101, 100, True),
        (True, 99, 100, False),
        (False, 100, 100, True),
        (False, 99, 100, True),
        (False, 101, 100, False),
        (True, 1, 0, True),
        (False, 10**30, 0, True),
    ],
)
def test_price_within_bound(is_long: bool, price: int, allowed: int, ok: bool) -> None:
    assert price_within_bound(is_long, price, allowed) is ok


def test_position_flags() -> None:
    none = TriggerOrder(0, 0)
    closed = Position(b"\1" * 32, "0x" + "00" * 20, "BTCUSDT", True, 0, 0, none, none)
    assert not closed.exists
    assert not closed.is_open
    owner = "0x" + "11" * 20
    open_ = Position(b"\1" * 32, owner, "BTCUSDT", False, 5, 1, TriggerOrder(9, 10_000), none)
    assert open_.exists
    assert open_.is_open
    assert open_.take_profit.active
    assert not open_.stop_loss.active


def test_orders_of_decoding_and_its_malformed_answers() -> None:
    rows = [(4, False, 95, 10_000, 150, 7), (0, True, 97, 2_500, 0, 2)]
    plan = decode_orders_of(
        encode(["(uint8,bool,uint256,uint16,uint16,uint256)[]", "uint256"], [rows, 7_500])
    )
    assert plan.plan_bps == 7_500
    assert plan.orders == (OrderView(4, False, 95, 10_000, 150, 7), OrderView(0, True, 97, 2_500, 0, 2))
    assert plan.order(4) is plan.orders[0]
    assert plan.orders[0].is_trailing
    assert plan.order(1) is None
    with pytest.raises(VaultNotDeployedError):
        decode_orders_of(b"")
    with pytest.raises(ChainUnavailableError):
        decode_orders_of(b"\x01" * 31)


@given(
    size=sizes,
    is_long=st.booleans(),
    tiers=st.lists(st.integers(1, BPS_DENOMINATOR), min_size=0, max_size=4),
    stop_share=st.one_of(st.none(), st.integers(1, BPS_DENOMINATOR)),
)
def test_walk_fills_close_at_most_the_position_and_all_of_it_when_the_plan_says_so(
    size: int, is_long: bool, tiers: list[int], stop_share: int | None
) -> None:
    orders = [OrderView(i, True, 100 + i, share, 0, 0) for i, share in enumerate(tiers)]
    if stop_share is not None:
        orders.append(OrderView(4, False, 90, stop_share, 0, 0))
    partial = sum(o.share_bps for o in orders if o.share_bps < BPS_DENOMINATOR)
    if partial > BPS_DENOMINATOR:
        return  # the vault refuses such a plan
    fills = walk_fills(size, is_long, ExitPlan(tuple(orders), BPS_DENOMINATOR))
    assert [order_id for order_id, _ in fills] == [o.order_id for o in orders]
    assert sum(closed for _, closed in fills) <= size
    if any(o.share_bps == BPS_DENOMINATOR for o in orders) or (orders and partial == BPS_DENOMINATOR):
        assert sum(closed for _, closed in fills) == size
