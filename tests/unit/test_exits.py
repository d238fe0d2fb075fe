"""Sizing a percentage close and bounding its price (pure, property-tested)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relayer.constants import BPS_DENOMINATOR, CLOSE_ALL_SIZE
from relayer.domain.exits import allowed_price_for_slippage, size_for_exit_pct
from relayer.errors import InvalidFieldError

sizes = st.integers(min_value=1, max_value=10**30)
prices = st.integers(min_value=1, max_value=2**112 - 1)
slippages = st.integers(min_value=0, max_value=BPS_DENOMINATOR - 1)


@given(sizes, st.integers(min_value=1, max_value=99))
def test_size_for_exit_pct_never_exceeds_the_share_or_the_size(size: int, exit_pct: int) -> None:
    if size * exit_pct < 100:  # only a share that rounds to zero is refused
        with pytest.raises(InvalidFieldError, match="exit_pct"):
            size_for_exit_pct(size, exit_pct)
        return
    share = size_for_exit_pct(size, exit_pct)
    assert 0 < share < size
    assert share * 100 <= size * exit_pct < (share + 1) * 100  # rounded down, by less than one wei


@given(sizes)
def test_100_percent_is_the_close_all_sentinel(size: int) -> None:
    assert size_for_exit_pct(size, 100) == CLOSE_ALL_SIZE


def test_the_seed_numbers() -> None:
    assert size_for_exit_pct(42 * 10**16, 33) == 1386 * 10**14
    assert size_for_exit_pct(42 * 10**16, 50) == 21 * 10**16


@given(prices, slippages)
def test_a_longs_bound_is_within_slippage_rounded_toward_the_price(price: int, bps: int) -> None:
    bound = allowed_price_for_slippage(is_long=True, price_e8=price, slippage_bps=bps)

    assert bound <= price
    exact_times_denominator = price * (BPS_DENOMINATOR - bps)
    assert bound * BPS_DENOMINATOR >= exact_times_denominator  # never further from the price than promised
    assert (bound - 1) * BPS_DENOMINATOR < exact_times_denominator  # the smallest such integer: rounded up


@given(prices, slippages)
def test_a_shorts_bound_is_within_slippage_rounded_toward_the_price(price: int, bps: int) -> None:
    bound = allowed_price_for_slippage(is_long=False, price_e8=price, slippage_bps=bps)

    assert bound >= price
    exact_times_denominator = price * (BPS_DENOMINATOR + bps)
    assert bound * BPS_DENOMINATOR <= exact_times_denominator
    assert (bound + 1) * BPS_DENOMINATOR > exact_times_denominator  # the largest such integer: rounded down


@pytest.mark.parametrize("is_long", [True, False])
def test_zero_slippage_is_the_price_itself(is_long: bool) -> None:
    assert allowed_price_for_slippage(is_long=is_long, price_e8=9_620_000_000_001, slippage_bps=0) == (
        9_620_000_000_001
    )


def test_one_percent_of_96200() -> None:
    assert (
        allowed_price_for_slippage(is_long=True, price_e8=9_620_000_000_000, slippage_bps=100)
        == 9_523_800_000_000
    )
    assert allowed_price_for_slippage(is_long=False, price_e8=9_620_000_000_000, slippage_bps=100) == (
        9_716_200_000_000
    )
    assert allowed_price_for_slippage(is_long=True, price_e8=3, slippage_bps=5_000) == 2  # 1.5 rounds up
    assert allowed_price_for_slippage(is_long=False, price_e8=3, slippage_bps=5_000) == 4  # 4.5 rounds down
