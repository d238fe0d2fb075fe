"""Basis points and percent: every conversion between them, and every scaling by them, in one place.

Integers in, integers out; each function says which way it rounds, and the caller picks the direction its
rule needs: a share of a size rounds down (never close more than asked), a gas margin or a fee bump rounds
up (never lose it to integer division), a slippage bound rounds toward the current price.

>>> percent_to_bps(33)
3300
>>> bps_of(42 * 10**16, 2_500)  # a quarter of 0.42 BTC
105000000000000000
>>> percent_of(42 * 10**16, 33)  # 33% of 0.42 BTC, rounded down to the wei
138600000000000000
>>> plus_bps(100_000, 2_000, round_up=True)  # +20%
120000
>>> plus_bps(9_620_000_000_000, -50, round_up=True)  # -0.5%, rounded up
9571900000000
>>> parse_slippage_bps(10_000)
Traceback (most recent call last):
...
relayer.errors.InvalidFieldError: maxSlippageBps: must be between 0 and 9999
"""

from __future__ import annotations

from relayer.constants import BPS_DENOMINATOR, MAX_SLIPPAGE_BPS, PERCENT
from relayer.domain.units import parse_int

BPS_PER_PERCENT = BPS_DENOMINATOR // PERCENT
"""100 basis points make one percent."""


def percent_to_bps(pct: int) -> int:
    """Whole percent as basis points (exact).

    >>> percent_to_bps(100) == BPS_DENOMINATOR
    True
    """
    return pct * BPS_PER_PERCENT


def bps_of(amount: int, bps: int) -> int:
    """`bps` basis points of `amount`, rounded down (toward zero for a non-negative amount)."""
    return amount * bps // BPS_DENOMINATOR


def percent_of(amount: int, pct: int) -> int:
    """`pct` percent of `amount`, rounded down: the same share as `bps_of` with `percent_to_bps(pct)`."""
    return bps_of(amount, percent_to_bps(pct))


def plus_bps(amount: int, bps: int, *, round_up: bool) -> int:
    """`amount` raised by `bps` basis points (lowered, when `bps` is negative), rounded up or down.

    >>> plus_bps(9_620_000_000_000, 50, round_up=False)  # +0.5%, rounded down
    9668100000000
    >>> plus_bps(1, 1, round_up=True), plus_bps(1, 1, round_up=False)
    (2, 1)
    """
    numerator = amount * (BPS_DENOMINATOR + bps)
    if round_up:
        return -(-numerator // BPS_DENOMINATOR)
    return numerator // BPS_DENOMINATOR


def parse_percent(value: object, field: str) -> int:
    """A whole percentage 1..100 from a request (`exit_pct`, `close_pct`).

    Raises:
        InvalidFieldError: not a whole number, or outside 1..100.
    """
    return parse_int(value, field, minimum=1, maximum=PERCENT)


def parse_slippage_bps(value: object, field: str = "maxSlippageBps") -> int:
    """A slippage bound in basis points, 0..`MAX_SLIPPAGE_BPS`: the one rule for requests and settings.

    >>> parse_slippage_bps(50)
    50

    Raises:
        InvalidFieldError: not a whole number, or outside 0..9999.
    """
    return parse_int(value, field, minimum=0, maximum=MAX_SLIPPAGE_BPS)
