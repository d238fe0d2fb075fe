"""The vault's PnL, trigger and slippage rules mirrored in Python, checked on chain by the contract suite."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relayer.constants import BPS_DENOMINATOR, MAX_POSITION_SIZE, MAX_TRIGGER_PRICE_E8
from relayer.domain.positions import (
    SIZE_ONE,
    Position,
    TriggerOrder,
    price_within_bound,
    realized_pnl_e8,
    trigger_close_size,
    trigger_on_valid_side,
)

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
    ("size", "close_bps", "expected"),
    [
        (10**18, 10_000, 10**18),
        (10**18, 5_000, 5 * 10**17),
        (10**18, 1, 10**14),
        (3, 5_000, 1),  # 1.5 rounds down
        (1, 5_000, 1),  # 0.5 rounds to 0: the dust rule closes everything
        (9_999, 1, 9_999),  # 0.9999 rounds to 0: all
        (10_000, 1, 1),
    ],
)
def test_trigger_close_size_examples(size: int, close_bps: int, expected: int) -> None:
    assert trigger_close_size(size, close_bps) == expected


@given(size=sizes, close_bps=bps)
def test_trigger_close_size_never_exceeds_the_position(size: int, close_bps: int) -> None:
    closed = trigger_close_size(size, close_bps)
    assert 0 < closed <= size
    share = size * close_bps // BPS_DENOMINATOR
    assert closed == (share if share else size)
    if close_bps == BPS_DENOMINATOR:
        assert closed == size


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
