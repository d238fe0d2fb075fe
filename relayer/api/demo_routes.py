"""Demo controls of the embedded chain's price feed: pause, resume, and set a price by hand.

They exist only while `relayer serve` runs the feed on the embedded chain (404 otherwise): on a real node
prices belong to whoever holds the vault's price-keeper role, never to an HTTP caller.
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Request

from relayer.constants import PRICE_DECIMALS
from relayer.errors import InvalidFieldError, MarketNotFoundError, PriceFeedOffError
from relayer.jsonio import loads_object, reject_unknown_fields
from relayer.markets import normalize_symbol
from relayer.price_feed import PriceFeed
from relayer.units import format_fixed, parse_fixed

router = APIRouter(tags=["demo"])


def _feed(request: Request) -> PriceFeed:
    feed: PriceFeed | None = getattr(request.app.state, "price_feed", None)
    if feed is None:
        raise PriceFeedOffError("no demo price feed here: it runs only on `relayer serve`'s embedded chain")
    return feed


def _state(feed: PriceFeed) -> dict[str, Any]:
    prices = {m: format_fixed(p, PRICE_DECIMALS) for m, p in sorted(feed.prices_e8.items())}
    return {"paused": feed.paused, "seed": feed.seed, "prices": prices}


@router.get("/api/demo/pricefeed", summary="The demo price feed: paused or not, seed, last prices")
async def price_feed_state(request: Request) -> dict[str, Any]:
    return _state(_feed(request))


@router.post(
    "/api/demo/pricefeed",
    summary="Pause or resume the demo price walk, or set one market's price",
    openapi_extra={
        "requestBody": {
            "content": {
                "application/json": {"example": {"paused": True, "symbol": "BTCUSDT", "price": "99000"}}
            }
        }
    },
)
async def control_price_feed(request: Request) -> dict[str, Any]:
    feed = _feed(request)
    body = loads_object(await request.body())
    reject_unknown_fields(body, ("paused", "symbol", "price"))
    paused = body.get("paused")
    if paused is not None and not isinstance(paused, bool):
        raise InvalidFieldError("paused", "must be true or false")
    if ("symbol" in body) != ("price" in body):
        raise InvalidFieldError("price" if "symbol" in body else "symbol", "symbol and price go together")
    if "symbol" in body:
        symbol = normalize_symbol(body["symbol"])
        if symbol not in feed.prices_e8:
            raise MarketNotFoundError(f"no market {symbol}", symbol=symbol)
        price_e8 = parse_fixed(body["price"], PRICE_DECIMALS, "price")
        await anyio.to_thread.run_sync(feed.set_market_price, symbol, price_e8)
    if paused is True:
        feed.pause()
    elif paused is False:
        feed.resume()
    return _state(feed)
