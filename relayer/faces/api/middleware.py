"""Request-level guards: a body size limit, a body-read deadline, a client leaving mid-body answered as a
client error, and a request id on every answer and log line (`RequestGuard`); strict JSON bodies for a mounted
app that parses its own (`StrictJsonBody`, around the MCP server).

Pure ASGI (no `BaseHTTPMiddleware`), so streaming answers (the MCP mount) pass through untouched. The bounds
below the request (header-read deadline, idle keep-alive, connection cap) are the server's: see
`relayer.faces.api.edge`.
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections.abc import Sequence

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from relayer.errors import (
    BodyTooLargeError,
    ClientDisconnectedError,
    MethodNotAllowedError,
    RelayerError,
    RequestTimeoutError,
)
from relayer.faces.logs import request_id
from relayer.faces.mcp import refusal_of

MAX_BODY_BYTES = 64 * 1024
"""Largest request body accepted (64 KiB): every request here is a few hundred bytes of JSON."""

DEFAULT_BODY_TIMEOUT_S = 15.0
"""Seconds a request body may take to arrive after its headers (`RELAYER_HTTP_BODY_TIMEOUT_S`'s default)."""

REQUEST_ID_HEADER = "x-request-id"
_REQUEST_ID_KEY = REQUEST_ID_HEADER.encode()
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_CLOSE = (b"connection", b"close")

__all__ = ["MAX_BODY_BYTES", "RequestGuard", "StrictJsonBody", "request_id"]

log = logging.getLogger("relayer.api.access")


class RequestGuard:
    """Tag each HTTP request with an id (the client's `X-Request-ID` if sane, else a new one; every log line
    written while it runs carries it, see `relayer.faces.logs`), and bound its body:

    - over `max_body_bytes`: 413 `body_too_large`, before the app reads it (declared) or while it does;
    - not all there `body_timeout_s` after the headers: 408 `request_timeout`;
    - the client hangs up before it is all there: 400 `client_disconnected` (nothing was done; one INFO line,
      no traceback).

    The last three are raised from the app's `receive` as `RelayerError`s, so the app's error handlers answer
    them like any other. An answer given while a declared body is still unread closes the connection: the
    rest of that body must not be read as the next request, nor hold the connection open.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int = MAX_BODY_BYTES,
        body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given, declared, chunked = "", "", False
        for key, value in scope["headers"]:  # ASGI header names are lower case; only these three are read
            if key == _REQUEST_ID_KEY:
                given = value.decode("latin-1")
            elif key == b"content-length":
                declared = value.decode("latin-1")
            elif key == b"transfer-encoding":
                chunked = True
        rid = given if _CLIENT_ID.match(given) else _new_request_id()
        token = request_id.set(rid)
        try:
            expected = (declared.isdigit() and int(declared) > 0) or chunked
            body = _BoundedBody(receive, scope, self.max_body_bytes, self.body_timeout_s, expected=expected)
            tagged = self._tagged(send, rid, scope, body)
            if declared.isdigit() and int(declared) > self.max_body_bytes:
                error = BodyTooLargeError(self.max_body_bytes)
                await _send_json(tagged, error.http_status, error.envelope())
                return
            await self.app(scope, body.receive, tagged)
        finally:
            request_id.reset(token)

    @staticmethod
    def _tagged(send: Send, rid: str, scope: Scope, body: _BoundedBody) -> Send:
        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = [(b"x-request-id", rid.encode())]
                if not body.complete:
                    extra.append(_CLOSE)
                message["headers"] = [*message.get("headers", []), *extra]
                method, path, status = scope["method"], scope["path"], message["status"]
                log.info("method=%s path=%s status=%s", method, path, status)
            await send(message)

        return wrapped


def _new_request_id() -> str:
    """32 hex digits, like a UUID4's, without its system call per request: a log correlation id, not a secret
    (a client may choose its own), from the process's own generator (reseeded in a forked child)."""
    return f"{random.getrandbits(128):032x}"


class _BoundedBody:
    """The app's `receive` for one request: the body within its size and time bounds (see `RequestGuard`);
    once the body is all there, the client's own `receive` untouched (a streaming answer must still hear the
    client hang up, however long it streams)."""

    def __init__(
        self, receive: Receive, scope: Scope, max_bytes: int, timeout_s: float, *, expected: bool
    ) -> None:
        self._receive = receive
        self._scope = scope
        self._max_bytes = max_bytes
        self._timeout_s = timeout_s
        self._deadline = anyio.current_time() + timeout_s
        self._seen = 0
        self.complete = not expected

    async def receive(self) -> Message:
        if self.complete:
            return await self._receive()
        with anyio.move_on_after(self._deadline - anyio.current_time()) as waited:
            message = await self._receive()
        if waited.cancelled_caught:
            self._refuse(
                RequestTimeoutError(
                    f"the request body did not arrive within {self._timeout_s} s of its headers",
                    timeoutSeconds=self._timeout_s,
                )
            )
        if message["type"] == "http.disconnect":
            self._refuse(ClientDisconnectedError("the client hung up before its request body arrived"))
        if message["type"] == "http.request":
            self._seen += len(message.get("body", b""))
            if self._seen > self._max_bytes:
                raise BodyTooLargeError(self._max_bytes)
            self.complete = not message.get("more_body", False)
        return message

    def _refuse(self, error: RelayerError) -> None:
        """Raise `error` for the app to answer, with one INFO line (a client's doing, not the server's)."""
        log.info(
            "method=%s path=%s body unfinished after %s bytes: %s",
            self._scope["method"],
            self._scope["path"],
            self._seen,
            error.code,
        )
        raise error


class StrictJsonBody:
    """Wraps an ASGI app whose POST bodies are JSON it parses itself (the MCP SDK's streamable HTTP app): a
    body `relayer.faces.mcp.refusal_of` refuses (a key given twice, NaN, nesting past the limit, not JSON) is
    answered here, before the app can read it its own way. The SDK's parser keeps the last of two equal keys,
    so `{"dry_run": true, "dry_run": false}` in a tool call would otherwise send a real trade.

    The answer is HTTP 400 with that JSON-RPC error (code -32700, the request's id where it is unambiguous)
    whose `data` is the REST error body. The body is at most `MAX_BODY_BYTES` (the `RequestGuard` outside
    this limits it) and is handed on unchanged otherwise; the stdio transport applies the same rule.

    Only POST reaches the app: the tools answer each request in its own response and the server never pushes,
    so the transport's GET stream (open until the client leaves, holding a connection past every timeout: a
    few idle ones would fill the connection cap for everyone) and its DELETE (sessions; this server keeps
    none) are answered 405 `method_not_allowed` with `Allow: POST`, as the streamable HTTP transport permits.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] != "POST":
            refused = MethodNotAllowedError("the MCP endpoint takes POST only (no stream, no session)")
            await _send_json(send, 405, refused.envelope(), [(b"allow", b"POST")])
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left mid-body: the app sees just that
                await self.app(scope, _replay(None, message, receive), send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        refusal = refusal_of(body)
        if refusal is not None:
            await _send_json(send, 400, refusal)
            return
        await self.app(scope, _replay(body, None, receive), send)


def _replay(body: bytes | None, first: Message | None, receive: Receive) -> Receive:
    """A `receive` that gives the app the body already read (or the message that ended it), then the client's
    own `receive`: a streaming answer must still hear the client hang up."""
    pending: list[Message] = [first] if first is not None else []
    if body is not None:
        pending.append({"type": "http.request", "body": body, "more_body": False})

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed


async def _send_json(
    send: Send, status: int, content: object, extra_headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    """Answer straight from the middleware (the app never saw the request)."""
    body = json.dumps(content).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": [*headers, *extra_headers]})
    await send({"type": "http.response.body", "body": body})
