"""Every field rule of a close request: names, units, ranges, and which fields require or forbid which."""

from __future__ import annotations

import doctest
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relayer.constants import MAX_TRIGGER_PRICE_E8, UINT256_MAX
from relayer.domain import requests as close_request
from relayer.domain.positions import NO_ORDER, TriggerOrder
from relayer.domain.requests import (
    CloseAction,
    CloseRequest,
    check_trigger_price_e8,
    parse_close_bps,
    parse_close_request,
    parse_owner,
    parse_trigger_price,
)
from relayer.domain.units import format_fixed
from relayer.errors import InvalidCloseBpsError, InvalidFieldError, InvalidPriceError, RelayerError

PID = "0x" + "ab" * 32
PID_BYTES = bytes.fromhex("ab" * 32)


def parse(**fields: Any) -> CloseRequest:
    return parse_close_request({"positionId": PID, **fields})


def rejected(expected: type[RelayerError], field: str, **fields: Any) -> RelayerError:
    with pytest.raises(expected) as info:
        parse_close_request(fields)
    assert info.value.details["field"] == field
    return info.value


def test_doctests() -> None:
    result = doctest.testmod(close_request, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0


# --- what the request means ---------------------------------------------------------------------------------


def test_only_the_position_id_closes_everything() -> None:
    request = parse()
    assert request == CloseRequest(PID_BYTES)
    assert request.action is CloseAction.CLOSE
    assert request.closes


def test_allowed_price_alone_is_still_a_full_close() -> None:
    request = parse(allowedPrice="96000.5")
    assert request.action is CloseAction.CLOSE
    assert request.allowed_price_e8 == 9_600_050_000_000


def test_size_delta_is_a_partial_close_in_18_decimals() -> None:
    request = parse(sizeDelta=Decimal("0.14"))
    assert request.action is CloseAction.DECREASE
    assert request.size_delta == 140_000_000_000_000_000


def test_triggers_without_size_delta_only_modify() -> None:
    request = parse(
        takeProfit="105000", takeProfitClosePercent=5000, stopLoss=90000, stopLossClosePercent=10000
    )
    assert request.action is CloseAction.SET_TRIGGERS
    assert not request.closes
    assert request.take_profit == TriggerOrder(10_500_000_000_000, 5000)
    assert request.stop_loss == TriggerOrder(9_000_000_000_000, 10000)


def test_size_delta_with_a_trigger_does_both() -> None:
    request = parse(sizeDelta="1", stopLoss="95000", stopLossClosePercent=2500)
    assert request.action is CloseAction.DECREASE_AND_SET_TRIGGERS
    assert request.take_profit is None
    assert request.stop_loss == TriggerOrder(9_500_000_000_000, 2500)


def test_a_trigger_price_of_zero_cancels_the_order() -> None:
    request = parse(takeProfit=0)
    assert request.take_profit == NO_ORDER == TriggerOrder(0, 0)
    assert not request.take_profit.active


def test_null_counts_as_absent() -> None:
    assert parse(sizeDelta=None, allowedPrice=None, takeProfit=None, stopLossClosePercent=None) == parse()


@given(st.integers(min_value=1, max_value=10_000))
def test_every_close_percent_in_range_is_kept(bps: int) -> None:
    assert parse(takeProfit="1", takeProfitClosePercent=bps).take_profit == TriggerOrder(10**8, bps)


def test_a_whole_decimal_close_percent_is_accepted() -> None:
    assert parse(stopLoss="1", stopLossClosePercent=Decimal("2500.0")).stop_loss == TriggerOrder(10**8, 2500)


# --- rejected, with the field named -------------------------------------------------------------------------


def test_position_id_is_required() -> None:
    rejected(InvalidFieldError, "positionId", sizeDelta="1")


@pytest.mark.parametrize(
    "bad",
    [
        "0x1234",
        "ab" * 32,
        "0x" + "zz" * 32,
        7,
        True,
        ["0x" + "ab" * 32],
        "0x" + "ab" * 33,
        "0x" + "ab" * 32 + "\n",  # `$` would match before it
        "0x" + "ab" * 31 + " \t",  # `bytes.fromhex` would skip it: a 31-byte id
    ],
)
def test_malformed_position_ids(bad: Any) -> None:
    rejected(InvalidFieldError, "positionId", positionId=bad)


def test_unknown_fields_are_rejected_so_a_typo_cannot_become_a_full_close() -> None:
    error = rejected(InvalidFieldError, "sizedelta", positionId=PID, sizedelta="0.5")
    assert "sizeDelta" in error.message  # the message lists the real names


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("0", "greater than zero"),
        (Decimal("-0.5"), "negative"),
        ("0.0000000000000000001", "decimal places"),
        (str(UINT256_MAX) + "0", "too large"),
        (True, "number"),
        ([1], "number"),
        ({"a": 1}, "number"),
        ("NaN", "decimal number"),
        ("Infinity", "decimal number"),
        (Decimal("NaN"), "finite"),
        ("1e", "decimal number"),
    ],
)
def test_bad_size_deltas(value: Any, reason: str) -> None:
    error = rejected(InvalidFieldError, "sizeDelta", positionId=PID, sizeDelta=value)
    assert reason in error.message


def test_allowed_price_zero_means_no_bound_but_nine_decimals_do_not_fit() -> None:
    assert parse(allowedPrice=0).allowed_price_e8 == 0
    rejected(InvalidFieldError, "allowedPrice", positionId=PID, allowedPrice="1.000000001")


def test_allowed_price_without_a_close_is_rejected() -> None:
    rejected(
        InvalidFieldError,
        "allowedPrice",
        positionId=PID,
        allowedPrice="1",
        takeProfit="2",
        takeProfitClosePercent=1,
    )


@pytest.mark.parametrize(
    ("price", "percent"), [("takeProfit", "takeProfitClosePercent"), ("stopLoss", "stopLossClosePercent")]
)
def test_close_percent_is_required_with_its_price_and_rejected_without(price: str, percent: str) -> None:
    rejected(InvalidFieldError, percent, positionId=PID, **{price: "100"})
    rejected(InvalidFieldError, percent, positionId=PID, **{percent: 5000})
    rejected(InvalidFieldError, percent, positionId=PID, **{price: "0", percent: 5000})  # cancelling


@pytest.mark.parametrize("bps", [0, 10_001, -1, 2**256])
def test_close_percent_out_of_range(bps: int) -> None:
    error = rejected(
        InvalidCloseBpsError,
        "takeProfitClosePercent",
        positionId=PID,
        takeProfit="1",
        takeProfitClosePercent=bps,
    )
    assert error.code == "invalid_close_bps"
    assert error.http_status == 422


@pytest.mark.parametrize("bps", [Decimal("2500.5"), "12.25", True, "abc"])
def test_close_percent_must_be_a_whole_number(bps: Any) -> None:
    rejected(
        InvalidFieldError, "stopLossClosePercent", positionId=PID, stopLoss="1", stopLossClosePercent=bps
    )


def test_trigger_price_above_what_the_vault_stores() -> None:
    too_big = format_fixed(MAX_TRIGGER_PRICE_E8 + 1, 8)
    error = rejected(
        InvalidPriceError, "takeProfit", positionId=PID, takeProfit=too_big, takeProfitClosePercent=1
    )
    assert error.code == "invalid_price"
    largest = format_fixed(MAX_TRIGGER_PRICE_E8, 8)
    assert parse(takeProfit=largest, takeProfitClosePercent=1).take_profit == TriggerOrder(
        MAX_TRIGGER_PRICE_E8, 1
    )


@given(st.dictionaries(st.text(max_size=8), st.none() | st.booleans() | st.integers() | st.text(max_size=12)))
def test_arbitrary_objects_either_parse_or_raise_a_422(raw: dict[str, Any]) -> None:
    status = 200
    try:
        parse_close_request({"positionId": PID, **raw})
    except RelayerError as error:
        status = error.http_status
    assert status in {200, 422}


# --- owner addresses ----------------------------------------------------------------------------------------


def test_owner_addresses_are_checksummed_and_checked() -> None:
    checksummed = "0x2B5AD5c4795c026514f8317c7a215E218DcCD6cF"
    assert parse_owner(checksummed.lower()) == checksummed
    assert parse_owner(checksummed) == checksummed
    with pytest.raises(InvalidFieldError, match="checksum"):
        parse_owner(checksummed.replace("B", "b", 1))
    for bad in ["0x1234", "2B5AD5c4795c026514f8317c7a215E218DcCD6cF", 5, None, checksummed.lower() + "\n"]:
        with pytest.raises(InvalidFieldError):
            parse_owner(bad)


# --- the trigger rules every face shares --------------------------------------------------------------------


@pytest.mark.parametrize("bps", [1, 2500, "10000", Decimal("7.0")])
def test_parse_close_bps_sets_an_order_with_a_whole_share(bps: Any) -> None:
    assert parse_close_bps(bps, "closeBps", cancelling=False) == int(bps)


@pytest.mark.parametrize(
    ("bps", "cancelling", "error"),
    [
        (0, False, InvalidCloseBpsError),
        (10_001, False, InvalidCloseBpsError),
        (None, False, InvalidFieldError),  # setting needs a share
        ("1.5", False, InvalidFieldError),
        ("", False, InvalidFieldError),
        (5000, True, InvalidFieldError),  # a cancel takes none
        (0, True, InvalidFieldError),
    ],
)
def test_parse_close_bps_refusals(bps: Any, cancelling: bool, error: type[RelayerError]) -> None:
    with pytest.raises(error) as raised:
        parse_close_bps(bps, "closeBps", cancelling=cancelling)
    assert raised.value.details["field"] == "closeBps"
    assert raised.value.http_status == 422


def test_a_cancel_has_no_share() -> None:
    assert parse_close_bps(None, "closeBps", cancelling=True) == 0


def test_trigger_price_bounds() -> None:
    assert parse_trigger_price("0", "price") == 0
    assert parse_trigger_price(format_fixed(MAX_TRIGGER_PRICE_E8, 8), "price") == MAX_TRIGGER_PRICE_E8
    assert check_trigger_price_e8(MAX_TRIGGER_PRICE_E8, "price") == MAX_TRIGGER_PRICE_E8
    with pytest.raises(InvalidPriceError):
        parse_trigger_price(format_fixed(MAX_TRIGGER_PRICE_E8 + 1, 8), "price")
    with pytest.raises(InvalidPriceError):
        check_trigger_price_e8(MAX_TRIGGER_PRICE_E8 + 1, "request.price")
    for bad in ("-1", "", "1.000000001", None):
        with pytest.raises(InvalidFieldError):
            parse_trigger_price(bad, "price")
