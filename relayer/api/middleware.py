"""Request-level guards: a body size limit and a request id on every answer and log line.

Pure ASGI (no `BaseHTTPMiddleware`), so streaming answers (the MCP mount) pass through untouched.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from relayer.errors import BodyTooLargeError

MAX_BODY_BYTES = 64 * 1024
"""Largest request body accepted (64 KiB): every request here is a few hundred bytes of JSON."""

REQUEST_ID_HEADER = "x-request-id"
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
"""The current request's id, for log lines (`relayer.api.errors` logs it with every unhandled error)."""

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
        body = json.dumps({"error": BodyTooLargeError(self.max_body_bytes).to_dict()}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"x-request-id", rid.encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
