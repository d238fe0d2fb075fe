"""A demo price feed for the embedded chain: a seeded random walk in whole basis points.

On a real node prices come from whoever holds the vault's price-keeper role; on the embedded chain `relayer
serve` runs this so a newcomer sees orders trigger. The walk uses integer basis-point steps from a seeded
`random.Random`, so a run is reproducible and no float ever touches a price.

The feed exists on the embedded chain even with the walk off (`--price-feed-interval 0`, `walking=False`):
setting a price by hand is how a newcomer fires an order on purpose, and it matters most when nothing else
moves the price.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from relayer.constants import PRICE_DECIMALS
from relayer.domain.bps import plus_bps
from relayer.domain.jsonio import reject_unknown_fields
from relayer.domain.markets import normalize_symbol
from relayer.domain.units import parse_bool, parse_fixed, usd_text
from relayer.errors import InvalidFieldError, MarketNotFoundError


def next_price_e8(price_e8: int, step_bps: int) -> int:
    """`price_e8` moved by `step_bps` basis points (rounded down, never below 1).

    >>> next_price_e8(9_600_000_000_000, 25)
    9624000000000
    >>> next_price_e8(9_600_000_000_000, -25)
    9576000000000
    """
    return max(1, plus_bps(price_e8, step_bps, round_up=False))


@dataclass
class PriceFeed:
    """Moves each market's price by a random step of at most `max_step_bps` per tick; can be paused.

    `walking` is False when nothing calls `tick` (the walk is off): the feed then only sets prices by hand,
    shows as paused, and refuses to be resumed.
    """

    set_price: Callable[[str, int], None]
    prices_e8: dict[str, int]
    seed: int = 0
    max_step_bps: int = 30
    walking: bool = True
    _rng: random.Random = field(init=False)
    _paused: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)  # noqa: S311 - a reproducible demo walk, not a secret

    @property
    def paused(self) -> bool:
        """True while the walk does not move prices: paused by hand, or off altogether."""
        return not self.walking or self._paused.is_set()

    def pause(self) -> None:
        self._paused.set()

    def resume(self) -> None:
        self._paused.clear()

    def set_market_price(self, market: str, price_e8: int) -> None:
        """Set one market's price by hand (the walk continues from it unless paused)."""
        self.set_price(market, price_e8)
        self.prices_e8[market] = price_e8

    def control(self, body: Mapping[str, Any]) -> None:
        """Apply a control request: `{"paused": bool}` and/or `{"symbol": ..., "price": USD}` (set by hand).

        Everything is validated before anything changes, so a bad request changes nothing.

        Raises:
            InvalidFieldError: unknown fields, a non-bool `paused`, `"paused": false` while the walk is off, a
                symbol without a price or the reverse, a malformed price.
            MarketNotFoundError: a market the feed does not move.
        """
        reject_unknown_fields(body, ("paused", "symbol", "price"))
        paused = None if body.get("paused") is None else parse_bool(body["paused"], "paused")
        if paused is False and not self.walking:
            raise InvalidFieldError(
                "paused",
                "the random walk is off (started with --price-feed-interval 0): prices move only when set by"
                " hand; restart with an interval to walk",
            )
        if ("symbol" in body) != ("price" in body):
            raise InvalidFieldError("price" if "symbol" in body else "symbol", "symbol and price go together")
        if "symbol" in body:
            symbol = normalize_symbol(body["symbol"])
            if symbol not in self.prices_e8:
                raise MarketNotFoundError(f"no market {symbol}", symbol=symbol)
            self.set_market_price(symbol, parse_fixed(body["price"], PRICE_DECIMALS, "price"))
        if paused is True:
            self.pause()
        elif paused is False:
            self.resume()

    def state(self) -> dict[str, Any]:
        """What the demo endpoint shows: paused or not, the walk (`on`, `paused` or `off`), the seed, the last
        prices as exact USD text."""
        prices = {market: usd_text(price) for market, price in sorted(self.prices_e8.items())}
        walk = "off" if not self.walking else "paused" if self._paused.is_set() else "on"
        return {"paused": self.paused, "walk": walk, "seed": self.seed, "prices": prices}

    def tick(self) -> dict[str, int]:
        """Move every market one step (nothing while paused) and return the new prices."""
        if self.paused:
            return {}
        moved = {}
        for market, price in sorted(self.prices_e8.items()):
            new = next_price_e8(price, self._rng.randint(-self.max_step_bps, self.max_step_bps))
            self.set_price(market, new)
            self.prices_e8[market] = new
            moved[market] = new
        return moved
