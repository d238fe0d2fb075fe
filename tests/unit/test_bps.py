"""Basis points and percent (`relayer.domain.bps`): each conversion and rounding once, checked exactly."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relayer.config import TradingSettings
from relayer.constants import BPS_DENOMINATOR, MAX_SLIPPAGE_BPS, PERCENT
from relayer.domain.bps import (
    bps_of,
    parse_percent,
    parse_slippage_bps,
    percent_of,
    percent_to_bps,
    plus_bps,
)
from relayer.errors import ConfigurationError, InvalidFieldError

AMOUNTS = st.integers(min_value=0, max_value=2**200)


@given(amount=AMOUNTS, bps=st.integers(min_value=-(BPS_DENOMINATOR - 1), max_value=10 * BPS_DENOMINATOR))
def test_plus_bps_rounds_exactly_as_asked(amount: int, bps: int) -> None:
    exact = Fraction(amount * (BPS_DENOMINATOR + bps), BPS_DENOMINATOR)
    assert plus_bps(amount, bps, round_up=True) == math.ceil(exact)
    assert plus_bps(amount, bps, round_up=False) == math.floor(exact)


@given(amount=AMOUNTS, pct=st.integers(min_value=0, max_value=PERCENT))
def test_a_percent_share_is_the_same_share_in_bps(amount: int, pct: int) -> None:
    assert percent_of(amount, pct) == bps_of(amount, percent_to_bps(pct)) == amount * pct // PERCENT


@given(amount=AMOUNTS, bps=st.integers(min_value=0, max_value=BPS_DENOMINATOR))
def test_a_bps_share_rounds_down_and_never_exceeds_the_amount(amount: int, bps: int) -> None:
    share = bps_of(amount, bps)
    assert share == math.floor(Fraction(amount * bps, BPS_DENOMINATOR))
    assert 0 <= share <= amount


def test_whole_percent_is_exact_in_bps() -> None:
    assert [percent_to_bps(p) for p in (1, 33, 50, 100)] == [100, 3_300, 5_000, BPS_DENOMINATOR]


@pytest.mark.parametrize("value", [0, 1, MAX_SLIPPAGE_BPS, "9999"])
def test_the_slippage_bound_accepts_0_to_9999(value: object) -> None:
    assert parse_slippage_bps(value) == int(value)  # type: ignore[call-overload]


@pytest.mark.parametrize("value", [-1, BPS_DENOMINATOR, "1.5", True, None])
def test_the_slippage_bound_refuses_the_rest(value: object) -> None:
    with pytest.raises(InvalidFieldError) as info:
        parse_slippage_bps(value)
    assert info.value.field == "maxSlippageBps"


@pytest.mark.parametrize("bps", [-1, BPS_DENOMINATOR])
def test_settings_refuse_the_same_slippage_bound_as_requests(bps: int) -> None:
    with pytest.raises(ConfigurationError) as info:
        TradingSettings(default_slippage_bps=bps)
    assert info.value.details == {"field": "default_slippage_bps"}
    assert TradingSettings(default_slippage_bps=MAX_SLIPPAGE_BPS).default_slippage_bps == MAX_SLIPPAGE_BPS


@pytest.mark.parametrize(("value", "ok"), [(1, True), (100, True), (0, False), (101, False), ("50", True)])
def test_percentages_are_1_to_100(value: object, ok: bool) -> None:
    if ok:
        assert parse_percent(value, "exit_pct") == int(value)  # type: ignore[call-overload]
        return
    with pytest.raises(InvalidFieldError):
        parse_percent(value, "exit_pct")
