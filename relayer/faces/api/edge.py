"""The HTTP server's own bounds (`Settings.http`, `RELAYER_HTTP_*`): what one slow or greedy client may hold.

`server_config(app, settings)` is the one uvicorn configuration (`relayer serve` and the tests run it):

- **header-read deadline** (`header_timeout_s`): a connection whose request headers have not all arrived this
  long after it opened, or after its previous answer, is closed (`BoundedHttpProtocol`); with part of a
  request received, a 408 `request_timeout` goes first. A slowloris client holds a connection this long at
  most.
- **head size** (`MAX_HEAD_BYTES`, 16 KiB: h11's own limit, which this server had before it parsed with
  httptools, which has none): a request line and headers above it are answered 431 `http_error` and the
  connection closed, before the parser holds more of them.
- **idle keep-alive** (`keep_alive_s`, whole seconds, rounded up): uvicorn's own timer.
- **connection cap** (`max_connections`): a connection opened while that many are open is answered 503
  `too_many_connections` (with `Retry-After`) as soon as its request's headers arrive, and closed; one WARNING
  line when the server reaches the cap, one INFO line when it is below it again.

Requests are parsed by httptools (llhttp, in C; uvicorn's `HttpToolsProtocol`): h11, in pure Python, took
about a tenth of the server's CPU per `POST /api/closeposition` (`scripts/bench.py build`). An answer leaves
in one `send` (`CoalescingTransport`): uvicorn writes the head and the body of a response separately, two
system calls and two wake-ups of the client for a few hundred bytes.

`frozen_after_startup` (a service hook of `create_app`, which `relayer serve` passes) moves everything alive
once the app has started (modules, the app, the runtime: ~170k objects) out of the garbage collector's
sight: a full collection no longer walks them (on the dev box one such pass took 324 ms in the middle of a
`scripts/bench.py build` round, stalling every request in flight), and young ones are collected as before.

The body-read deadline and a client leaving mid-body are the app's (`relayer.faces.api.middleware`). Log
lines go through the root logger (`relayer.faces.logs`, with the request id): uvicorn gets no logging
configuration of its own.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from relayer.config import HttpSettings, Settings
from relayer.errors import HttpRefusedError, RelayerError, RequestTimeoutError, TooManyConnectionsError

log = logging.getLogger("relayer.api.edge")

RETRY_AFTER_FULL_S = 1
"""`Retry-After` (seconds) of the 503 answered at the connection cap."""

MAX_HEAD_BYTES = 16 * 1024
"""Largest request head (request line and headers) accepted: 16 KiB, h11's limit (the parser before)."""

_HEAD_END = b"\r\n\r\n"


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


@asynccontextmanager
async def frozen_after_startup(app: Any) -> AsyncIterator[None]:
    """`gc.freeze()` once the app's services are up (see the module); unfrozen when it stops."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def bounded_protocol(http: HttpSettings) -> type[BoundedHttpProtocol]:
    """The HTTP/1.1 protocol class holding `http`'s header deadline and connection cap (one class per
    server: its cap state is shared by that server's connections only)."""

    class Bounded(BoundedHttpProtocol):
        header_timeout_s = http.header_timeout_s
        max_connections = http.max_connections
        refusing = False

    return Bounded


class BoundedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header-read deadline, a head size limit and a connection cap (see
    the module).

    A head is counted from the first byte that arrives while the parser waits for one (a new connection, or
    the end of the previous request's body) to its blank line: a chunk that also holds the body counts only
    up to it. A pipelined request's head that starts inside the chunk ending the previous request is counted
    from the next chunk on, so a head is held to `MAX_HEAD_BYTES` plus one read at most.
    """

    header_timeout_s: ClassVar[float]
    max_connections: ClassVar[int]
    refusing: ClassVar[bool]
    """Whether the last connection opened was refused (for one log line per change, not per connection)."""

    _header_timer: asyncio.TimerHandle | None = None
    _awaiting_head = True
    """The parser waits for a request's head (the connection is new, or the last request's body ended)."""
    _head_bytes = 0
    """Bytes received while awaiting the current head (a chunk holding its end: counted to there)."""
    _head_tail = b""
    """The last bytes of the head so far, where its blank line may have begun."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))
        self._admit()
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return  # refused: nothing more is parsed
        if self._awaiting_head and not self._head_within_limit(data):
            self._refuse_head()
            return
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._awaiting_head, self._head_bytes, self._head_tail = False, 0, b""
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._awaiting_head = True
        super().on_message_complete()

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

    def _head_within_limit(self, data: bytes) -> bool:
        """Count `data` into the head awaited; False once the head is above `MAX_HEAD_BYTES`."""
        before = self._head_bytes
        self._head_bytes += len(data)
        if self._head_bytes <= MAX_HEAD_BYTES:
            self._head_tail = (self._head_tail + data)[-3:]
            return True
        seen = self._head_tail + data  # the head may end in this chunk, its body after it
        end = seen.find(_HEAD_END)
        return end != -1 and before - len(self._head_tail) + end + len(_HEAD_END) <= MAX_HEAD_BYTES

    def _refuse_head(self) -> None:
        """431 and close: the request's head is above the limit."""
        log.info("request head above %d bytes: answered 431", MAX_HEAD_BYTES)
        error = HttpRefusedError(
            f"the request line and headers are above {MAX_HEAD_BYTES} bytes", maxBytes=MAX_HEAD_BYTES
        )
        self.transport.write(_raw_answer(error, status=431))
        self.transport.close()

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
        cycle = self.cycle
        under_way = (cycle is not None and not cycle.response_complete) or bool(self.pipeline)
        if self.transport.is_closing() or under_way:
            return  # a request is under way: its body deadline (the middleware's) and answer rule from here
        if self._head_bytes:
            error = RequestTimeoutError(
                f"the request headers did not arrive within {self.header_timeout_s} s",
                timeoutSeconds=self.header_timeout_s,
            )
            self.transport.write(_raw_answer(error))
        self.transport.close()


class CoalescingTransport(asyncio.Transport):
    """The connection's transport, with the writes made in one turn of the event loop sent as one: they are
    held until the loop's next round (microseconds; the writes of one answer all happen before it), then
    written together. `close` and `write_eof` send what is held first; `abort` drops it."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._held:
            self._loop.call_soon(self._flush)
        self._held.append(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def _flush(self) -> None:
        if self._held:
            data = b"".join(self._held) if len(self._held) > 1 else self._held[0]
            self._held.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._held.clear()
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(len(data) for data in self._held)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)


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


def _raw_answer(error: RelayerError, status: int | None = None) -> bytes:
    """`error` as a complete HTTP/1.1 answer (with `status` instead of its own), for a connection with no
    request to answer through the app."""
    body = json.dumps(error.envelope()).encode()
    code = status or error.http_status
    reason = {408: "Request Timeout", 431: "Request Header Fields Too Large"}.get(code, "Error")
    head = (
        f"HTTP/1.1 {code} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body
