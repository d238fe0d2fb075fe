"""Demo controls of the embedded chain's price feed: pause, resume, and set a price by hand.

They exist only while `relayer serve` runs the feed on the embedded chain (404 otherwise): on a real node
prices belong to whoever holds the vault's price-keeper role, never to an HTTP caller.
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Request

from relayer.errors import PriceFeedOffError
from relayer.jsonio import loads_object
from relayer.price_feed import PriceFeed

router = APIRouter(tags=["demo"])


def _feed(request: Request) -> PriceFeed:
    feed: PriceFeed | None = getattr(request.app.state, "price_feed", None)
    if feed is None:
        raise PriceFeedOffError("no demo price feed here: it runs only on `relayer serve`'s embedded chain")
    return feed


@router.get("/api/demo/pricefeed", summary="The demo price feed: paused or not, seed, last prices")
async def price_feed_state(request: Request) -> dict[str, Any]:
    return _feed(request).state()


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
    await anyio.to_thread.run_sync(feed.control, body)  # a price set by hand is a chain transaction
    return feed.state()
