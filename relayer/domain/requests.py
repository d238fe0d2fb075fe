"""A close / modify request: raw JSON in, a typed `CloseRequest` in chain units out.

Every rule about the request's fields lives here, once: names, types, units, ranges, and which fields require
or forbid which. What depends on the chain (the position's size, the current price) is checked by
`relayer.services.builder`. Pure: no node, no HTTP.

>>> request = parse_close_request({"positionId": "0x" + "ab" * 32, "sizeDelta": "0.14"})
>>> request.size_delta, request.action
(140000000000000000, <CloseAction.DECREASE: 'decrease'>)
>>> parse_close_request({"positionId": "0x" + "ab" * 32}).action
<CloseAction.CLOSE: 'close'>
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from eth_utils.address import is_checksum_address, to_checksum_address

from relayer.constants import BPS_DENOMINATOR, MAX_TRIGGER_PRICE_E8, PRICE_DECIMALS, SIZE_DECIMALS
from relayer.domain.jsonio import reject_unknown_fields
from relayer.domain.positions import TriggerOrder
from relayer.domain.units import format_fixed, parse_decimal, parse_fixed
from relayer.errors import InvalidCloseBpsError, InvalidFieldError, InvalidPriceError

POSITION_ID = "positionId"
SIZE_DELTA = "sizeDelta"
ALLOWED_PRICE = "allowedPrice"
TAKE_PROFIT = "takeProfit"
STOP_LOSS = "stopLoss"
TAKE_PROFIT_CLOSE_PERCENT = "takeProfitClosePercent"
STOP_LOSS_CLOSE_PERCENT = "stopLossClosePercent"
FIELDS = (
    POSITION_ID,
    SIZE_DELTA,
    ALLOWED_PRICE,
    TAKE_PROFIT,
    STOP_LOSS,
    TAKE_PROFIT_CLOSE_PERCENT,
    STOP_LOSS_CLOSE_PERCENT,
)
"""The request's field names, exactly as the API documents them."""

# Used with `fullmatch`: `$` would also match before a trailing newline, and `bytes.fromhex` skips whitespace.
_BYTES32_HEX = re.compile(r"0x[0-9a-fA-F]{64}", re.ASCII)
_ADDRESS_HEX = re.compile(r"0x[0-9a-fA-F]{40}", re.ASCII)


class CloseAction(StrEnum):
    """What a request asks the vault to do; decided by which fields are present."""

    CLOSE = "close"
    """Only `positionId` (and maybe `allowedPrice`): close whatever remains at execution time."""
    DECREASE = "decrease"
    """`sizeDelta`: close that much."""
    SET_TRIGGERS = "set_triggers"
    """`takeProfit` and/or `stopLoss` without `sizeDelta`: change the orders, close nothing."""
    DECREASE_AND_SET_TRIGGERS = "decrease_and_set_triggers"
    """`sizeDelta` with `takeProfit`/`stopLoss`: both in one `multicall`."""


@dataclass(frozen=True)
class CloseRequest:
    """A validated request in chain units: sizes with 18 decimals, prices with 8, percentages in bps."""

    position_id: bytes
    size_delta: int | None = None
    """None: close everything (CLOSE) or nothing (SET_TRIGGERS), depending on the triggers."""
    allowed_price_e8: int = 0
    """Worst acceptable exit price (long: minimum, short: maximum); 0 = no bound."""
    take_profit: TriggerOrder | None = None
    """The new take-profit (`NO_ORDER` cancels it); None leaves it as it is."""
    stop_loss: TriggerOrder | None = None

    @property
    def sets_triggers(self) -> bool:
        return self.take_profit is not None or self.stop_loss is not None

    @property
    def action(self) -> CloseAction:
        if self.size_delta is None:
            return CloseAction.SET_TRIGGERS if self.sets_triggers else CloseAction.CLOSE
        return CloseAction.DECREASE_AND_SET_TRIGGERS if self.sets_triggers else CloseAction.DECREASE

    @property
    def closes(self) -> bool:
        """Whether the request closes any size at all."""
        return self.action is not CloseAction.SET_TRIGGERS


def parse_position_id(value: object, field: str = POSITION_ID) -> bytes:
    """A bytes32 position id from its 0x-hex text (64 hex digits, either case)."""
    if not isinstance(value, str) or not _BYTES32_HEX.fullmatch(value):
        shown = value[:80] if isinstance(value, str) else type(value).__name__
        raise InvalidFieldError(field, f"must be a bytes32 id as 0x followed by 64 hex digits, got {shown!r}")
    return bytes.fromhex(value[2:])


def parse_owner(value: object, field: str = "owner") -> str:
    """A checksummed address from 0x-hex text; a mixed-case address must carry a valid EIP-55 checksum."""
    if not isinstance(value, str) or not _ADDRESS_HEX.fullmatch(value):
        shown = value[:80] if isinstance(value, str) else type(value).__name__
        raise InvalidFieldError(field, f"must be an address as 0x followed by 40 hex digits, got {shown!r}")
    mixed = value[2:] != value[2:].lower() and value[2:] != value[2:].upper()
    if mixed and not is_checksum_address(value):
        raise InvalidFieldError(field, "has an invalid EIP-55 checksum (mixed case); check for a typo")
    return to_checksum_address(value)


def parse_close_request(raw: Mapping[str, Any]) -> CloseRequest:
    """Validate a decoded JSON body (numbers already exact `Decimal`s, see `relayer.domain.jsonio`).

    A field set to JSON `null` counts as absent. Unknown fields are rejected, so a misspelt `sizedelta` cannot
    silently turn a partial close into a full one.

    Raises:
        InvalidFieldError: a missing, unknown, malformed or out-of-range field, or a combination the API
            does not allow (`details.field` names it).
        InvalidPriceError: a trigger price the vault cannot store (above 2**112 - 1 in 8-decimal units).
        InvalidCloseBpsError: a close percentage outside 1..10000 basis points.
    """
    reject_unknown_fields(raw, FIELDS)
    present = {key: value for key, value in raw.items() if value is not None}
    if POSITION_ID not in present:
        raise InvalidFieldError(POSITION_ID, "is required")
    position_id = parse_position_id(present[POSITION_ID])

    size_delta = None
    if SIZE_DELTA in present:
        size_delta = parse_fixed(present[SIZE_DELTA], SIZE_DECIMALS, SIZE_DELTA)
    take_profit = _trigger(present, TAKE_PROFIT, TAKE_PROFIT_CLOSE_PERCENT)
    stop_loss = _trigger(present, STOP_LOSS, STOP_LOSS_CLOSE_PERCENT)

    allowed_price_e8 = 0
    if ALLOWED_PRICE in present:
        allowed_price_e8 = parse_fixed(present[ALLOWED_PRICE], PRICE_DECIMALS, ALLOWED_PRICE, allow_zero=True)
        if size_delta is None and (take_profit is not None or stop_loss is not None):
            raise InvalidFieldError(
                ALLOWED_PRICE, "only applies when closing: without sizeDelta this request only sets orders"
            )
    return CloseRequest(position_id, size_delta, allowed_price_e8, take_profit, stop_loss)


def _trigger(present: Mapping[str, Any], price_field: str, percent_field: str) -> TriggerOrder | None:
    if price_field not in present:
        if percent_field in present:
            raise InvalidFieldError(percent_field, f"is only allowed together with {price_field}")
        return None
    price_e8 = parse_trigger_price(present[price_field], price_field)
    close_bps = parse_close_bps(present.get(percent_field), percent_field, cancelling=price_e8 == 0)
    return TriggerOrder(price_e8, close_bps)


def parse_trigger_price(value: object, field: str) -> int:
    """A take-profit / stop-loss price in USD as the vault's 8-decimal integer: 0 cancels the order, anything
    else must fit the vault's `uint112` (1..2**112 - 1 units).

    >>> parse_trigger_price("99000.5", "price")
    9900050000000

    Raises:
        InvalidFieldError: not a non-negative decimal with at most 8 places.
        InvalidPriceError: above the largest price the vault stores.
    """
    return check_trigger_price_e8(parse_fixed(value, PRICE_DECIMALS, field, allow_zero=True), field)


def check_trigger_price_e8(price_e8: int, field: str) -> int:
    """`price_e8` if the vault can store it as a trigger price (0 cancels), as `parse_trigger_price` rules.

    Raises:
        InvalidPriceError: negative or above 2**112 - 1.
    """
    if not 0 <= price_e8 <= MAX_TRIGGER_PRICE_E8:
        raise InvalidPriceError(
            f"{field}: must be 0 (cancel) or a price the vault stores, at most "
            f"{format_fixed(MAX_TRIGGER_PRICE_E8, PRICE_DECIMALS)}",
            field=field,
            max=format_fixed(MAX_TRIGGER_PRICE_E8, PRICE_DECIMALS),
        )
    return price_e8


def parse_close_bps(value: object, field: str, *, cancelling: bool) -> int:
    """How much of the position a take-profit / stop-loss closes, in basis points (10000 = 100%).

    Setting an order (`cancelling=False`) needs a whole number 1..10000; cancelling one (its price is 0) takes
    none: `value` must be absent (None), and the result is 0. The one rule for every face: the close request,
    `GET /api/relay/typed-data`, signed set-trigger requests and API-key trading.

    >>> parse_close_bps("2500", "closeBps", cancelling=False)
    2500
    >>> parse_close_bps(None, "closeBps", cancelling=True)
    0

    Raises:
        InvalidFieldError: missing when setting, present when cancelling, or not a whole number.
        InvalidCloseBpsError: a whole number outside 1..10000.
    """
    if cancelling:
        if value is not None:
            raise InvalidFieldError(field, "must be omitted when the price is 0 (cancel the order)")
        return 0
    if value is None:
        raise InvalidFieldError(
            field, f"is required when the price is set (basis points, 1..{BPS_DENOMINATOR})"
        )
    number = parse_decimal(value, field)
    if number != number.to_integral_value():
        raise InvalidFieldError(field, "must be a whole number of basis points", value=str(number))
    if not 1 <= number <= BPS_DENOMINATOR:
        raise InvalidCloseBpsError(
            f"{field}: must be 1..{BPS_DENOMINATOR} basis points (10000 = 100%)",
            field=field,
            value=str(number),
        )
    return int(number)
