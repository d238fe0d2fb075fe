"""Logging set up once, at the edge (the CLI), before any library gets the chance to.

Log lines are `key=value` structured after a fixed prefix, and carry ids (request, record, nonce, hash), never
keys or API secrets. Every line carries `request=<id>`: the id of the HTTP request being served when it was
written (`request_id`, set by `relayer.faces.api.middleware.RequestGuard`), `-` outside any request; uvicorn's
own lines go through the same handler (`relayer serve` gives uvicorn no logging config of its own).
Configuring the root logger first also keeps the MCP SDK's own `basicConfig` from raising every library (e.g.
httpx, one line per node request) to INFO.
"""

from __future__ import annotations

import contextvars
import logging

QUIET_LIBRARIES = ("httpx", "httpcore", "urllib3", "web3", "mcp", "sse_starlette")
"""Libraries whose INFO lines are per-request noise; they still report warnings."""

LOG_FORMAT = "%(asctime)s level=%(levelname)s logger=%(name)s request=%(request_id)s %(message)s"
"""The prefix of every line; `request_id` is filled in by `RequestIdFilter`."""

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
"""The id of the HTTP request being served (`-` outside one): every log line written meanwhile carries it."""


class RequestIdFilter(logging.Filter):
    """Gives every record passing a handler the current `request_id` (a record that has one keeps it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id.get()
        return True


def configure(level: str = "info") -> None:
    """Root logging at `level` with a structured prefix carrying the request id; noisy libraries at
    WARNING."""
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT, force=True)
    for handler in logging.getLogger().handlers:
        handler.addFilter(RequestIdFilter())
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)
