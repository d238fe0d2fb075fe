"""The `NoticeFeed` on a real journal (both stores): a subscriber catching up from a cursor while more
notices arrive than it may queue loses none and repeats none; one that falls behind once live is ended
(`too_slow`) at the cursor it reached; an account's subscriber gets that account's notices only; a commit in
this process reaches subscribers without waiting for the poll."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace

import anyio
import pytest

from relayer.domain.notices import START, Notice, NoticeType, StoredNotice
from relayer.services.notice_feed import EndReason, NoticeFeed, Subscription, SubscriptionEnded
from relayer.stores.journal import SqlJournal, write_notices
from relayer.stores.location import StoreLocation, open_journal
from tests.relay.records import queued_record

CHAIN_ID = 31337
SLOW_POLL_S = 30.0
"""Longer than any test: a notice that arrives in time was woken for, not polled."""


def _write(journal: SqlJournal, count: int, account: str = "0xab", start: int = 0) -> None:
    with journal.db.transaction() as session:
        notices = [
            Notice(NoticeType.TRANSACTION_STATUS, account, f"r{start + n}", {"n": start + n})
            for n in range(count)
        ]
        write_notices(session, CHAIN_ID, notices, 1.0)


async def _drain(subscription: Subscription, count: int) -> list[StoredNotice]:
    got: list[StoredNotice] = []
    with anyio.fail_after(10):
        while len(got) < count:
            notice = await subscription.next(5.0)
            if notice is not None:
                got.append(notice)
    return got


def _run(store: StoreLocation, test: Callable[[SqlJournal, NoticeFeed], Awaitable[None]], **kw: int) -> None:
    journal = open_journal(store)

    async def main() -> None:
        feed = NoticeFeed(journal, poll_interval_s=SLOW_POLL_S, max_queued=kw.get("max_queued", 10))
        await feed.start()
        try:
            await test(journal, feed)
        finally:
            await feed.stop()

    try:
        anyio.run(main)
    finally:
        journal.close()


def test_catching_up_past_the_queue_s_bound_loses_and_repeats_nothing(store: StoreLocation) -> None:
    async def test(journal: SqlJournal, feed: NoticeFeed) -> None:
        _write(journal, 250)  # two and a half pages of backlog
        subscription = feed.subscribe("0xAB", START)
        first = await _drain(subscription, 120)  # into the second page
        _write(journal, 30, start=250)  # more than it may queue, offered while it catches up
        feed.wake()
        await anyio.sleep(0.2)
        rest = await _drain(subscription, 160)
        subscription.close()

        numbers = [n.payload["n"] for n in first + rest]
        assert numbers == list(range(280))
        assert [n.cursor for n in first + rest] == sorted(n.cursor for n in first + rest)

    _run(store, test)


def test_a_live_subscriber_that_falls_behind_is_ended_where_it_was(store: StoreLocation) -> None:
    async def test(journal: SqlJournal, feed: NoticeFeed) -> None:
        subscription = feed.subscribe(None, feed.cursor, holder="key-1", max_per_holder=1)
        assert await subscription.next(0.01) is None  # caught up: live from here
        _write(journal, 3)
        feed.wake()
        kept = await _drain(subscription, 3)
        _write(journal, 11, start=3)  # one more than it may queue
        feed.wake()
        with anyio.fail_after(10):
            while subscription.ended is None:
                await anyio.sleep(0.01)
        with pytest.raises(SubscriptionEnded) as ended:
            await subscription.next(1.0)

        assert ended.value.reason is EndReason.TOO_SLOW

        assert subscription.last == kept[-1].cursor  # where the client resumes: nothing lost
        assert feed.subscribers == 0
        assert feed.held_by("key-1") == 0  # its slot is free again

    _run(store, test)


def test_an_account_gets_its_own_and_a_commit_here_is_heard_at_once(store: StoreLocation) -> None:
    async def test(journal: SqlJournal, feed: NoticeFeed) -> None:
        mine = feed.subscribe("0xab", feed.cursor)
        everyone = feed.subscribe(None, feed.cursor)
        _write(journal, 1, account="0xcd")
        with journal.write() as writer:  # a record insert journals its `queued` notice and tells the feed
            writer.insert(replace(queued_record("r-mine", 0), account="0xAB"))

        (heard,) = await _drain(mine, 1)  # the poll is 30 s away: only the wake can bring it in time
        everything = await _drain(everyone, 2)

        assert (heard.record_id, heard.account) == ("r-mine", "0xab")
        assert [n.account for n in everything] == ["0xcd", "0xab"]

    _run(store, test)
