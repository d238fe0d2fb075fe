"""How a trading request's body is read: its identity for the idempotency rule, its side, its allowed price,
and the exit orders it asks for (`parse_exit_plan`: tiers, a stop, a trailing stop).

Pure over the request's values (the body, the key, a position and its price): no I/O. `TradingService` in
`relayer.services.trading` checks the key and the body's fields, then reads the request through these; its
answers are formatted in `relayer.services.trading_answers`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from relayer.constants import FIRST_STOP_ID, MAX_TRAIL_BPS, PERCENT, PRICE_DECIMALS, TAKE_PROFIT_COUNT
from relayer.domain.apikeys import ApiKey
from relayer.domain.bps import parse_percent, parse_slippage_bps, percent_to_bps
from relayer.domain.calldata import ExitOrder
from relayer.domain.exits import allowed_price_for_slippage
from relayer.domain.jsonio import reject_unknown_fields
from relayer.domain.positions import Position, trailed_trigger
from relayer.domain.requests import parse_trigger_price
from relayer.domain.units import parse_bool, parse_fixed, parse_int
from relayer.errors import InvalidFieldError
from relayer.services.relay.values import request_hash

PARTIAL_CLOSE_FIELDS = (
    "symbol",
    "exit_pct",
    "side",
    "positionId",
    "allowedPrice",
    "maxSlippageBps",
    "dry_run",
)
CLOSE_FIELDS = ("positionId", "sizeDelta", "allowedPrice", "maxSlippageBps", "dry_run")
TAKE_PROFIT_FIELDS = ("positionId", "price", "close_pct", "exit_pct", "dry_run")
STOP_LOSS_FIELDS = ("positionId", "price", "close_pct", "trail_bps", "dry_run")
BREAKEVEN_FIELDS = ("positionId", "dry_run")
EXIT_PLAN_FIELDS = ("positionId", "symbol", "side", "take_profits", "stop_loss", "trailing_stop", "dry_run")
CANCEL_ORDER_FIELDS = ("positionId", "orderId", "dry_run")
EMERGENCY_EXIT_FIELDS = ("symbol", "dry_run")
ORDERS_FIELDS = ("positionId", "symbol", "side")
"""The body fields of each trading action as REST names them (MCP tools map their arguments onto these);
`ORDERS_FIELDS` are `GET /api/trade/orders`'s query parameters."""
ENDPOINT_FIELDS = {
    "partialclose": PARTIAL_CLOSE_FIELDS,
    "close": CLOSE_FIELDS,
    "takeprofit": TAKE_PROFIT_FIELDS,
    "stoploss": STOP_LOSS_FIELDS,
    "breakeven": BREAKEVEN_FIELDS,
    "exitplan": EXIT_PLAN_FIELDS,
    "cancelorder": CANCEL_ORDER_FIELDS,
    "emergencyexit": EMERGENCY_EXIT_FIELDS,
}
ORDER_ENDPOINTS = frozenset({"takeprofit", "stoploss", "breakeven", "exitplan", "cancelorder"})
"""The actions that change a position's exit orders (they answer the plan after the change)."""

TIER_FIELDS = ("price", "exit_pct")
"""One take-profit tier of `set_exit_plan`'s `take_profits`."""
STOP_FIELDS = ("price", "exit_pct")
TRAILING_STOP_FIELDS = ("trail_bps", "price", "exit_pct")

DEFAULT_EXIT_PCT = 50
"""`partial_close` closes half the position when `exit_pct` is not given (as the reference tool does)."""


@dataclass(frozen=True)
class TradeIntent:
    """One trading request as the idempotency rule sees it: who, which endpoint, which body, which key."""

    endpoint: str
    key: ApiKey
    body: Mapping[str, Any]
    idempotency_key: str | None

    @property
    def scope(self) -> str:
        """Keys are the account's own: another account (or the keeper) can never collide with them."""
        return f"account:{self.key.account.lower()}"

    @property
    def fingerprint(self) -> str:
        return request_hash(self.endpoint, self.body)

    @property
    def dry_run(self) -> bool:
        flag = self.body.get("dry_run")
        return flag is not None and parse_bool(flag, "dry_run")


def parse_side(raw: object) -> bool | None:
    """`"long"` -> True, `"short"` -> False, absent -> None."""
    if raw is None:
        return None
    if isinstance(raw, str) and raw.lower() in {"long", "short"}:
        return raw.lower() == "long"
    raise InvalidFieldError("side", "must be 'long' or 'short'")


def allowed_price(
    body: Mapping[str, Any], position: Position, price_e8: int, *, default_slippage_bps: int
) -> int:
    """`allowedPrice` as given, or `maxSlippageBps` (else `default_slippage_bps`) away from the price."""
    if body.get("allowedPrice") is not None:
        if body.get("maxSlippageBps") is not None:
            raise InvalidFieldError("maxSlippageBps", "give allowedPrice or maxSlippageBps, not both")
        return parse_fixed(body["allowedPrice"], PRICE_DECIMALS, "allowedPrice")
    raw_bps = body.get("maxSlippageBps")
    bps = default_slippage_bps if raw_bps is None else parse_slippage_bps(raw_bps)
    return allowed_price_for_slippage(is_long=position.is_long, price_e8=price_e8, slippage_bps=bps)


# --- exit orders --------------------------------------------------------------------------------------------


def parse_trail_bps(value: object, field: str = "trail_bps") -> int:
    """A trailing stop's distance from the price, 1..`MAX_TRAIL_BPS` basis points (1 = 0.01%)."""
    return parse_int(value, field, minimum=1, maximum=MAX_TRAIL_BPS)


def parse_share_pct(value: object, field: str, *, default: int | None = None) -> int:
    """A share of the plan given in percent (1..100, `exit_pct`) as basis points; `default` when absent.

    Raises:
        InvalidFieldError: not a whole number 1..100, or absent without a default.
    """
    if value is None:
        if default is None:
            raise InvalidFieldError(field, "is required (percent of the plan, 1-100)")
        return percent_to_bps(default)
    return percent_to_bps(parse_percent(value, field))


@dataclass(frozen=True)
class StopRequest:
    """A stop of an exit plan as asked: its trigger (None: `trail_bps` from the current price), its share of
    the plan in basis points and its trail (0: a fixed stop)."""

    price_e8: int | None
    share_bps: int
    trail_bps: int = 0

    def order(self, order_id: int, is_long: bool, price_e8: int) -> ExitOrder:
        """The vault's order at the current price `price_e8`: a trailing stop without a price starts
        `trail_bps` away from it, on the losing side."""
        trigger = self.price_e8
        if trigger is None:
            trigger = trailed_trigger(is_long, price_e8, self.trail_bps)
        return (order_id, trigger, self.share_bps, self.trail_bps)


@dataclass(frozen=True)
class ExitPlanRequest:
    """`set_exit_plan`'s body read: take-profit tiers `(price e8, share bps)` as given, a fixed stop and a
    trailing stop (either may be absent, not both with no tier)."""

    take_profits: tuple[tuple[int, int], ...]
    stop_loss: StopRequest | None
    trailing_stop: StopRequest | None

    def orders(self, is_long: bool, price_e8: int) -> tuple[ExitOrder, ...]:
        """The whole plan as the vault's orders: take-profit ids 0.. in the order a price reaches them
        (ascending prices for a long, descending for a short); the stop is order 4 and the trailing stop
        order 5 when both are given, else whichever is given is order 4 (the primary stop)."""
        ranked = sorted(self.take_profits, key=lambda tier: tier[0], reverse=not is_long)
        orders = [(order_id, price, share, 0) for order_id, (price, share) in enumerate(ranked)]
        stops = [stop for stop in (self.stop_loss, self.trailing_stop) if stop is not None]
        orders += [stop.order(FIRST_STOP_ID + k, is_long, price_e8) for k, stop in enumerate(stops)]
        return tuple(orders)


def _fields_of(value: object, field: str, allowed: tuple[str, ...]) -> Mapping[str, Any]:
    """A nested JSON object of a body, its fields checked (`field.name` in errors)."""
    if not isinstance(value, Mapping):
        raise InvalidFieldError(field, f"must be an object with {', '.join(allowed)}")
    try:
        reject_unknown_fields(value, allowed)
    except InvalidFieldError as error:
        raise error.renamed(f"{field}.{error.field}") from None
    return value


def parse_exit_plan(body: Mapping[str, Any]) -> ExitPlanRequest:
    """`take_profits` (a list of up to four `{price, exit_pct}`), `stop_loss` (`{price, exit_pct?}`) and
    `trailing_stop` (`{trail_bps, price?, exit_pct?}`); a stop's `exit_pct` defaults to 100 (whatever
    remains). Prices in USD, above 0.

    Raises:
        InvalidFieldError: a malformed part (named, e.g. `take_profits[1].exit_pct`), more than four tiers,
            or no order at all.
    """
    raw_tiers = body.get("take_profits")
    tiers: list[tuple[int, int]] = []
    if raw_tiers is not None:
        if not isinstance(raw_tiers, list):
            raise InvalidFieldError("take_profits", "must be a list of {price, exit_pct} objects")
        if len(raw_tiers) > TAKE_PROFIT_COUNT:
            raise InvalidFieldError(
                "take_profits", f"at most {TAKE_PROFIT_COUNT} tiers (take-profit order ids 0-3)"
            )
        for index, raw in enumerate(raw_tiers):
            name = f"take_profits[{index}]"
            tier = _fields_of(raw, name, TIER_FIELDS)
            price = parse_order_price(tier.get("price"), f"{name}.price")
            tiers.append((price, parse_share_pct(tier.get("exit_pct"), f"{name}.exit_pct")))
    stop = None
    if body.get("stop_loss") is not None:
        fields = _fields_of(body["stop_loss"], "stop_loss", STOP_FIELDS)
        stop = StopRequest(
            parse_order_price(fields.get("price"), "stop_loss.price"),
            parse_share_pct(fields.get("exit_pct"), "stop_loss.exit_pct", default=PERCENT),
        )
    trailing = None
    if body.get("trailing_stop") is not None:
        fields = _fields_of(body["trailing_stop"], "trailing_stop", TRAILING_STOP_FIELDS)
        if fields.get("trail_bps") is None:
            raise InvalidFieldError("trailing_stop.trail_bps", "is required (basis points, 1-9999)")
        raw_price = fields.get("price")
        trailing = StopRequest(
            None if raw_price is None else parse_order_price(raw_price, "trailing_stop.price"),
            parse_share_pct(fields.get("exit_pct"), "trailing_stop.exit_pct", default=PERCENT),
            parse_trail_bps(fields["trail_bps"], "trailing_stop.trail_bps"),
        )
    if not tiers and stop is None and trailing is None:
        raise InvalidFieldError(
            "take_profits",
            "give at least one of take_profits, stop_loss, trailing_stop (cancel orders with cancel_order)",
        )
    return ExitPlanRequest(tuple(tiers), stop, trailing)


def parse_order_price(value: object, field: str) -> int:
    """An order's trigger price in USD as e8; required and above 0 (cancelling is `cancel_order`).

    Raises:
        InvalidFieldError: absent, zero, or not a decimal of at most 8 places.
        InvalidPriceError: above the largest price the vault stores.
    """
    if value is None:
        raise InvalidFieldError(field, "is required (USD)")
    price_e8 = parse_trigger_price(value, field)
    if price_e8 == 0:
        raise InvalidFieldError(field, "must be above 0")
    return price_e8
