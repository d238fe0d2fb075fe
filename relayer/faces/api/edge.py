"""The HTTP server's own bounds (`Settings.http`, `RELAYER_HTTP_*`): what one slow or greedy client may hold.

`server_config(app, settings)` is the one uvicorn configuration (`relayer serve` and the tests run it):

- **header-read deadline** (`header_timeout_s`): a connection whose request headers have not all arrived this
  long after it opened, or after its previous answer, is closed (`BoundedH11Protocol`); with part of a request
  received, a 408 `request_timeout` goes first. A slowloris client holds a connection this long at most.
- **idle keep-alive** (`keep_alive_s`, whole seconds, rounded up): uvicorn's own timer.
- **connection cap** (`max_connections`): a connection opened while that many are open is answered 503
  `too_many_connections` (with `Retry-After`) as soon as its request's headers arrive, and closed; one WARNING
  line when the server reaches the cap, one INFO line when it is below it again.

The body-read deadline and a client leaving mid-body are the app's (`relayer.faces.api.middleware`). Log
lines go through the root logger (`relayer.faces.logs`, with the request id): uvicorn gets no logging
configuration of its own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from typing import Any, ClassVar

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from relayer.config import HttpSettings, Settings
from relayer.errors import RelayerError, RequestTimeoutError, TooManyConnectionsError

log = logging.getLogger("relayer.api.edge")

RETRY_AFTER_FULL_S = 1
"""`Retry-After` (seconds) of the 503 answered at the connection cap."""


def server_config(app: Any, settings: Settings) -> uvicorn.Config:
    """uvicorn's configuration for `app` on `settings`' address, with the edge bounds of `settings.http`.

    One worker: the embedded chain lives in this process, and the JSON-RPC gateway's caches are per process.
    """
    http = settings.http
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=bounded_protocol(http),
        ws="none",  # no WebSocket routes: an upgrade is refused, never handed to another protocol
        timeout_keep_alive=math.ceil(http.keep_alive_s),
        log_config=None,
        log_level=settings.log_level,
        access_log=settings.access_log,
    )


def bounded_protocol(http: HttpSettings) -> type[BoundedH11Protocol]:
    """The HTTP/1.1 protocol class holding `http`'s header deadline and connection cap (one class per
    server: its cap state is shared by that server's connections only)."""

    class Bounded(BoundedH11Protocol):
        header_timeout_s = http.header_timeout_s
        max_connections = http.max_connections
        refusing = False

    return Bounded


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header-read deadline and a connection cap (see the module)."""

    header_timeout_s: ClassVar[float]
    max_connections: ClassVar[int]
    refusing: ClassVar[bool]
    """Whether the last connection opened was refused (for one log line per change, not per connection)."""

    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._admit()
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def shutdown(self) -> None:
        """At server shutdown, an answer still streaming (`GET /api/stream`) is ended by closing its
        connection (the app hears the client leave); uvicorn would otherwise wait for it forever."""
        cycle = self.cycle
        if cycle is not None and cycle.response_started and not cycle.response_complete:
            self.transport.close()
            return
        super().shutdown()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_header_timer()  # the next request's headers get the same deadline

    def _admit(self) -> None:
        """Above the cap, this connection's request is answered 503 instead of reaching the app."""
        cls = type(self)
        full = len(self.connections) > cls.max_connections
        if full:
            self.app = _answer_with(
                TooManyConnectionsError(
                    f"the server holds its cap of {cls.max_connections} open connections: retry shortly",
                    maxConnections=cls.max_connections,
                ),
                retry_after_s=RETRY_AFTER_FULL_S,
            )
        if full != cls.refusing:
            cls.refusing = full
            if full:
                log.warning(
                    "connection cap of %d reached: answering 503 too_many_connections", cls.max_connections
                )
            else:
                log.info("below the connection cap of %d again", cls.max_connections)

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_deadline)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_deadline(self) -> None:
        """Close the connection if it still waits for a request's headers (a 408 first if part arrived)."""
        self._header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return  # a request is under way: its body deadline (the middleware's) and answer rule from here
        received, _ = self.conn.trailing_data
        if received:
            error = RequestTimeoutError(
                f"the request headers did not arrive within {self.header_timeout_s} s",
                timeoutSeconds=self.header_timeout_s,
            )
            self.transport.write(_raw_answer(error))
        self.transport.close()


def _answer_with(error: RelayerError, *, retry_after_s: int) -> Any:
    """An ASGI app answering every request with `error` (and `Retry-After`), closing the connection."""
    body = json.dumps(error.envelope()).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(retry_after_s).encode()),
        (b"connection", b"close"),
    ]

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": error.http_status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def _raw_answer(error: RelayerError) -> bytes:
    """`error` as a complete HTTP/1.1 answer, for a connection with no request to answer through h11."""
    body = json.dumps(error.envelope()).encode()
    reason = {408: "Request Timeout"}.get(error.http_status, "Error")
    head = (
        f"HTTP/1.1 {error.http_status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body
