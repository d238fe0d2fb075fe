"""REST face of the relayer: translates HTTP to `RelayService` calls and back, nothing else.

Mounted by the app factory: `app.include_router(relay_routes.router)`; each route gets the `RelayService`
from the lifespan's runtime through the `relay_service` dependency (503 `relay_not_configured` without
relayer signers; tests override it). Errors are `RelayerError`s, mapped once by `install_error_handlers`.

Listing records takes an API key with the `read` scope (`records_reader`): a key lists its own account's
records, a key with `admin` every account's. A record by its id stays readable to whoever holds the id.
"""

from __future__ import annotations

from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse

from relayer.constants import MAX_LIST_LIMIT, MAX_LIST_OFFSET
from relayer.domain.apikeys import ApiKey, Scope
from relayer.domain.jsonio import reject_unknown_fields
from relayer.domain.policy import parse_raw_relay
from relayer.domain.typed_data import TYPED_DATA_FIELDS, parse_signed_relay, parse_typed_data_query
from relayer.errors import (
    NothingToChangeError,
    PositionNotFoundError,
    PriceNotSetError,
    TransactionNotFoundError,
)
from relayer.faces.api import schemas
from relayer.faces.api.inputs import KEY_HEADERS, api_key_of, json_object
from relayer.runtime import Runtime
from relayer.services.relay.service import RelayService
from relayer.services.relay.values import Submission

router = APIRouter(tags=["relay"])


async def relay_service(request: Request) -> RelayService:
    """The app's relay (`Runtime.require_relay`: 503 `relay_not_configured` without relayer signers)."""
    runtime: Runtime = request.app.state.runtime
    return runtime.require_relay()


Relay = Annotated[RelayService, Depends(relay_service)]


async def records_reader(request: Request) -> ApiKey:
    """The API key listing records, authenticated by the trading service's key store (`TradingService.
    authenticate`: 401 without a valid key, 403 without the `read` scope)."""
    runtime: Runtime = request.app.state.runtime
    return await anyio.to_thread.run_sync(runtime.trading.authenticate, api_key_of(request), Scope.READ)


Reader = Annotated[ApiKey, Depends(records_reader)]


def _answer(submission: Submission) -> JSONResponse:
    # 202: accepted and tracked (poll GET /api/transactions/{id}); 200: the same key and body again.
    return JSONResponse(submission.record.to_dict(), status_code=202 if submission.created else 200)


@router.post(
    "/api/relay/signed",
    status_code=202,
    responses={**schemas.answers(200), **schemas.error_responses(*schemas.SIGNED_RELAY)},
)
async def relay_signed(
    request: Request,
    service: Relay,
    idempotency_key: str | None = Header(default=None, alias="Idempotency-Key"),
) -> JSONResponse:
    """Relay an EIP-712 request signed by the position's owner (kinds `close`, `trigger`, `exit_plan`,
    `cancel_order`) or by the `owner` it names (`operator_rights`, `emergency_exit`); the relayer pays gas.

    Body: `{"kind": <kind>, "request": <typedData.message as signed>, "signature": "0x..."}`.
    """
    relay = parse_signed_relay(await json_object(request))
    return _answer(await service.submit_signed(relay, idempotency_key=idempotency_key))


@router.post(
    "/api/relay/raw",
    status_code=202,
    responses={**schemas.answers(200), **schemas.error_responses(*schemas.RAW_RELAY)},
)
async def relay_raw(
    request: Request,
    service: Relay,
    idempotency_key: str | None = Header(default=None, alias="Idempotency-Key"),
) -> JSONResponse:
    """Broadcast and track a transaction the user signed. Body: `{"transaction": "0x<signed bytes>"}`."""
    tx = parse_raw_relay(await json_object(request))
    return _answer(await service.submit_raw(tx, idempotency_key=idempotency_key))


_TYPED_DATA_ERRORS: schemas.Errors = (
    PositionNotFoundError,
    PriceNotSetError,
    NothingToChangeError,
    *schemas.SIGNED_REQUEST_VALUES,
    *schemas.RELAY,
    *schemas.CHAIN,
)


@router.get("/api/relay/typed-data", responses=schemas.error_responses(*_TYPED_DATA_ERRORS))
async def relay_typed_data(
    service: Relay,
    kind: str = Query(
        description="close, trigger, exit_plan, cancel_order, operator_rights or emergency_exit"
    ),
    position_id: str | None = Query(
        default=None, alias="positionId", description="close, trigger, exit_plan, cancel_order"
    ),
    size_delta: str | None = Query(default=None, alias="sizeDelta", description="base units; omit for all"),
    allowed_price: str | None = Query(default=None, alias="allowedPrice", description="USD; omit for none"),
    is_take_profit: str | None = Query(default=None, alias="isTakeProfit"),
    price: str | None = Query(default=None, description="USD; 0 cancels the order"),
    close_bps: str | None = Query(default=None, alias="closeBps"),
    orders: str | None = Query(
        default=None,
        description='exit_plan: JSON list of {"orderId": 0..5, "price": USD, "shareBps": 1..10000,'
        ' "trailBps": 0..9999 (stops)}; or POST the same fields as a JSON body',
    ),
    order_id: str | None = Query(default=None, alias="orderId", description="cancel_order: 0..5"),
    owner: str | None = Query(default=None, description="operator_rights, emergency_exit: the signer"),
    operator: str | None = Query(default=None, description="operator_rights: the operator's address"),
    rights: str | None = Query(
        default=None,
        description="operator_rights: bit sum 0..15, or names: close, set_take_profit, tighten_stop,"
        " loosen_or_cancel_stop (comma-separated; none revokes)",
    ),
    expires_at: str | None = Query(
        default=None, alias="expiresAt", description="operator_rights: unix seconds, 0 = never"
    ),
    market: str | None = Query(default=None, description="emergency_exit: a symbol; omit for every market"),
    deadline: str | None = Query(default=None, description="unix seconds; default latest block + TTL"),
    nonce: str | None = Query(default=None, description="default: the signer's next vault nonce"),
) -> dict[str, Any]:
    """The exact EIP-712 payload to sign (`eth_account.Account.sign_typed_data(key, full_message=...)`);
    a parameter another kind takes is refused (422 `invalid_field`)."""
    params = {
        "kind": kind,
        "positionId": position_id,
        "sizeDelta": size_delta,
        "allowedPrice": allowed_price,
        "isTakeProfit": is_take_profit,
        "price": price,
        "closeBps": close_bps,
        "orders": orders,
        "orderId": order_id,
        "owner": owner,
        "operator": operator,
        "rights": rights,
        "expiresAt": expires_at,
        "market": market,
        "deadline": deadline,
        "nonce": nonce,
    }
    return await service.typed_data_for(parse_typed_data_query(params))


@router.post("/api/relay/typed-data", responses=schemas.error_responses(*schemas.BODY, *_TYPED_DATA_ERRORS))
async def relay_typed_data_body(request: Request, service: Relay) -> dict[str, Any]:
    """`GET /api/relay/typed-data` with its parameters as a JSON object (numbers exact; `orders` a list):
    the convenient form for an exit plan. Answers 200 with the payload; nothing is stored."""
    body = await json_object(request)
    reject_unknown_fields(body, TYPED_DATA_FIELDS)
    return await service.typed_data_for(parse_typed_data_query(body))


@router.get(
    "/api/transactions/{record_id}",
    responses=schemas.error_responses(TransactionNotFoundError, *schemas.RELAY),
)
def get_transaction(service: Relay, record_id: str) -> dict[str, Any]:
    """A relayed transaction: status, every hash, and once mined its block, gas, fee and decoded events."""
    return service.get(record_id).to_dict()


@router.get(
    "/api/transactions",
    responses=schemas.error_responses(*schemas.API_KEY, *schemas.RELAY),
    openapi_extra=KEY_HEADERS,
)
def list_transactions(
    reader: Reader,
    service: Relay,
    status: str | None = None,
    limit: int = Query(default=100, ge=1, le=MAX_LIST_LIMIT),
    offset: int = Query(default=0, ge=0, le=MAX_LIST_OFFSET),
) -> dict[str, Any]:
    """Relayed transactions, newest first, optionally of one status: the API key's account's, or with the
    `admin` scope every account's (`read` scope needed)."""
    records = service.list_for(reader, status, limit=limit, offset=offset)
    return {"transactions": [record.to_dict() for record in records]}
