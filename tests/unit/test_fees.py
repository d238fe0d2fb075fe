"""Gas and fee arithmetic in wei."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relayer.constants import BASE_FEE_MULTIPLIER, BPS_DENOMINATOR, GAS_LIMIT_MARGIN_BPS
from relayer.domain.fees import Fees, gas_limit_with_margin, max_cost_wei, suggest_fees

wei = st.integers(min_value=0, max_value=10**30)


@given(base_fee=wei, priority_fee=wei)
def test_suggest_fees_eip1559(base_fee: int, priority_fee: int) -> None:
    fees = suggest_fees(base_fee, priority_fee)
    assert not fees.is_legacy
    assert fees.gas_price_wei is None
    assert fees.max_priority_fee_per_gas_wei == priority_fee
    assert fees.max_fee_per_gas_wei == BASE_FEE_MULTIPLIER * base_fee + priority_fee
    assert fees.max_fee_per_gas_wei >= fees.max_priority_fee_per_gas_wei
    assert fees.price_cap_wei == fees.max_fee_per_gas_wei


def test_suggest_fees_ignores_legacy_price_when_the_chain_has_a_base_fee() -> None:
    assert suggest_fees(10, 3, legacy_gas_price_wei=999) == Fees(23, 3, None)


def test_suggest_fees_legacy_uses_the_node_gas_price() -> None:
    fees = suggest_fees(None, 1_000_000_000, legacy_gas_price_wei=7_000_000_000)
    assert fees == Fees(0, 0, 7_000_000_000)
    assert fees.is_legacy
    assert fees.price_cap_wei == 7_000_000_000


def test_suggest_fees_legacy_falls_back_to_the_priority_fee() -> None:
    fees = suggest_fees(None, 1_000_000_000)
    assert fees.is_legacy
    assert fees.price_cap_wei == 1_000_000_000


def test_legacy_zero_gas_price_is_still_legacy() -> None:
    fees = suggest_fees(None, 5, legacy_gas_price_wei=0)
    assert fees.is_legacy
    assert fees.price_cap_wei == 0


@pytest.mark.parametrize(
    ("estimate", "margin_bps", "expected"),
    [
        (100_000, GAS_LIMIT_MARGIN_BPS, 120_000),
        (21_001, 2_000, 25_202),  # 25_201.2 rounds up
        (1, 2_000, 2),  # 1.2 rounds up
        (0, 2_000, 0),
        (99_999, 0, 99_999),
        (3, 1, 4),  # 3.0003 rounds up
    ],
)
def test_gas_limit_with_margin_examples(estimate: int, margin_bps: int, expected: int) -> None:
    assert gas_limit_with_margin(estimate, margin_bps) == expected


@given(estimate=st.integers(min_value=0, max_value=10**12), margin=st.integers(min_value=0, max_value=50_000))
def test_gas_limit_with_margin_rounds_up_by_less_than_one(estimate: int, margin: int) -> None:
    limit = gas_limit_with_margin(estimate, margin)
    assert limit * BPS_DENOMINATOR >= estimate * (BPS_DENOMINATOR + margin)
    assert (limit - 1) * BPS_DENOMINATOR < estimate * (BPS_DENOMINATOR + margin)
    assert limit >= estimate


@given(gas=st.integers(min_value=0, max_value=30_000_000), base_fee=wei, priority_fee=wei)
def test_max_cost_is_limit_times_cap(gas: int, base_fee: int, priority_fee: int) -> None:
    fees = suggest_fees(base_fee, priority_fee)
    assert max_cost_wei(gas, fees) == gas * (BASE_FEE_MULTIPLIER * base_fee + priority_fee)


def test_max_cost_legacy_uses_gas_price() -> None:
    assert max_cost_wei(21_000, Fees(0, 0, 3_000_000_000)) == 63_000_000_000_000
    assert max_cost_wei(21_000, Fees(5, 1)) == 105_000
