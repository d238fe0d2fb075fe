"""Sizing a percentage close and bounding its price: the pure rules behind "take 33% off my BTC long".

>>> size_for_exit_pct(42 * 10**16, 33)  # 33% of 0.42 BTC, rounded down to the wei
138600000000000000
>>> allowed_price_for_slippage(is_long=True, price_e8=9_620_000_000_000, slippage_bps=50)  # long: minimum
9571900000000
>>> allowed_price_for_slippage(is_long=False, price_e8=9_620_000_000_000, slippage_bps=50)  # short: max
9668100000000
>>> closed_pct_text(1386 * 10**14, 42 * 10**16)  # 0.1386 of 0.42
'33'
>>> closed_pct_text(10**16, 2814 * 10**14)  # 0.01 of 0.2814: not a whole percent
'3.553660270078180526'
"""

from __future__ import annotations

from relayer.constants import CLOSE_ALL_SIZE, PERCENT
from relayer.domain.bps import percent_of, plus_bps
from relayer.domain.units import format_fixed
from relayer.errors import InvalidFieldError

CLOSED_PCT_DECIMALS = 18
"""Decimal places of a reported `closed_pct`: the share is exact whenever it ends within them (33% of 0.42,
12.5% of anything), otherwise it is rounded half-even at the last place (0.01 of 0.2814 = 3.5536...%)."""


def size_for_exit_pct(size: int, exit_pct: int) -> int:
    """The `sizeDelta` closing `exit_pct`% of `size`: 100 is the close-all sentinel, the rest rounds down.

    Rounding down never closes more than asked; the sentinel makes 100% exact even if the size changes between
    reading it and execution.

    Raises:
        InvalidFieldError: when the share rounds to zero (the position is too small to split that finely).
    """
    if exit_pct == PERCENT:
        return CLOSE_ALL_SIZE
    share = percent_of(size, exit_pct)
    if share == 0:
        raise InvalidFieldError("exit_pct", f"{exit_pct}% of this position rounds to zero", size=str(size))
    return share


def allowed_price_for_slippage(*, is_long: bool, price_e8: int, slippage_bps: int) -> int:
    """The worst exit price within `slippage_bps` of `price_e8` for closing this side.

    A long sells, so its bound is a minimum (rounded up); a short buys back, so its bound is a maximum
    (rounded down). Rounding toward the current price keeps the bound within the promised slippage.
    """
    if is_long:
        return plus_bps(price_e8, -slippage_bps, round_up=True)
    return plus_bps(price_e8, slippage_bps, round_up=False)


def closed_pct_text(closed: int, size_before: int) -> str:
    """`closed` as a percentage of `size_before`, as exact decimal text (see `CLOSED_PCT_DECIMALS`).

    The one formula for every trading answer: computed from the fill itself (the event's `sizeDelta` and the
    size before it), so a percentage request reports the share it really closed, never a truncated integer.
    """
    if size_before <= 0:
        return "0"
    quotient, remainder = divmod(closed * PERCENT * 10**CLOSED_PCT_DECIMALS, size_before)
    if 2 * remainder > size_before or (2 * remainder == size_before and quotient % 2):
        quotient += 1
    return format_fixed(quotient, CLOSED_PCT_DECIMALS)
