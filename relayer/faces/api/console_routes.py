"""The operator console: a static page (`GET /console`, its script, its style) and its data (`/api/console`).

The page is three files shipped in the package (`relayer/faces/console/`), served as they are: no build step,
nothing from another origin. Every answer here carries a strict Content-Security-Policy (only this origin,
no inline script or style, no framing), `nosniff` and `no-referrer`. The page itself is public; its data is
not: `GET /api/console` takes an API key with the `admin` scope (401 / 403 like every keyed route) and
answers 503 `relay_not_configured` on a server without relayer signers. The snapshot is built by
`relayer.services.console`; this module only translates.
"""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import Response

from relayer.domain.apikeys import Scope
from relayer.faces.api import schemas
from relayer.faces.api.inputs import KEY_HEADERS, api_key_of
from relayer.runtime import Runtime
from relayer.services.console import console_snapshot

router = APIRouter(tags=["console"])

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""Only this origin, no inline script or style, no plugins, no form posts, never inside a frame."""
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}
_ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
}


@cache
def _asset(name: str) -> bytes:
    """A file of the page, read from the package once (on first request, not at import)."""
    return files("relayer.faces").joinpath("console", name).read_bytes()


def _static(name: str) -> Response:
    return Response(_asset(name), media_type=_ASSETS[name], headers=SECURITY_HEADERS)


@router.get("/console", include_in_schema=False)
def console_page() -> Response:
    """The console's page (asks for an admin key, then loads `/api/console` and follows `/api/stream`)."""
    return _static("index.html")


@router.get("/console/console.js", include_in_schema=False)
def console_script() -> Response:
    return _static("console.js")


@router.get("/console/console.css", include_in_schema=False)
def console_style() -> Response:
    return _static("console.css")


@router.get(
    "/api/console",
    responses=schemas.error_responses(*schemas.API_KEY, *schemas.RELAY, *schemas.CHAIN),
    openapi_extra=KEY_HEADERS,
)
async def console_data(request: Request) -> Response:
    """The operator console's snapshot (`admin` scope): signers with balances, nonces and leases, the queue
    by status, the newest 50 relayed transactions with their fills or errors, the keeper's orders, and
    today's spend against the sponsorship budget. `cursor` is the latest notice: follow `GET /api/stream`
    from it (`Last-Event-ID`) to hear what changes next."""
    runtime: Runtime = request.app.state.runtime
    await anyio.to_thread.run_sync(runtime.trading.authenticate, api_key_of(request), Scope.ADMIN)
    return _json(await console_snapshot(runtime.require_relay(), runtime.keeper))


def _json(body: dict[str, Any]) -> Response:
    # The snapshot holds only str, int, bool, None, lists and dicts (big integers are strings).
    data = json.dumps(body, separators=(",", ":"))
    return Response(
        data, media_type="application/json", headers={**SECURITY_HEADERS, "Cache-Control": "no-store"}
    )
