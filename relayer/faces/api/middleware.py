"""Request-level guards: a body size limit and a request id on every answer and log line (`RequestGuard`),
and strict JSON bodies for a mounted app that parses its own (`StrictJsonBody`, around the MCP server).

Pure ASGI (no `BaseHTTPMiddleware`), so streaming answers (the MCP mount) pass through untouched.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import uuid
from collections.abc import Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from relayer.errors import BodyTooLargeError
from relayer.faces.mcp import refusal_of

MAX_BODY_BYTES = 64 * 1024
"""Largest request body accepted (64 KiB): every request here is a few hundred bytes of JSON."""

REQUEST_ID_HEADER = "x-request-id"
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
"""The current request's id, for log lines (`relayer.faces.api.errors` logs it with every unhandled error)."""

log = logging.getLogger("relayer.api.access")


class RequestGuard:
    """Tag each HTTP request with an id (the client's `X-Request-ID` if sane, else a new one) and refuse a
    body over `max_body_bytes` with 413 `body_too_large` before the app reads it."""

    def __init__(self, app: ASGIApp, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        given = headers.get(REQUEST_ID_HEADER, "")
        rid = given if _CLIENT_ID.match(given) else uuid.uuid4().hex
        token = request_id.set(rid)
        try:
            declared = headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self.max_body_bytes:
                await self._too_large(send, rid)
                return
            # A body found too large while the app reads it raises `BodyTooLargeError` from `receive`: the
            # app's error handlers answer it like any other `RelayerError`.
            await self.app(scope, self._limited(receive), self._tagged(send, rid, scope))
        finally:
            request_id.reset(token)

    def _limited(self, receive: Receive) -> Receive:
        seen = 0

        async def wrapped() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes:
                    raise BodyTooLargeError(self.max_body_bytes)
            return message

        return wrapped

    @staticmethod
    def _tagged(send: Send, rid: str, scope: Scope) -> Send:
        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
                method, path, status = scope["method"], scope["path"], message["status"]
                log.info("request=%s method=%s path=%s status=%s", rid, method, path, status)
            await send(message)

        return wrapped

    async def _too_large(self, send: Send, rid: str) -> None:
        error = BodyTooLargeError(self.max_body_bytes)
        await _send_json(send, error.http_status, error.envelope(), [(b"x-request-id", rid.encode())])


class StrictJsonBody:
    """Wraps an ASGI app whose POST bodies are JSON it parses itself (the MCP SDK's streamable HTTP app): a
    body `relayer.faces.mcp.refusal_of` refuses (a key given twice, NaN, nesting past the limit, not JSON) is
    answered here, before the app can read it its own way. The SDK's parser keeps the last of two equal keys,
    so `{"dry_run": true, "dry_run": false}` in a tool call would otherwise send a real trade.

    The answer is HTTP 400 with that JSON-RPC error (code -32700, the request's id where it is unambiguous)
    whose `data` is the REST error body. The body is at most `MAX_BODY_BYTES` (the `RequestGuard` outside
    this limits it) and is handed on unchanged otherwise; the stdio transport applies the same rule.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
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
