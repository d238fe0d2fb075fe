"""Notices are read in an order no concurrent commit can slip behind, on both stores: a reader that moved its
cursor past a notice never meets, later, one that sorts before that cursor (on PostgreSQL ids are handed out
before commit, so a plain `ORDER BY id` would lose a slow transaction's notice). Also: no notice is written
with notices off, and `on_notices` hears each committing transaction that wrote some."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

from relayer.domain.notices import START, Cursor, Notice, NoticeType, StoredNotice
from relayer.domain.status import TxStatus
from relayer.stores import notice_rows
from relayer.stores.journal import SqlJournal, write_notices
from relayer.stores.location import StoreLocation, open_journal
from tests.relay.records import queued_record

CHAIN_ID = 31337
NO_HORIZON = "9223372036854775807"
"""A `settled_txn` above every transaction: what reading without the horizon would be."""


def _notice(tag: str) -> Notice:
    return Notice(NoticeType.TRANSACTION_STATUS, "0xab", tag, {"tag": tag})


def _tags(notices: list[StoredNotice]) -> list[str]:
    return [str(n.payload["tag"]) for n in notices]


def _race(writer: SqlJournal, readers: list[SqlJournal]) -> list[tuple[list[str], list[str]]]:
    """T1 writes a notice and stays open; T2 writes one and commits (PostgreSQL) or waits for T1 (SQLite, one
    writer); each reader reads; T1 commits; each reader reads on from its cursor. Per reader: both reads."""
    t1_wrote, t1_may_commit, t2_done = threading.Event(), threading.Event(), threading.Event()

    def t1() -> None:
        with writer.db.transaction() as session:
            write_notices(session, CHAIN_ID, [_notice("t1")], 1.0)
            t1_wrote.set()
            assert t1_may_commit.wait(10)

    def t2() -> None:
        with writer.db.transaction() as session:
            write_notices(session, CHAIN_ID, [_notice("t2")], 2.0)
        t2_done.set()

    first = threading.Thread(target=t1)
    first.start()
    assert t1_wrote.wait(10)
    second = threading.Thread(target=t2)
    second.start()
    if writer.db.dialect.shared_by_processes:
        assert t2_done.wait(10)  # PostgreSQL: T2 (the younger transaction) committed first
    else:
        time.sleep(0.2)
        assert not t2_done.is_set()  # SQLite: T2 waits for the one writer
    before = [reader.notices_after(START) for reader in readers]
    cursors = [read[-1].cursor if read else START for read in before]
    t1_may_commit.set()
    first.join()
    second.join()
    after = [reader.notices_after(cursor) for reader, cursor in zip(readers, cursors, strict=True)]
    return [(_tags(b), _tags(a)) for b, a in zip(before, after, strict=True)]


def test_a_reader_never_meets_a_notice_behind_its_cursor(store: StoreLocation) -> None:
    writer = open_journal(store)
    reader = open_journal(store)
    unbounded = open_journal(store)
    unbounded.db.dialect = replace(unbounded.db.dialect, settled_txn=NO_HORIZON)

    (seen, unbounded_seen) = _race(writer, [reader, unbounded])
    cursor = reader.latest_notice_cursor()
    for journal in (writer, reader, unbounded):
        journal.close()

    assert seen == ([], ["t1", "t2"])  # T2's notice waited for T1's: nothing was read out of order
    assert cursor > Cursor(0, 0)
    if store.database_url is not None:
        # Without the horizon the reader takes T2's notice first and then never sees T1's (it sorts before
        # the cursor): the loss the horizon prevents, so this race does exercise it.
        assert unbounded_seen == (["t2"], [])
    else:
        assert unbounded_seen == seen  # one writer at a time: commit order is id order


def test_no_notice_is_written_with_notices_off_and_each_noticing_commit_is_heard(
    store: StoreLocation,
) -> None:
    journal = open_journal(store)
    heard: list[int] = []
    journal.on_notices = lambda: heard.append(1)
    journal.notices_enabled = False
    with journal.write() as writer:
        writer.insert(queued_record("quiet", 0))
    assert journal.transition("quiet", TxStatus.QUEUED, TxStatus.FAILED, now=2.0)
    quiet = journal.notices_after(START)
    heard_quiet = len(heard)

    journal.notices_enabled = True
    with journal.write() as writer:
        writer.insert(queued_record("told", 1))
    assert journal.transition("told", TxStatus.QUEUED, TxStatus.FAILED, now=3.0)
    told = journal.notices_after(START)
    journal.close()

    assert (quiet, heard_quiet) == ([], 0)
    assert [(n.record_id, n.payload["status"]) for n in told] == [("told", "queued"), ("told", "failed")]
    assert len(heard) == 2


def test_reading_after_a_cursor_seeks_the_index_instead_of_scanning_every_notice(
    store: StoreLocation,
) -> None:
    # What each poll of the feed, the streams and recent fills asks: the plan must bound the index by the
    # cursor (txn and id), not only by the horizon (`txn < settled`), or every poll reads every notice kept.
    journal = open_journal(store)
    journal.chain_id = CHAIN_ID  # as bound to its chain (`bind_to_chain`): the indexes lead with the chain
    with journal.db.transaction() as session:
        write_notices(session, CHAIN_ID, [_notice(str(n)) for n in range(50)], 1.0)
    cursor = journal.notices_after(START, limit=10)[-1].cursor
    plans: list[str] = []
    for account in (None, "0xab"):
        where, args = notice_rows.after(journal.db.dialect, cursor)  # the bound notices_after uses
        where += " AND chain_id = ?"
        args.append(CHAIN_ID)
        if account is not None:
            where += " AND account = ?"
            args.append(account)
        query = f"SELECT * FROM notices WHERE {where} ORDER BY txn, id LIMIT 100"
        with journal.db.transaction() as session:
            if store.database_url is not None:
                session.execute("SET LOCAL enable_seqscan = off")  # a tiny table: show the index it can use
                plans.append(" ".join(str(r["QUERY PLAN"]) for r in session.rows(f"EXPLAIN {query}", args)))
            else:
                explained = session.rows(f"EXPLAIN QUERY PLAN {query}", args)
                plans.append(" ".join(str(r["detail"]) for r in explained))
    assert [n.payload["tag"] for n in journal.notices_after(cursor, limit=3)] == ["10", "11", "12"]
    journal.close()

    for plan in plans:
        if store.database_url is not None:
            assert "ROW(txn, id) > ROW(" in plan, plan  # one index range from the cursor on
            assert "BitmapOr" not in plan, plan
            assert "Sort" not in plan, plan
        else:
            assert "id>?" in plan, plan  # the id bound is part of the search, not a filter after it
