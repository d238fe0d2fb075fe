"""Positions as the relayer sees them, and the vault's PnL arithmetic mirrored exactly in Python.

Everything here is pure: integers in the vault's units in, integers out. `realized_pnl_e8` must agree with
`Vault.realizedPnl` to the last unit (a property test checks it against the chain).
"""

from __future__ import annotations

from dataclasses import dataclass

from relayer.constants import SIZE_DECIMALS
from relayer.domain.bps import bps_of

SIZE_ONE = 10**SIZE_DECIMALS


@dataclass(frozen=True)
class TriggerOrder:
    """A take-profit or stop-loss as the vault stores it: a price and the share of the size it closes.

    `price_e8 == 0` means none: a position's order that is not set, or in a request (`CloseRequest`, the
    trading service) the order cancelled, with `close_bps` 0. One type for both, since the vault's
    `setTakeProfit(id, price, closeBps)` takes exactly what it stores.
    """

    price_e8: int
    close_bps: int

    @property
    def active(self) -> bool:
        """Whether the order is set (in a request: sets one rather than cancelling it)."""
        return self.price_e8 != 0


NO_ORDER = TriggerOrder(0, 0)
"""No order: what a full close leaves, and what a request with price 0 asks for."""


@dataclass(frozen=True)
class Position:
    """A vault position in chain units (size 18 decimals, prices 8 decimals)."""

    position_id: bytes
    owner: str
    market: str
    is_long: bool
    size: int
    entry_price_e8: int
    take_profit: TriggerOrder
    stop_loss: TriggerOrder

    @property
    def exists(self) -> bool:
        return self.owner != "0x0000000000000000000000000000000000000000"

    @property
    def is_open(self) -> bool:
        return self.size > 0


def side_name(is_long: bool) -> str:
    """`"long"` or `"short"`: how every answer names a side."""
    return "long" if is_long else "short"


def realized_pnl_e8(is_long: bool, entry_price_e8: int, exit_price_e8: int, size_delta: int) -> int:
    """USD PnL (8 decimals) of closing `size_delta` at `exit_price_e8`, rounded in the vault's favour.

    A profit rounds down, a loss rounds up (away from zero), exactly as the contract does.

    >>> realized_pnl_e8(True, 9_500_000_000_000, 9_620_000_000_000, 14 * 10**16)  # +$168 on 0.14 BTC
    16800000000
    >>> realized_pnl_e8(False, 100, 101, 1)  # a one-wei loss still costs one unit
    -1
    """
    profit = exit_price_e8 > entry_price_e8 if is_long else exit_price_e8 < entry_price_e8
    product = abs(exit_price_e8 - entry_price_e8) * size_delta
    if profit:
        return product // SIZE_ONE
    return -((product + SIZE_ONE - 1) // SIZE_ONE)


def trigger_close_size(size: int, close_bps: int) -> int:
    """Size a trigger with `close_bps` closes from `size`.

    Rounded down; a share that rounds to zero closes everything, so a dust position can still be closed.
    """
    share = bps_of(size, close_bps)
    return share if share > 0 else size


def trigger_on_valid_side(
    is_long: bool, is_take_profit: bool, trigger_price_e8: int, current_price_e8: int
) -> bool:
    """A take-profit must sit on the profitable side of the current price, a stop-loss on the losing side."""
    if is_long == is_take_profit:
        return trigger_price_e8 > current_price_e8
    return trigger_price_e8 < current_price_e8


def price_within_bound(is_long: bool, price_e8: int, allowed_price_e8: int) -> bool:
    """Whether closing at `price_e8` respects the slippage bound.

    A long may not close below `allowed_price_e8`, a short not above it; 0 means no bound.
    """
    if allowed_price_e8 == 0:
        return True
    return price_e8 >= allowed_price_e8 if is_long else price_e8 <= allowed_price_e8


def crossed_trigger(position: Position, price_e8: int) -> bool | None:
    """Which order `executeTrigger` would execute at `price_e8`: True (take-profit), False (stop-loss), None.

    Mirrors the vault: the stop-loss goes first when both are crossed, since it is the one that limits risk.
    """
    sl, tp = position.stop_loss, position.take_profit
    if not position.is_open:
        return None
    if sl.active and (price_e8 <= sl.price_e8 if position.is_long else price_e8 >= sl.price_e8):
        return False
    if tp.active and (price_e8 >= tp.price_e8 if position.is_long else price_e8 <= tp.price_e8):
        return True
    return None
