"""MCP's recent-fills resource for a stdio session (`relayer mcp` with `RELAYER_STREAM_MCP_API_KEY`).

`relayer://fills/recent` reads as `TradingService.recent_fills` answers for the configured key's account (the
`get_recent_fills` tool's JSON: the newest fills and a cursor). A client may subscribe to it: with
`subscriptions/listen` (MCP 2026-07-28) or, on an older session, `resources/subscribe`; each new fill of the
account (`position.decreased`, `order.executed`) then sends `notifications/resources/updated` for the URI, and
the client reads the resource again. The fills come from the process's `NoticeFeed`.

Over stateless HTTP (`/mcp/`) there is no session to push to, so the HTTP server has no such resource: an
agent there polls `get_recent_fills` with its cursor, or reads `GET /api/stream`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.to_thread
from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver.resources import FunctionResource, Resource
from mcp.server.session import ServerSession
from mcp.types import EmptyResult, SubscribeRequestParams, UnsubscribeRequestParams

from relayer.domain.apikeys import Scope
from relayer.errors import RelayerError
from relayer.faces.mcp_tools import TradingProvider
from relayer.services.notice_feed import FILL_TYPES, EndReason, NoticeFeed, SubscriptionEnded

log = logging.getLogger("relayer.mcp")

FILLS_URI = "relayer://fills/recent"

IDLE_WAIT_S = 60.0
"""How long the watcher waits for a fill before waiting again (nothing is sent meanwhile)."""

Publish = Callable[[str], Awaitable[None]]
"""Tells `subscriptions/listen` streams that the resource at a URI changed."""


class RecentFills:
    """The resource, its legacy subscriptions (`resources/subscribe`) and the watcher that tells them."""

    def __init__(self, trading: TradingProvider, feed: Callable[[], NoticeFeed | None], api_key: str) -> None:
        self._trading = trading
        self._feed = feed
        self._api_key = api_key
        self._sessions: set[ServerSession] = set()

    def resource(self) -> Resource:
        return FunctionResource.from_function(
            self.read,
            uri=FILLS_URI,
            name="recent_fills",
            description=(
                "The configured API key's account's newest fills (as get_recent_fills answers: fills and a "
                "cursor). Subscribe to hear of each new fill (notifications/resources/updated), then read "
                "it again. Stdio only: over HTTP the server is stateless (use GET /api/stream)."
            ),
            mime_type="application/json",
        )

    async def read(self) -> str:
        try:
            answer: dict[str, Any] = await self._trading().recent_fills(self._api_key)
        except RelayerError as error:
            return json.dumps(error.envelope(), default=str)
        return json.dumps(answer)

    async def subscribe(
        self, ctx: ServerRequestContext[Any, Any], params: SubscribeRequestParams
    ) -> EmptyResult:
        if str(params.uri) == FILLS_URI:
            self._sessions.add(ctx.session)
        return EmptyResult()

    async def unsubscribe(
        self, ctx: ServerRequestContext[Any, Any], params: UnsubscribeRequestParams
    ) -> EmptyResult:
        if str(params.uri) == FILLS_URI:
            self._sessions.discard(ctx.session)
        return EmptyResult()

    @asynccontextmanager
    async def watching(self, publish: Publish) -> AsyncIterator[None]:
        """Tell subscribers of every new fill while the block runs (the server's lifespan)."""
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(self._watch, publish)
            try:
                yield
            finally:
                tasks.cancel_scope.cancel()

    async def _watch(self, publish: Publish) -> None:
        feed = self._feed()
        if feed is None:
            log.warning("mcp fills: no relay here (no relayer signer), so no fills to tell")
            return
        try:
            key = await anyio.to_thread.run_sync(self._trading().authenticate, self._api_key, Scope.READ)
        except RelayerError as error:
            log.warning("mcp fills: the configured API key is refused: code=%s", error.code)
            return
        after = await anyio.to_thread.run_sync(feed.journal.latest_notice_cursor)
        while True:
            try:
                with feed.subscription(key.account, after, types=FILL_TYPES) as fills:
                    while True:
                        notice = await fills.next(IDLE_WAIT_S)
                        after = fills.last
                        if notice is not None:
                            await self._updated(publish)
            except SubscriptionEnded as ended:
                if ended.reason is EndReason.SHUTDOWN:
                    return
            except RelayerError as error:  # the journal could not be read: try again shortly
                log.warning("mcp fills: code=%s reason=%s", error.code, error.message)
                await anyio.sleep(1.0)

    async def _updated(self, publish: Publish) -> None:
        await publish(FILLS_URI)
        for session in list(self._sessions):
            try:
                await session.send_resource_updated(FILLS_URI)
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                self._sessions.discard(session)  # the client left
