"""Market symbols and their bytes32 form."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relayer.domain.markets import bytes32_to_symbol, normalize_symbol, symbol_to_bytes32
from relayer.errors import InvalidFieldError, InvalidMarketError

symbols = st.from_regex(r"[A-Z0-9]{1,32}", fullmatch=True)


def test_btcusdt_bytes32() -> None:
    raw = symbol_to_bytes32("BTCUSDT")
    assert raw == b"BTCUSDT" + b"\0" * 25
    assert len(raw) == 32


@pytest.mark.parametrize(
    ("given_symbol", "expected"), [("btcusdt", "BTCUSDT"), ("EthUsdt", "ETHUSDT"), ("1", "1")]
)
def test_normalize_upper_cases(given_symbol: str, expected: str) -> None:
    assert normalize_symbol(given_symbol) == expected
    assert symbol_to_bytes32(given_symbol) == symbol_to_bytes32(expected)


@pytest.mark.parametrize("given_symbol", [" EthUsdt ", "BTCUSDT\n", "\tBTCUSDT", "BTC USDT"])
def test_normalize_refuses_spaces_instead_of_trimming(given_symbol: str) -> None:
    with pytest.raises(InvalidMarketError):
        normalize_symbol(given_symbol)


@given(symbols)
def test_symbol_round_trips_through_bytes32(symbol: str) -> None:
    raw = symbol_to_bytes32(symbol)
    assert len(raw) == 32
    assert bytes32_to_symbol(raw) == symbol
    assert bytes32_to_symbol(symbol_to_bytes32(symbol.lower())) == symbol


@pytest.mark.parametrize(
    "symbol", ["", "   ", "BTC-USDT", "BTC/USDT", "BTC USDT", "A" * 33, "ÄBC", "BTC\0", "₿TC", "BTCUSDT\n1"]
)
def test_invalid_symbols_are_rejected(symbol: str) -> None:
    with pytest.raises(InvalidMarketError) as info:
        normalize_symbol(symbol, "market")
    assert info.value.field == "market"
    assert info.value.code == "invalid_market"
    assert isinstance(info.value, InvalidFieldError)
    with pytest.raises(InvalidMarketError):
        symbol_to_bytes32(symbol)


@pytest.mark.parametrize("symbol", [None, 42, b"BTCUSDT", ["BTCUSDT"]])
def test_non_string_symbols_are_rejected(symbol: object) -> None:
    with pytest.raises(InvalidMarketError, match="must be a string"):
        normalize_symbol(symbol)


def test_long_symbols_are_truncated_in_the_message() -> None:
    with pytest.raises(InvalidMarketError) as info:
        normalize_symbol("X" * 5_000)
    assert len(info.value.message) < 200


def test_bytes32_that_is_not_text_is_shown_as_hex() -> None:
    raw = b"\xff" + b"\0" * 31
    assert bytes32_to_symbol(raw) == "0x" + raw.hex()
    control = b"AB\x01C" + b"\0" * 28
    assert bytes32_to_symbol(control) == "0x" + control.hex()


def test_empty_bytes32_is_the_empty_symbol() -> None:
    assert bytes32_to_symbol(b"\0" * 32) == ""
