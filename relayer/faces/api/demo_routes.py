"""Demo controls of the embedded chain's price feed: pause, resume, and set a price by hand.

They exist whenever `relayer serve` runs on its embedded chain, with the random walk on, paused or off
(`--price-feed-interval 0`: prices then move only when set here); anywhere else they are a 404, since on a
real node prices belong to whoever holds the vault's price-keeper role, never to an HTTP caller.

Moving the feed takes the embedded demo's `read,trade` API key (the one `relayer serve` prints, labelled
`embedded-demo`) and a JSON body (`Content-Type: application/json`): a web page the operator happens to open
can neither send the key nor a JSON body without the browser asking first, so it cannot move prices.
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Request

from relayer.domain.apikeys import ApiKey, Scope
from relayer.errors import InsufficientScopeError, PriceFeedOffError
from relayer.faces.api import schemas
from relayer.faces.api.inputs import KEY_HEADERS, api_key_of, json_object
from relayer.runtime import Runtime
from relayer.services.demo_world import DEMO_TRADE_KEY_LABEL
from relayer.services.price_feed import PriceFeed

router = APIRouter(tags=["demo"])


def _feed(request: Request) -> PriceFeed:
    feed: PriceFeed | None = getattr(request.app.state, "price_feed", None)
    if feed is None:
        raise PriceFeedOffError(
            "no demo price feed here: the controls exist only on `relayer serve`'s embedded chain"
        )
    return feed


async def _demo_key(request: Request) -> ApiKey:
    """The presented key, if it is the embedded demo's `read,trade` key.

    Raises:
        UnauthenticatedError: no key, or not a valid one (401).
        InsufficientScopeError: a valid key, but not the demo's trading key (403).
    """
    runtime: Runtime = request.app.state.runtime
    key = await anyio.to_thread.run_sync(runtime.trading.authenticate, api_key_of(request), Scope.TRADE)
    if key.label != DEMO_TRADE_KEY_LABEL:
        raise InsufficientScopeError(
            "the demo price feed moves only with the embedded demo's read,trade API key (printed by"
            " `relayer serve`)",
            required=DEMO_TRADE_KEY_LABEL,
        )
    return key


@router.get(
    "/api/demo/pricefeed",
    summary="The demo price feed: paused or not, the walk (on, paused, off), seed, last prices",
    responses=schemas.error_responses(PriceFeedOffError),
)
async def price_feed_state(request: Request) -> dict[str, Any]:
    return _feed(request).state()


@router.post(
    "/api/demo/pricefeed",
    summary="Pause or resume the demo price walk, or set one market's price (also with the walk off)",
    responses=schemas.error_responses(PriceFeedOffError, *schemas.API_KEY, *schemas.BODY, *schemas.CHAIN),
    description="Needs the embedded demo's read,trade API key (`Authorization: Bearer`, as `relayer serve`"
    " prints it) and `Content-Type: application/json`.",
    openapi_extra={
        **KEY_HEADERS,
        "requestBody": {
            "content": {
                "application/json": {"example": {"paused": True, "symbol": "BTCUSDT", "price": "99000"}}
            }
        },
    },
)
async def control_price_feed(request: Request) -> dict[str, Any]:
    feed = _feed(request)
    await _demo_key(request)
    body = await json_object(request)
    await anyio.to_thread.run_sync(feed.control, body)  # a price set by hand is a chain transaction
    return feed.state()
