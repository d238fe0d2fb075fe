"""REST face of the webhooks: HTTP to `WebhookService` calls and back, nothing else.

`POST /api/webhooks` answers the subscription with its `secret`, once (it is never shown again, nor logged);
`GET /api/webhooks` lists them (without secrets), `DELETE /api/webhooks/{id}` removes one with its
deliveries, `POST /api/webhooks/{id}/test` sends a signed `webhook.test` now and answers what the receiver
said, `GET /api/webhooks/{id}/deliveries` its latest deliveries. Authorization is the service's
(`WebhookService.authorize`): `trade` for the key's own account, `read` to list, `admin` for global
subscriptions and other accounts'.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response

from relayer.errors import (
    TooManyWebhooksError,
    WebhookNotFoundError,
    WebhookTestBusyError,
    WebhookUrlRefusedError,
)
from relayer.faces.api import schemas
from relayer.faces.api.inputs import KEY_HEADERS, api_key_of, json_object
from relayer.runtime import Runtime
from relayer.services.webhooks import MAX_DELIVERIES_LISTED, WebhookService

router = APIRouter(tags=["webhooks"])


async def webhook_service(request: Request) -> WebhookService:
    """The app's webhooks (`Runtime.require_webhooks`: 503 `relay_not_configured` without signers)."""
    runtime: Runtime = request.app.state.runtime
    return runtime.require_webhooks()


Webhooks = Annotated[WebhookService, Depends(webhook_service)]

_KEYED = (*schemas.API_KEY, *schemas.RELAY)
_FOUND = (*_KEYED, WebhookNotFoundError)


@router.post(
    "/api/webhooks",
    status_code=201,
    summary="Subscribe a receiver URL to the account's notices (or, with admin, to every notice)",
    responses=schemas.error_responses(*_KEYED, *schemas.BODY, WebhookUrlRefusedError, TooManyWebhooksError),
    openapi_extra={
        **KEY_HEADERS,
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "example": {"url": "https://hooks.example.com/relayer", "types": ["position.decreased"]}
                }
            },
        },
    },
)
async def create_webhook(request: Request, service: Webhooks) -> dict[str, Any]:
    """Body `{url, types?, account?, global?}`. The answer holds the Standard Webhooks `secret`
    (`whsec_...`): shown once, store it now."""
    body = await json_object(request)
    hook, secret = await service.create(api_key_of(request), body)
    return {**hook.to_dict(), "secret": secret}


@router.get("/api/webhooks", responses=schemas.error_responses(*_KEYED), openapi_extra=KEY_HEADERS)
async def list_webhooks(request: Request, service: Webhooks) -> dict[str, Any]:
    """The key's account's subscriptions (`read`); with `admin`, every one (global ones included)."""
    hooks = await service.list_for(api_key_of(request))
    return {"webhooks": [hook.to_dict() for hook in hooks]}


@router.delete(
    "/api/webhooks/{webhook_id}",
    status_code=204,
    responses=schemas.error_responses(*_FOUND),
    openapi_extra=KEY_HEADERS,
)
async def delete_webhook(request: Request, service: Webhooks, webhook_id: str) -> Response:
    """Remove a subscription and its deliveries (`trade` for the account's own, `admin` for any)."""
    await service.remove(api_key_of(request), webhook_id)
    return Response(status_code=204)


@router.post(
    "/api/webhooks/{webhook_id}/test",
    responses=schemas.error_responses(*_FOUND, WebhookTestBusyError),
    openapi_extra=KEY_HEADERS,
)
async def test_webhook(request: Request, service: Webhooks, webhook_id: str) -> dict[str, Any]:
    """Send a signed `webhook.test` message now: `{delivered, status, error}` (the receiver's answer). One at
    a time per subscription and per key: 429 `webhook_test_busy` (with `Retry-After`) meanwhile."""
    attempt = await service.test(api_key_of(request), webhook_id)
    return {"webhookId": webhook_id, **attempt.to_dict()}


@router.get(
    "/api/webhooks/{webhook_id}/deliveries",
    responses=schemas.error_responses(*_FOUND),
    openapi_extra=KEY_HEADERS,
)
async def list_deliveries(
    request: Request,
    service: Webhooks,
    webhook_id: str,
    limit: int = Query(default=50, ge=1, le=MAX_DELIVERIES_LISTED),
) -> dict[str, Any]:
    """The subscription's latest deliveries, newest first: state, attempts, last status and error."""
    found = await service.deliveries(api_key_of(request), webhook_id, limit)
    return {"deliveries": [delivery.to_dict() for delivery in found]}
