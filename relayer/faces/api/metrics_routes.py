"""The Prometheus face: `GET /metrics` on the API port, the request counter middleware, and the optional
metrics port of its own.

`GET /metrics` answers the Prometheus text format (`CONTENT_TYPE_LATEST`) to `Authorization: Bearer
<RELAYER_METRICS_TOKEN>` (compared in constant time) or to an API key with the `admin` scope; 401 / 403 with
the usual JSON error otherwise. With `RELAYER_METRICS_ENABLED=false` the route is not mounted (404
`not_found`) and nothing is collected. With `RELAYER_METRICS_PORT` the same exposition is also served,
without authentication, on `RELAYER_METRICS_HOST` (127.0.0.1 by default: bind it to a private interface), by
a small uvicorn server on the app's event loop, started and stopped with the app's lifespan.

A scrape re-reads the signers' balances (at most every `BALANCE_MAX_AGE_S`), so the balance gauges and the
low-balance alert are current even when the relay is idle.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Annotated

import anyio.to_thread
import uvicorn
from fastapi import APIRouter, Depends, Request, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from relayer.config import Settings
from relayer.domain.apikeys import Scope as KeyScope
from relayer.errors import (
    ApiKeyExpiredError,
    ConfigurationError,
    InsufficientScopeError,
    RouteNotFoundError,
    UnauthenticatedError,
)
from relayer.faces.api import schemas
from relayer.faces.api.edge import bounded_protocol
from relayer.faces.api.inputs import KEY_HEADERS, api_key_of
from relayer.runtime import Runtime
from relayer.services.metrics import CONTENT_TYPE_LATEST, Metrics

log = logging.getLogger("relayer.metrics")

METRICS_PORT_MAX_CONNECTIONS = 16
"""Connections the unauthenticated metrics port holds at once (a scraper needs one)."""

router = APIRouter(tags=["metrics"])


def _bearer(request: Request) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return (value.strip() or None) if scheme.lower() == "bearer" else None


async def metrics_reader(request: Request) -> None:
    """Let through the metrics token (`Authorization: Bearer`, constant-time) or an `admin` API key.

    Raises:
        UnauthenticatedError, ApiKeyExpiredError: no valid key and not the token (401).
        InsufficientScopeError: a valid key without the `admin` scope (403).
    """
    settings: Settings = request.app.state.settings
    token = settings.metrics.token
    presented = _bearer(request)
    if (
        token is not None
        and presented is not None
        and hmac.compare_digest(presented.encode(), token.get_secret_value().encode())
    ):
        return
    runtime: Runtime = request.app.state.runtime
    await anyio.to_thread.run_sync(runtime.trading.authenticate, api_key_of(request), KeyScope.ADMIN)


async def exposition(runtime: Runtime) -> bytes:
    """The runtime's metrics in the Prometheus text format, the signers' balances refreshed when due."""
    relay = runtime.relay
    return await runtime.metrics.scrape(None if relay is None else relay.report_balances)


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "description": "The metrics, in the Prometheus text exposition format",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        **schemas.error_responses(UnauthenticatedError, ApiKeyExpiredError, InsufficientScopeError),
    },
    openapi_extra=KEY_HEADERS,
)
async def metrics(request: Request, _: Annotated[None, Depends(metrics_reader)]) -> Response:
    """Prometheus metrics: `Authorization: Bearer <RELAYER_METRICS_TOKEN>`, or an API key with `admin`."""
    return Response(await exposition(request.app.state.runtime), media_type=CONTENT_TYPE_LATEST)


class RequestMetrics:
    """Count and time every HTTP request by its route's path template (`/api/transactions/{record_id}`,
    never the raw path; a mounted app by its mount path plus its own route's; `unmatched` when no route
    matched), method and status. Pure ASGI: streaming answers pass through untouched."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.metrics.enabled:
            await self.app(scope, receive, send)
            return
        clock = anyio.current_time
        start = clock()
        base = scope.get("root_path", "")
        status = 500  # an exception that escapes the app: the server answers 500
        answered: float | None = None

        async def sending(message: Message) -> None:
            nonlocal status, answered
            if message["type"] == "http.response.start":
                status = int(message["status"])
                answered = clock()
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            self.metrics.http_request(
                _template(scope, base), scope["method"], status, (answered or clock()) - start
            )


def _template(scope: Scope, base: str) -> str | None:
    route = scope.get("route")
    path = getattr(route, "path", None)
    if not isinstance(path, str):
        return None
    mounted = str(scope.get("root_path", ""))[len(base) :]  # a mount's prefix (the route is its app's)
    return mounted + path if mounted and not path.startswith(mounted) else path


def metrics_port_app(runtime: Runtime) -> ASGIApp:
    """The metrics port's whole application: `GET /metrics` without authentication, 404 JSON otherwise."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/metrics" and scope["method"] in {"GET", "HEAD"}:
            status, body, content_type = 200, await exposition(runtime), CONTENT_TYPE_LATEST
        else:
            error = RouteNotFoundError("this port serves GET /metrics only")
            status, content_type = error.http_status, "application/json"
            body = json.dumps(error.envelope()).encode()
        headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})

    return app


class _PortServer(uvicorn.Server):
    """uvicorn without its signal handlers: the API server (or the embedding program) owns the process's
    signals; this one stops when the lifespan sets `should_exit`."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@asynccontextmanager
async def metrics_port(settings: Settings, runtime: Runtime) -> AsyncIterator[int | None]:
    """Serve the metrics on `settings.metrics.port` (0: any free port) while the block runs; yields the
    port bound, or None when no port is configured (or metrics are off).

    Raises:
        ConfigurationError: the address cannot be bound (in use, or no such interface).
    """
    config = settings.metrics
    if config.port is None or not runtime.metrics.enabled:
        yield None
        return
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            config.host, config.port, type=socket.SOCK_STREAM
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        raise ConfigurationError(
            f"the metrics port {config.host}:{config.port} cannot be bound: {exc.strerror or exc}"
        ) from None
    port = int(sock.getsockname()[1])
    uvicorn_config = uvicorn.Config(
        metrics_port_app(runtime),
        http=bounded_protocol(
            settings.http.model_copy(update={"max_connections": METRICS_PORT_MAX_CONNECTIONS})
        ),
        ws="none",
        lifespan="off",
        log_config=None,
        access_log=False,
        timeout_keep_alive=5,
    )
    server = _PortServer(uvicorn_config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
                raise ConfigurationError(f"the metrics port {config.host}:{port} did not start")
            await asyncio.sleep(0.01)
        log.info("metrics served on http://%s:%d/metrics (no authentication)", config.host, port)
        yield port
    finally:
        server.should_exit = True
        await task
        sock.close()
