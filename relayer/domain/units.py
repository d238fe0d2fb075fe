"""Exact conversion between human decimals and the vault's fixed-point integers.

Money never touches `float`: JSON numbers are parsed as `Decimal` at the edge (see `relayer.faces.api.app`),
and this module turns them into integers with a fixed number of decimals, refusing anything the chain cannot
hold exactly instead of rounding it.

>>> to_fixed(Decimal("0.14"), 18, "sizeDelta")
140000000000000000
>>> format_fixed(140000000000000000, 18)
'0.14'
>>> format_fixed(-1234500000, 8)
'-12.345'
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from relayer.constants import PRICE_DECIMALS, SIZE_DECIMALS, UINT256_MAX
from relayer.errors import InvalidFieldError

__all__ = [
    "Decimal",
    "format_fixed",
    "from_fixed",
    "parse_decimal",
    "parse_fixed",
    "parse_int",
    "size_text",
    "to_fixed",
    "usd_text",
]

# Used with `fullmatch` (`$` would admit a trailing newline); ASCII only, so no non-ASCII digits.
_DECIMAL_TEXT = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?", re.ASCII)
_MAX_TEXT_LENGTH = 100


def parse_decimal(value: object, field: str) -> Decimal:
    """Read a JSON number (already a `Decimal` or `int`) or a decimal string as an exact `Decimal`.

    Text is taken as given: `" 0.1 "` is refused, not trimmed (a value a client padded is a value it built
    wrongly, and every face must read it the same way).

    >>> parse_decimal("96200.50", "price")
    Decimal('96200.50')
    >>> parse_decimal(" 0.1 ", "sizeDelta")
    Traceback (most recent call last):
    relayer.errors.InvalidFieldError: sizeDelta: ' 0.1 ' is not a decimal number

    Raises:
        InvalidFieldError: for bools, floats (inexact by construction), containers, NaN, infinities and text
            that is not a plain decimal number (surrounding whitespace included).
    """
    if isinstance(value, bool) or value is None:
        raise InvalidFieldError(field, "must be a number or a decimal string")
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, str):
        if len(value) > _MAX_TEXT_LENGTH or not _DECIMAL_TEXT.fullmatch(value):
            raise InvalidFieldError(field, f"{value[:_MAX_TEXT_LENGTH]!r} is not a decimal number")
        try:
            number = Decimal(value)
        except InvalidOperation as exc:  # pragma: no cover - the regex admits only valid text
            raise InvalidFieldError(field, f"{value!r} is not a decimal number") from exc
    else:
        raise InvalidFieldError(field, "must be a number or a decimal string")
    if not number.is_finite():
        raise InvalidFieldError(field, "must be a finite number")
    return number


def to_fixed(value: Decimal, decimals: int, field: str, *, allow_zero: bool = False) -> int:
    """`value * 10**decimals` as an exact integer in 0..2**256-1.

    Raises:
        InvalidFieldError: when negative, zero (unless `allow_zero`), more precise than `decimals` places, or
            too large for a uint256.
    """
    if not value.is_finite():
        raise InvalidFieldError(field, "must be a finite number", value=str(value))
    if value.is_signed() and value != 0:
        raise InvalidFieldError(field, "must not be negative", value=str(value))
    if value == 0:
        if allow_zero:
            return 0
        raise InvalidFieldError(field, "must be greater than zero", value=str(value))
    # Integer arithmetic from here on: Decimal operations round to the context's 28 significant digits,
    # which would silently change a longer amount.
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)  # finite, checked above
    significant = len(digits)
    while digits[significant - 1] == 0:  # trailing zeros carry no precision ("0.140000...0" is 0.14)
        significant -= 1
    exponent += len(digits) - significant
    if exponent < -decimals:
        raise InvalidFieldError(
            field, f"has more than {decimals} decimal places", value=str(value), max_decimals=decimals
        )
    if value.adjusted() > 80:  # cheaper than scaling a huge exponent before the uint256 check
        raise InvalidFieldError(field, "is too large for the chain (above 2**256 - 1)", value=str(value))
    coefficient = int("".join(str(digit) for digit in digits[:significant]))  # <= 80 + decimals digits
    scaled: int = coefficient * 10 ** (exponent + decimals)  # exponent >= -decimals, so an int
    if scaled > UINT256_MAX:
        raise InvalidFieldError(field, "is too large for the chain (above 2**256 - 1)", value=str(value))
    return scaled


def parse_fixed(value: object, decimals: int, field: str, *, allow_zero: bool = False) -> int:
    """`parse_decimal` then `to_fixed`: the one call the request edge needs per numeric field."""
    return to_fixed(parse_decimal(value, field), decimals, field, allow_zero=allow_zero)


def parse_bool(value: object, field: str) -> bool:
    """A JSON `true` or `false`, and nothing else: not 1, not `"true"` (a flag that sends real trades must
    be said, not guessed).

    >>> parse_bool(True, "dry_run")
    True
    >>> parse_bool("false", "dry_run")
    Traceback (most recent call last):
    relayer.errors.InvalidFieldError: dry_run: must be true or false
    """
    if isinstance(value, bool):
        return value
    raise InvalidFieldError(field, "must be true or false")


def parse_int(value: object, field: str, *, minimum: int, maximum: int) -> int:
    """An integral JSON number (e.g. basis points) within `minimum..maximum`.

    `3.0` is accepted (JSON does not distinguish it from `3`), `3.5` is not.
    """
    number = parse_decimal(value, field)
    if number != number.to_integral_value():
        raise InvalidFieldError(field, "must be a whole number", value=str(number))
    if not minimum <= number <= maximum:
        raise InvalidFieldError(
            field,
            f"must be between {minimum} and {maximum}",
            value=str(number),
            minimum=minimum,
            maximum=maximum,
        )
    return int(number)


def from_fixed(amount: int, decimals: int) -> Decimal:
    """The exact `Decimal` an integer with `decimals` implied places stands for (no trailing zeros).

    Built from digits, not with `scaleb`/`normalize`, which round to the context's 28 significant digits.
    """
    if amount == 0:
        return Decimal(0)
    magnitude, exponent = abs(amount), -decimals
    while exponent < 0 and magnitude % 10 == 0:
        magnitude //= 10
        exponent += 1
    if exponent > 0:  # negative `decimals`: spell the integer out, never as an exponent
        magnitude *= 10**exponent
        exponent = 0
    return Decimal((int(amount < 0), Decimal(magnitude).as_tuple().digits, exponent))


def format_fixed(amount: int, decimals: int) -> str:
    """`from_fixed` as plain text: never an exponent, never trailing zeros (`'0.0012'`, `'420'`)."""
    return format(from_fixed(amount, decimals), "f")


def usd_text(price_e8: int) -> str:
    """A USD price or PnL amount (both 8 decimals in the vault), as exact text (`'96200.5'`)."""
    return format_fixed(price_e8, PRICE_DECIMALS)


def size_text(size: int) -> str:
    """A base-asset size with 18 decimals, as exact text (`'0.1386'`)."""
    return format_fixed(size, SIZE_DECIMALS)
