"""How a trading request's body is read: its identity for the idempotency rule, its side, its allowed price.

Pure over the request's values (the body, the key, a position and its price): no I/O. `TradingService` in
`relayer.services.trading` checks the key and the body's fields, then reads the request through these; its
answers are formatted in `relayer.services.trading_answers`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from relayer.constants import PRICE_DECIMALS
from relayer.domain.apikeys import ApiKey
from relayer.domain.bps import parse_slippage_bps
from relayer.domain.exits import allowed_price_for_slippage
from relayer.domain.positions import Position
from relayer.domain.units import parse_bool, parse_fixed
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
TRIGGER_FIELDS = ("positionId", "price", "close_pct", "dry_run")
BREAKEVEN_FIELDS = ("positionId", "dry_run")
"""The body fields of each trading action as REST names them (MCP tools map their arguments onto these)."""
ENDPOINT_FIELDS = {
    "partialclose": PARTIAL_CLOSE_FIELDS,
    "close": CLOSE_FIELDS,
    "takeprofit": TRIGGER_FIELDS,
    "stoploss": TRIGGER_FIELDS,
    "breakeven": BREAKEVEN_FIELDS,
}

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
