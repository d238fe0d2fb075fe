"""Exact decimal <-> fixed-point conversion: the edge where every amount enters and leaves the relayer."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from relayer.constants import UINT256_MAX
from relayer.domain.units import format_fixed, from_fixed, parse_decimal, parse_fixed, parse_int, to_fixed
from relayer.errors import InvalidFieldError

decimals_st = st.integers(min_value=0, max_value=30)


# --- parse_decimal ------------------------------------------------------------------------------------------


@given(st.integers(min_value=-(2**300), max_value=2**300))
def test_parse_decimal_keeps_ints_exact(n: int) -> None:
    parsed = parse_decimal(n, "x")
    assert isinstance(parsed, Decimal)
    assert parsed == n


@given(st.decimals(allow_nan=False, allow_infinity=False))
def test_parse_decimal_returns_finite_decimals_unchanged(value: Decimal) -> None:
    assert parse_decimal(value, "x") is value


@given(st.decimals(allow_nan=False, allow_infinity=False))
def test_parse_decimal_reads_its_own_text_back_exactly(value: Decimal) -> None:
    text = str(value)
    if len(text) <= 100:
        assert parse_decimal(text, "x") == value


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.14", Decimal("0.14")),
        ("1e-8", Decimal("0.00000001")),
        ("1E+3", Decimal(1000)),
        ("-2.5", Decimal("-2.5")),
        ("+.5", Decimal("0.5")),
        ("7.", Decimal(7)),
        ("0.1000000000000000000000000000000000001", Decimal("0.1000000000000000000000000000000000001")),
    ],
)
def test_parse_decimal_reads_decimal_text(text: str, expected: Decimal) -> None:
    parsed = parse_decimal(text, "x")
    assert parsed == expected
    assert parsed.as_tuple() == Decimal(text).as_tuple()  # no rounding on the way in


@pytest.mark.parametrize("text", ["  42 ", " 0.1", "0.1 ", "0.1\n", "\t1", "1\u00a0", "1 000"])
def test_parse_decimal_refuses_text_with_spaces_instead_of_trimming(text: str) -> None:
    with pytest.raises(InvalidFieldError) as raised:
        parse_decimal(text, "sizeDelta")
    assert raised.value.field == "sizeDelta"


@pytest.mark.parametrize(
    "value",
    [
        True,
        False,
        None,
        0.1,
        1.0,
        [],
        [1],
        {},
        {"a": 1},
        b"1",
        Decimal("NaN"),
        Decimal("sNaN"),
        Decimal("Infinity"),
        Decimal("-Infinity"),
        "NaN",
        "nan",
        "Infinity",
        "-inf",
        "abc",
        "",
        "   ",
        "1.2.3",
        "0x10",
        "1_000",
        "1e",
        "e5",
        "١٢",  # Arabic-Indic digits: Decimal() accepts them, the edge does not
        "1" * 101,
    ],
)
def test_parse_decimal_rejects_non_numbers(value: object) -> None:
    with pytest.raises(InvalidFieldError) as info:
        parse_decimal(value, "sizeDelta")
    assert info.value.field == "sizeDelta"
    assert info.value.details["field"] == "sizeDelta"


def test_parse_decimal_does_not_echo_overlong_text() -> None:
    with pytest.raises(InvalidFieldError) as info:
        parse_decimal("9" * 10_000, "x")
    assert len(info.value.message) < 200


@given(st.text(max_size=30))
def test_parse_decimal_raises_only_invalid_field(text: str) -> None:
    try:
        parsed = parse_decimal(text, "x")
    except InvalidFieldError as exc:
        rejected_field = exc.field
    else:
        assert parsed.is_finite()
        return
    assert rejected_field == "x"


# --- to_fixed -----------------------------------------------------------------------------------------------


def test_to_fixed_converts_exactly() -> None:
    assert to_fixed(Decimal("0.14"), 18, "sizeDelta") == 14 * 10**16
    assert to_fixed(Decimal("96000"), 8, "price") == 96_000 * 10**8
    assert to_fixed(Decimal("1e-8"), 8, "price") == 1
    assert to_fixed(Decimal("1E+2"), 0, "n") == 100


def test_to_fixed_accepts_trailing_zeros_beyond_precision() -> None:
    assert to_fixed(Decimal("0.140000000000000000000"), 18, "sizeDelta") == 14 * 10**16
    assert to_fixed(Decimal("5.000000000"), 0, "n") == 5


@pytest.mark.parametrize(
    ("value", "decimals"),
    [("0.0000000000000000001", 18), ("0.123456789", 8), ("1.5", 0), ("1e-999999", 18), ("1.10000001", 2)],
)
def test_to_fixed_rejects_more_decimals_than_allowed(value: str, decimals: int) -> None:
    with pytest.raises(InvalidFieldError) as info:
        to_fixed(Decimal(value), decimals, "allowedPrice")
    assert info.value.field == "allowedPrice"
    assert "decimal places" in info.value.message
    assert info.value.details["max_decimals"] == decimals


def test_to_fixed_is_exact_beyond_28_significant_digits() -> None:
    # Decimal's default context keeps 28 digits; a 31-digit amount must not be rounded to 10**30.
    assert to_fixed(Decimal("1000000000000.000000000000000001"), 18, "x") == 10**30 + 1
    assert to_fixed(Decimal("12345678901.1234567890123456789"), 19, "x") == 123456789011234567890123456789
    with pytest.raises(InvalidFieldError, match="decimal places"):
        to_fixed(Decimal("12345678901.1234567890123456789"), 18, "x")


@pytest.mark.parametrize("value", ["-1", "-0.000000000000000001", "-1e80"])
def test_to_fixed_rejects_negative(value: str) -> None:
    with pytest.raises(InvalidFieldError, match="negative") as info:
        to_fixed(Decimal(value), 18, "size", allow_zero=True)
    assert info.value.field == "size"


@pytest.mark.parametrize("value", ["0", "-0", "0.000", "0E+10", "0E-30"])
def test_to_fixed_zero_needs_allow_zero(value: str) -> None:
    with pytest.raises(InvalidFieldError, match="greater than zero"):
        to_fixed(Decimal(value), 18, "size")
    assert to_fixed(Decimal(value), 18, "size", allow_zero=True) == 0


def test_to_fixed_bounds_at_uint256() -> None:
    assert to_fixed(Decimal(UINT256_MAX), 0, "x") == UINT256_MAX
    with pytest.raises(InvalidFieldError, match="too large"):
        to_fixed(Decimal(UINT256_MAX + 1), 0, "x")
    with pytest.raises(InvalidFieldError, match="too large"):
        to_fixed(Decimal(UINT256_MAX), 1, "x")
    assert to_fixed(from_fixed(UINT256_MAX, 18), 18, "x") == UINT256_MAX


@pytest.mark.parametrize("value", ["1e999999", "9.99e999999999", "1e81"])
def test_to_fixed_rejects_huge_exponents_without_expanding_them(value: str) -> None:
    # Would build a 10**999999 integer (or hang) if the size check came after scaling.
    with pytest.raises(InvalidFieldError, match="too large"):
        to_fixed(Decimal(value), 18, "x")


@pytest.mark.parametrize(
    "value", [Decimal("NaN"), Decimal("sNaN"), Decimal("Infinity"), Decimal("-Infinity")]
)
def test_to_fixed_rejects_non_finite(value: Decimal) -> None:
    with pytest.raises(InvalidFieldError, match="finite"):
        to_fixed(value, 18, "x")


@given(st.integers(min_value=1, max_value=UINT256_MAX), decimals_st)
def test_to_fixed_inverts_from_fixed(n: int, decimals: int) -> None:
    assert to_fixed(from_fixed(n, decimals), decimals, "x") == n


def test_parse_fixed_is_parse_then_to_fixed() -> None:
    assert parse_fixed("0.14", 18, "sizeDelta") == 14 * 10**16
    assert parse_fixed(0, 8, "allowedPrice", allow_zero=True) == 0
    with pytest.raises(InvalidFieldError, match="number"):
        parse_fixed(0.14, 18, "sizeDelta")


# --- parse_int ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"), [(3, 3), (Decimal("3.0"), 3), ("3.0", 3), ("1e3", 1000), ("10000", 10000)]
)
def test_parse_int_accepts_integral_numbers(value: object, expected: int) -> None:
    parsed = parse_int(value, "closeBps", minimum=1, maximum=10_000)
    assert parsed == expected
    assert type(parsed) is int


@pytest.mark.parametrize("value", [Decimal("3.5"), "3.5", "1e-1", "0.0000001"])
def test_parse_int_rejects_fractions(value: object) -> None:
    with pytest.raises(InvalidFieldError, match="whole number") as info:
        parse_int(value, "closeBps", minimum=0, maximum=10_000)
    assert info.value.field == "closeBps"


@given(st.integers(min_value=-(10**40), max_value=10**40))
@example(0)
@example(1)
@example(10_000)
@example(10_001)
def test_parse_int_enforces_bounds(n: int) -> None:
    if 1 <= n <= 10_000:
        assert parse_int(n, "bps", minimum=1, maximum=10_000) == n
        assert parse_int(str(n), "bps", minimum=1, maximum=10_000) == n
    else:
        with pytest.raises(InvalidFieldError, match="between 1 and 10000") as info:
            parse_int(n, "bps", minimum=1, maximum=10_000)
        assert info.value.details["minimum"] == 1
        assert info.value.details["maximum"] == 10_000


@pytest.mark.parametrize("value", [True, None, 3.0, "three", "1e999999"])
def test_parse_int_rejects_non_numbers_and_huge_values(value: object) -> None:
    with pytest.raises(InvalidFieldError):
        parse_int(value, "bps", minimum=1, maximum=10_000)


# --- from_fixed / format_fixed ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "decimals", "text"),
    [
        (14 * 10**16, 18, "0.14"),
        (-1_234_500_000, 8, "-12.345"),
        (42_000 * 10**8, 8, "42000"),
        (12, 4, "0.0012"),
        (1, 18, "0.000000000000000001"),
        (0, 18, "0"),
        (10**40 + 1, 18, "10000000000000000000000.000000000000000001"),
        (5, -2, "500"),
    ],
)
def test_format_fixed_examples(amount: int, decimals: int, text: str) -> None:
    assert format_fixed(amount, decimals) == text


@given(st.integers(min_value=-(2**512), max_value=2**512), decimals_st)
def test_format_fixed_is_plain_exact_and_minimal(n: int, decimals: int) -> None:
    text = format_fixed(n, decimals)
    assert "e" not in text.lower()
    whole, _, fraction = text.lstrip("-").partition(".")
    assert len(fraction) <= decimals
    magnitude = int(whole) * 10**decimals + int(fraction.ljust(decimals, "0") or "0")
    assert (-magnitude if text.startswith("-") else magnitude) == n
    assert from_fixed(n, decimals) == Decimal(text)
    if "." in text:
        assert not text.endswith("0")
        assert not text.endswith(".")


@given(st.integers(min_value=1, max_value=2**400), decimals_st)
def test_format_fixed_round_trips_through_to_fixed(n: int, decimals: int) -> None:
    text = format_fixed(n, decimals)
    if n <= UINT256_MAX:
        assert to_fixed(Decimal(text), decimals, "x") == n
    else:
        with pytest.raises(InvalidFieldError, match="too large"):
            to_fixed(Decimal(text), decimals, "x")


@given(st.integers(min_value=-(2**300), max_value=2**300), decimals_st)
def test_from_fixed_is_exact(n: int, decimals: int) -> None:
    value = from_fixed(n, decimals)
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    assert exponent <= 0
    coefficient = int("".join(map(str, digits)))
    assert (-1 if sign else 1) * coefficient * 10**decimals == n * 10 ** (-exponent)
