"""`GET /api/stream`: the API key's notices as Server-Sent Events, as they happen, resumable.

A key with the `read` scope gets its own account's notices (`relayer.domain.notices`: `transaction.status`,
`position.decreased`, `order.executed`); a key with `admin` as well gets every notice. Each event is

    id: <cursor>
    event: <type>
    data: <the notice's envelope: {id, type, timestamp, chainId, data}>

and a client that reconnects with `Last-Event-ID: <cursor>` (or `?after=<cursor>`) gets everything after it,
nothing twice; without either the stream starts from now. A comment line (`: keep-alive`) goes out after
`heartbeat_s` without an event. The notices come from the process's `NoticeFeed` (one journal reader for every
stream); a stream that falls `max_queued` notices behind, or that the server ends, gets a last event
`stream.end` (`{"reason", "lastEventId"}`, no `id`) and is closed: reconnect with `Last-Event-ID`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from relayer.domain.apikeys import Scope as KeyScope
from relayer.domain.notices import Cursor, StoredNotice
from relayer.errors import InvalidFieldError, RelayerError, TooManyStreamsError
from relayer.faces.api import schemas
from relayer.faces.api.inputs import KEY_HEADERS
from relayer.faces.api.relay_routes import Reader
from relayer.runtime import Runtime
from relayer.services.notice_feed import NoticeFeed, Subscription, SubscriptionEnded

log = logging.getLogger("relayer.api.stream")

router = APIRouter(tags=["stream"])

EVENT_STREAM = "text/event-stream"

_STREAM_ANSWER: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Server-Sent Events: `id: <cursor>`, `event: <type>`, `data: <notice JSON>` per"
        " notice; `: keep-alive` comments; a last `event: stream.end` when the server ends the stream.",
        "content": {EVENT_STREAM: {"schema": {"type": "string"}}},
    }
}


def _cursor(given: str | None, field: str) -> Cursor | None:
    """A client's resume cursor (None: not given).

    Raises:
        InvalidFieldError: it is not a cursor this server hands out (422).
    """
    if given is None:
        return None
    cursor = Cursor.parse(given[:64])
    if cursor is None:
        raise InvalidFieldError(field, 'must be an event id this stream sent, e.g. "0-42"')
    return cursor


@router.get(
    "/api/stream",
    response_class=StreamingResponse,
    responses={
        **_STREAM_ANSWER,
        **schemas.error_responses(*schemas.API_KEY, *schemas.RELAY, TooManyStreamsError),
    },
    openapi_extra=KEY_HEADERS,
)
async def stream(
    request: Request,
    reader: Reader,
    after: str | None = Query(default=None, description="resume after this event id (a cursor)"),
    last_event_id: str | None = Header(
        default=None, alias="Last-Event-ID", description="resume after this event id (wins over `after`)"
    ),
) -> StreamingResponse:
    """The key's account's notices (with the `admin` scope every account's) as Server-Sent Events, from now
    or after a cursor (`read` scope; at most `RELAYER_STREAM_MAX_PER_KEY` open per key)."""
    runtime: Runtime = request.app.state.runtime
    runtime.require_relay()
    feed = runtime.notices
    assert feed is not None  # started with the relay
    resume = _cursor(last_event_id, "Last-Event-ID") or _cursor(after, "after")
    if resume is None:
        resume = await anyio.to_thread.run_sync(feed.journal.latest_notice_cursor)
    settings = runtime.settings.stream
    subscription = feed.subscribe(
        None if KeyScope.ADMIN in reader.scopes else reader.account,
        resume,
        holder=str(reader.key_id),
        max_per_holder=settings.max_per_key,
    )
    return EventStream(feed, subscription, settings.heartbeat_s)


class EventStream(StreamingResponse):
    """The SSE answer of one subscription, let go however the answer ends (the client hangs up: Starlette
    cancels the body; the server stops: `relayer.faces.api.edge` closes the connection)."""

    def __init__(self, feed: NoticeFeed, subscription: Subscription, heartbeat_s: float) -> None:
        super().__init__(
            _events(subscription, heartbeat_s),
            media_type=EVENT_STREAM,
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self.subscription = subscription

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.subscription.close()


async def _events(subscription: Subscription, heartbeat_s: float) -> AsyncIterator[bytes]:
    yield b": stream open\n\n"
    try:
        while True:
            notice = await subscription.next(heartbeat_s)
            yield b": keep-alive\n\n" if notice is None else sse_event(notice)
    except SubscriptionEnded as ended:
        yield _end(ended.reason.value, subscription)
    except RelayerError as error:  # the journal could not be read while catching up
        log.warning("stream ended: code=%s reason=%s", error.code, error.message)
        yield _end(error.code, subscription)


def sse_event(notice: StoredNotice) -> bytes:
    """One notice as a Server-Sent Event (the `data` JSON is one line)."""
    data = json.dumps(notice.envelope(), separators=(",", ":"), sort_keys=True)
    return f"id: {notice.cursor.text}\nevent: {notice.type.value}\ndata: {data}\n\n".encode()


def _end(reason: str, subscription: Subscription) -> bytes:
    data = json.dumps({"reason": reason, "lastEventId": subscription.last.text}, separators=(",", ":"))
    return f"event: stream.end\ndata: {data}\n\n".encode()
