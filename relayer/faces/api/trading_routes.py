"""REST routes for trading by API key: each reads the key and the body, makes one `TradingService` call.

The key arrives as `Authorization: Bearer <key>` or `X-API-Key: <key>`; the rules (401/403, scopes,
ownership) live in `relayer.domain.apikeys.require`, called by the service.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from relayer.errors import (
    AmbiguousPositionError,
    InvalidMarketError,
    NotAuthorizedError,
    PositionNotFoundError,
    TransactionNotFoundError,
)
from relayer.faces.api import schemas
from relayer.faces.api.inputs import KEY_HEADERS, api_key_of, json_object
from relayer.runtime import Runtime
from relayer.services.trading import TradeAction, TradingService
from relayer.services.trading_answers import TradeOutcome

router = APIRouter(tags=["trading"])

_EXAMPLE_ID = "0x" + "ab" * 32

_KEY_HEADERS = {
    "parameters": [
        *KEY_HEADERS["parameters"],
        {"name": "Idempotency-Key", "in": "header", "schema": {"type": "string"}},
    ]
}

_TRADE_RESPONSES = {**schemas.answers(202), **schemas.error_responses(*schemas.TRADE)}
"""A trading action: 200 with the fill, 202 while its transaction is pending, or one of its errors."""
_ORDER_RESPONSES = {**schemas.answers(202), **schemas.error_responses(*schemas.TRADE_ORDERS)}
"""An exit-order change: 200 with the plan after it, 202 while pending, or one of its errors."""


def _service(request: Request) -> TradingService:
    """The app's trading service: always there; the actions that need the relay say so themselves."""
    runtime: Runtime = request.app.state.runtime
    return runtime.trading


def _answer(outcome: TradeOutcome) -> JSONResponse:
    return JSONResponse(status_code=202 if outcome.pending else 200, content=outcome.body)


async def _act(request: Request, action: Callable[[TradingService], TradeAction]) -> JSONResponse:
    """A trading action's route: the JSON body, the key and the `Idempotency-Key` to the service's action."""
    body = await json_object(request)
    idempotency_key = request.headers.get("idempotency-key")
    return _answer(
        await action(_service(request))(api_key_of(request), body, idempotency_key=idempotency_key)
    )


def _body_example(example: dict[str, Any]) -> dict[str, Any]:
    return {
        **_KEY_HEADERS,
        "requestBody": {"required": True, "content": {"application/json": {"example": example}}},
    }


@router.post(
    "/api/partialclose",
    summary="Close a percentage of the account's position in a market",
    responses=_TRADE_RESPONSES,
    openapi_extra=_body_example({"symbol": "BTCUSDT", "exit_pct": 33}),
)
async def partial_close(request: Request) -> JSONResponse:
    return await _act(request, lambda t: t.partial_close)


@router.post(
    "/api/trade/close",
    summary="Close a position fully or by size",
    responses=_TRADE_RESPONSES,
    openapi_extra=_body_example({"positionId": _EXAMPLE_ID, "sizeDelta": "0.1", "allowedPrice": "95e3"}),
)
async def close_position(request: Request) -> JSONResponse:
    return await _act(request, lambda t: t.close_position)


def _trigger_route(is_take_profit: bool) -> Callable[[Request], Awaitable[JSONResponse]]:
    async def set_trigger(request: Request) -> JSONResponse:
        return await _act(request, lambda t: partial(t.set_trigger, is_take_profit=is_take_profit))

    return set_trigger


for _path, _order, _example_price, _summary in (
    (
        "/api/trade/takeprofit",
        "take-profit",
        "99000",
        "Set, replace or cancel (price 0) the primary take-profit (close_pct), or add a tier (exit_pct)",
    ),
    (
        "/api/trade/stoploss",
        "stop-loss",
        "93000",
        "Set, replace or tighten the primary stop, fixed or trailing (trail_bps); cancelling it is refused",
    ),
):
    router.add_api_route(
        _path,
        _trigger_route(_order == "take-profit"),
        methods=["POST"],
        summary=_summary,
        responses=_ORDER_RESPONSES,
        openapi_extra=_body_example({"positionId": _EXAMPLE_ID, "price": _example_price, "close_pct": 50}),
    )


@router.post(
    "/api/trade/breakeven",
    summary="Move the stop-loss to the entry price for the full size",
    responses=_ORDER_RESPONSES,
    openapi_extra=_body_example({"positionId": _EXAMPLE_ID}),
)
async def move_to_breakeven(request: Request) -> JSONResponse:
    return await _act(request, lambda t: t.move_to_breakeven)


@router.post(
    "/api/trade/exitplan",
    summary="Replace the position's whole exit plan: take-profit tiers, a stop and / or a trailing stop",
    responses=_ORDER_RESPONSES,
    openapi_extra=_body_example(
        {
            "symbol": "BTCUSDT",
            "take_profits": [
                {"price": "97000", "exit_pct": 25},
                {"price": "98000", "exit_pct": 25},
                {"price": "99000", "exit_pct": 25},
            ],
            "trailing_stop": {"trail_bps": 200},
        }
    ),
)
async def set_exit_plan(request: Request) -> JSONResponse:
    return await _act(request, lambda t: t.set_exit_plan)


@router.post(
    "/api/trade/orders/cancel",
    summary="Cancel one exit order (a take-profit; cancelling a stop is refused: 403)",
    responses=_ORDER_RESPONSES,
    openapi_extra=_body_example({"positionId": _EXAMPLE_ID, "orderId": 1}),
)
async def cancel_order(request: Request) -> JSONResponse:
    return await _act(request, lambda t: t.cancel_order)


@router.post(
    "/api/trade/emergencyexit",
    summary="Close every open position of the account (or one market's) in one transaction",
    responses=_TRADE_RESPONSES,
    openapi_extra=_body_example({"symbol": "BTCUSDT"}),
)
async def emergency_exit(request: Request) -> JSONResponse:
    return await _act(request, lambda t: t.emergency_exit)


@router.get(
    "/api/trade/orders",
    summary="A position's exit plan: every pending order with its share, trail and expected size",
    responses=schemas.error_responses(
        *schemas.API_KEY,
        NotAuthorizedError,
        PositionNotFoundError,
        AmbiguousPositionError,
        InvalidMarketError,
        *schemas.CHAIN,
    ),
    openapi_extra=KEY_HEADERS,
)
async def get_orders(
    request: Request,
    position_id: str | None = Query(default=None, alias="positionId", description="0x + 64 hex digits"),
    symbol: str | None = Query(default=None, description="or the position in this market, e.g. BTCUSDT"),
    side: str | None = Query(default=None, description="long or short, with symbol"),
) -> dict[str, Any]:
    given = {"positionId": position_id, "symbol": symbol, "side": side}
    query = {name: value for name, value in given.items() if value is not None}
    return await _service(request).get_orders(api_key_of(request), query)


@router.get(
    "/api/trade/positions",
    summary="The account's open positions",
    responses=schemas.error_responses(*schemas.API_KEY, InvalidMarketError, *schemas.CHAIN),
    openapi_extra=KEY_HEADERS,
)
async def get_positions(request: Request, symbol: str | None = None) -> dict[str, Any]:
    return await _service(request).get_positions(api_key_of(request), symbol)


@router.get(
    "/api/trade/transactions/{transaction_id}",
    summary="A relayed transaction of the account",
    responses=schemas.error_responses(
        *schemas.API_KEY, TransactionNotFoundError, *schemas.RELAY, *schemas.CHAIN
    ),
    openapi_extra=KEY_HEADERS,
)
async def get_transaction(request: Request, transaction_id: str) -> dict[str, Any]:
    return await _service(request).get_transaction(api_key_of(request), transaction_id)
