"""The live notices of one process: one poller reading the journal, fanning notices out to subscribers.

`GET /api/stream` (Server-Sent Events) and MCP's fills resource each hold a `Subscription`; none of them reads
the journal on its own once it is live. The `NoticeFeed` reads `Journal.notices_after(cursor)` every
`poll_interval_s` (notices other instances wrote), or at once when this process's journal commits notices
(`Journal.on_notices`, called on whichever thread wrote; handed to the loop with `call_soon_threadsafe`), and
offers each notice to every subscriber whose filter (account, types) takes it.

A subscriber that resumes from a cursor first reads its backlog from the journal, in pages, and then switches
to the live feed. The switch loses nothing and repeats nothing: the subscriber is registered with the feed
before its backlog is read, so a notice the feed offers meanwhile is either in the backlog or queued, and
everything at or before the last cursor it delivered is dropped. Memory is bounded: each subscriber queues
at most `max_queued` notices. Overflowing while still catching up only means reading the journal once more
(the discarded notices are there); overflowing once live ends the subscription (`EndReason.TOO_SLOW`): the
client resumes from its last cursor and loses nothing.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from enum import StrEnum
from functools import partial

import anyio
import anyio.to_thread

from relayer.domain.notices import Cursor, NoticeType, StoredNotice
from relayer.errors import TooManyStreamsError
from relayer.services.periodic import Periodic
from relayer.stores.journal_port import Journal

log = logging.getLogger("relayer.notices")

PAGE_SIZE = 100
"""Notices per journal read (the feed's and a subscriber's backlog)."""

FILL_TYPES = frozenset({NoticeType.POSITION_DECREASED, NoticeType.ORDER_EXECUTED})
"""The notices that tell an account its position was decreased (MCP's fills)."""


class EndReason(StrEnum):
    """Why the feed ended a subscription (the SSE `stream.end` event's `reason`)."""

    TOO_SLOW = "too_slow"
    """More than `max_queued` notices waited for the client: resume with `Last-Event-ID`."""
    SHUTDOWN = "shutdown"
    """The server is stopping."""


class SubscriptionEnded(Exception):  # noqa: N818 - a signal to the face, not an error a client sees as such
    """The feed ended the subscription (`reason`); `Subscription.last` is where a client resumes."""

    def __init__(self, reason: EndReason) -> None:
        super().__init__(reason.value)
        self.reason = reason


class Subscription:
    """One subscriber's notices after `last`, in cursor order: its backlog from the journal, then the feed's.

    Read with `next()` on the feed's event loop; `close()` (or leaving `NoticeFeed.subscription`) lets go.
    """

    def __init__(
        self,
        feed: NoticeFeed,
        account: str | None,
        types: frozenset[NoticeType] | None,
        after: Cursor,
        holder: str | None,
    ) -> None:
        self.account = None if account is None else account.lower()
        """Only this account's notices; None: every notice (an `admin` key)."""
        self.types = types
        self.last = after
        """The cursor of the last notice delivered (or the one resumed from)."""
        self.holder = holder
        self.ended: EndReason | None = None
        self._feed = feed
        self._queue: collections.deque[StoredNotice] = collections.deque()
        self._ready = asyncio.Event()
        self._live = False
        self._overflowed = False
        self._backlog: collections.deque[StoredNotice] = collections.deque()

    def wants(self, notice: StoredNotice) -> bool:
        """Whether this subscriber's filter takes `notice`."""
        if self.account is not None and notice.account != self.account:
            return False
        return self.types is None or notice.type in self.types

    def offer(self, notice: StoredNotice) -> None:
        """Queue a notice the feed read (on the loop); see the module for what an overflow does."""
        if self.ended is not None:
            return
        if len(self._queue) >= self._feed.max_queued:
            if self._live:
                self.end(EndReason.TOO_SLOW)
                return
            self._overflowed = True  # still catching up: the journal holds what is discarded here
            self._queue.clear()
        self._queue.append(notice)
        self._ready.set()

    def end(self, reason: EndReason) -> None:
        """End the subscription: its reader's `next()` raises `SubscriptionEnded(reason)`."""
        if self.ended is None:
            self.ended = reason
            self._queue.clear()
            self._ready.set()
        self._feed.release(self)

    def close(self) -> None:
        """Let go (the reader left); idempotent."""
        self._feed.release(self)

    async def next(self, timeout_s: float) -> StoredNotice | None:
        """The next notice after `last`, or None when none came within `timeout_s`.

        Raises:
            SubscriptionEnded: the feed ended the subscription.
            StoreUnavailableError: the journal could not be read (catching up).
        """
        while not self._live:
            if self.ended is not None:
                raise SubscriptionEnded(self.ended)
            if self._backlog:
                notice = self._backlog.popleft()
                if notice.cursor > self.last:  # a page may end where the queue's notices start
                    self.last = notice.cursor
                    return notice
                continue
            self._overflowed = False
            page = await self._feed.read(self.last, self.account, self.types)
            self._backlog.extend(page)
            if len(page) < PAGE_SIZE and not self._overflowed:
                self._live = True  # all offered since `subscribe` is queued; the backlog drains first
        while True:
            if self._backlog:
                notice = self._backlog.popleft()
            elif self._queue:
                notice = self._queue.popleft()
            else:
                if self.ended is not None:
                    raise SubscriptionEnded(self.ended)
                self._ready.clear()
                with anyio.move_on_after(timeout_s) as waited:
                    await self._ready.wait()
                if waited.cancelled_caught:
                    return None
                continue
            if notice.cursor > self.last:
                self.last = notice.cursor
                return notice


class NoticeFeed:
    """The process's one reader of live notices (see the module). Started and stopped on an event loop."""

    def __init__(self, journal: Journal, *, poll_interval_s: float, max_queued: int) -> None:
        self.journal = journal
        self.max_queued = max_queued
        self.cursor = Cursor(0, 0)
        """The last notice the feed read (offered to every subscriber that wanted it)."""
        self._subscribers: list[Subscription] = []
        self._held: collections.Counter[str] = collections.Counter()
        self._poller = Periodic("notice-feed", self._drain, poll_interval_s)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._previous_hook: Callable[[], None] | None = None
        self._hook: Callable[[], None] | None = None

    async def start(self) -> None:
        """Start reading from the newest notice on (what subscribers resume before it is their backlog)."""
        self._loop = asyncio.get_running_loop()
        self.cursor = await anyio.to_thread.run_sync(self.journal.latest_notice_cursor)
        previous = self._previous_hook = self.journal.on_notices

        def told() -> None:
            if previous is not None:
                previous()
            self.wake()

        self._hook = self.journal.on_notices = told  # chained after any hook already there
        self._poller.start()

    async def stop(self) -> None:
        """End every subscription (`EndReason.SHUTDOWN`) and stop reading."""
        self.end_all(EndReason.SHUTDOWN)
        if self.journal.on_notices is self._hook:  # still ours (a hook chained after it restores its own)
            self.journal.on_notices = self._previous_hook
        await self._poller.stop()
        self._loop = None

    def end_all(self, reason: EndReason) -> None:
        """End every open subscription (the server is stopping)."""
        for subscriber in list(self._subscribers):
            subscriber.end(reason)

    def wake(self) -> None:
        """Read now rather than at the next poll; callable from any thread (the journal's writers)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._poller.wake)
        except RuntimeError:  # the loop closed between the check and the call: nobody left to tell
            return

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def held_by(self, holder: str) -> int:
        """Open subscriptions of `holder` (an API key's id)."""
        return self._held[holder]

    def subscribe(
        self,
        account: str | None,
        after: Cursor,
        *,
        types: Collection[NoticeType] | None = None,
        holder: str | None = None,
        max_per_holder: int | None = None,
    ) -> Subscription:
        """A subscription to `account`'s notices (None: every notice) after `after`, counted against `holder`.

        Raises:
            TooManyStreamsError: `holder` already holds `max_per_holder` subscriptions.
        """
        if holder is not None and max_per_holder is not None and self._held[holder] >= max_per_holder:
            raise TooManyStreamsError(
                f"this API key holds its cap of {max_per_holder} open streams here: close one first",
                maxPerKey=max_per_holder,
            )
        subscriber = Subscription(self, account, None if types is None else frozenset(types), after, holder)
        self._subscribers.append(subscriber)
        if holder is not None:
            self._held[holder] += 1
        return subscriber

    @contextmanager
    def subscription(
        self,
        account: str | None,
        after: Cursor,
        *,
        types: Collection[NoticeType] | None = None,
        holder: str | None = None,
        max_per_holder: int | None = None,
    ) -> Iterator[Subscription]:
        """`subscribe`, closed when the block ends (however it ends: a client hanging up cancels it)."""
        subscriber = self.subscribe(account, after, types=types, holder=holder, max_per_holder=max_per_holder)
        try:
            yield subscriber
        finally:
            subscriber.close()

    def release(self, subscriber: Subscription) -> None:
        if subscriber in self._subscribers:
            self._subscribers.remove(subscriber)
            if subscriber.holder is not None:
                self._held[subscriber.holder] -= 1
                if self._held[subscriber.holder] <= 0:
                    del self._held[subscriber.holder]

    async def read(
        self, after: Cursor, account: str | None, types: frozenset[NoticeType] | None
    ) -> list[StoredNotice]:
        """One page of settled notices after `after` from the journal (a worker thread: it blocks)."""
        read = partial(
            self.journal.notices_after,
            after,
            account=account,
            types=None if types is None else sorted(types),
            limit=PAGE_SIZE,
        )
        return await anyio.to_thread.run_sync(read)

    async def _drain(self) -> None:
        """Read every notice settled since `cursor` and offer each to the subscribers that want it."""
        while True:
            page = await self.read(self.cursor, None, None)
            for notice in page:
                self.cursor = notice.cursor
                for subscriber in list(self._subscribers):
                    if subscriber.wants(notice):
                        subscriber.offer(notice)
            if len(page) < PAGE_SIZE:
                return
