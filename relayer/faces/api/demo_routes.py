"""Demo controls of the embedded chain's price feed: pause, resume, and set a price by hand.

They exist whenever `relayer serve` runs on its embedded chain, with the random walk on, paused or off
(`--price-feed-interval 0`: prices then move only when set here); anywhere else they are a 404, since on a
real node prices belong to whoever holds the vault's price-keeper role, never to an HTTP caller.
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Request

from relayer.errors import PriceFeedOffError
from relayer.faces.api.inputs import json_object
from relayer.services.price_feed import PriceFeed

router = APIRouter(tags=["demo"])


def _feed(request: Request) -> PriceFeed:
    feed: PriceFeed | None = getattr(request.app.state, "price_feed", None)
    if feed is None:
        raise PriceFeedOffError(
            "no demo price feed here: the controls exist only on `relayer serve`'s embedded chain"
        )
    return feed


@router.get(
    "/api/demo/pricefeed",
    summary="The demo price feed: paused or not, the walk (on, paused, off), seed, last prices",
)
async def price_feed_state(request: Request) -> dict[str, Any]:
    return _feed(request).state()


@router.post(
    "/api/demo/pricefeed",
    summary="Pause or resume the demo price walk, or set one market's price (also with the walk off)",
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
    body = await json_object(request)
    await anyio.to_thread.run_sync(feed.control, body)  # a price set by hand is a chain transaction
    return feed.state()
