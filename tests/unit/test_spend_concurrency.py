"""Budgets hold under concurrency: reservations from several journals (several instances on PostgreSQL,
several connections to one SQLite file) racing for one window never pass its limit, and a record's charge is
settled once however many instances try. Run on both stores."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

from relayer.domain.policy import check_raw_pending
from relayer.domain.sponsorship import DAY_S, Charge, Settlement, Usage, Window
from relayer.domain.status import RecordKind, TxStatus
from relayer.errors import QuotaExceededError, TooManyPendingError
from relayer.stores.location import StoreLocation, open_journal
from tests.relay.records import queued_record

CHAIN_ID = 31337
THREADS = 16
TRIES = 5
LIMIT = 7


def test_racing_reservations_never_pass_a_limit(store: StoreLocation) -> None:
    journals = [open_journal(store) for _ in range(4)]
    now_s = int(time.time())
    owner = Window("owner:0xab", 60, now_s - now_s % 60, max_requests=LIMIT)
    cap = Window("global", DAY_S, now_s - now_s % DAY_S, max_wei=3 * LIMIT)
    charge = Charge(3, (owner, cap))
    passed: list[int] = []
    refused: list[str] = []
    failed: list[str] = []
    start = threading.Barrier(THREADS)

    def reserve(index: int) -> None:
        journal = journals[index % len(journals)]
        start.wait()
        for _ in range(TRIES):
            try:
                with journal.write() as writer:
                    writer.reserve(CHAIN_ID, charge, now_s)
                passed.append(1)
            except QuotaExceededError as error:
                refused.append(error.details["scope"])
            except Exception as error:  # any other failure is what this test looks for
                failed.append(repr(error))

    threads = [threading.Thread(target=reserve, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    usage = journals[0].spend_usage(CHAIN_ID, [owner, cap])
    for journal in journals:
        journal.close()

    assert failed == []
    assert len(passed) == LIMIT
    assert len(refused) == THREADS * TRIES - LIMIT
    assert usage[owner.key()] == Usage(LIMIT, 3 * LIMIT)
    assert usage[cap.key()] == Usage(LIMIT, 3 * LIMIT)


def test_a_final_records_charge_is_settled_once_whoever_settles_it(store: StoreLocation) -> None:
    journals = [open_journal(store) for _ in range(4)]
    now_s = int(time.time())
    day = Window("owner:0xab", DAY_S, now_s - now_s % DAY_S, max_wei=1_000)
    charge = Charge(100, (day,))
    record = queued_record("settle", 0)
    with journals[0].write() as writer:
        writer.reserve(CHAIN_ID, charge, now_s)
        writer.insert(record, charge=charge)
    assert journals[0].transition(record.id, TxStatus.QUEUED, TxStatus.FAILED, now=2.0)
    (found,) = journals[1].unsettled_charges()
    assert found == (journals[1].get(record.id), charge)
    settled: list[bool] = []
    start = threading.Barrier(len(journals))

    def settle(index: int) -> None:
        start.wait()
        settlement = Settlement(record.id, CHAIN_ID, charge, {day.key(): 30})
        settled.append(journals[index].settle_charges([settlement]) == 1)

    threads = [threading.Thread(target=settle, args=(i,)) for i in range(len(journals))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    usage = journals[0].spend_usage(CHAIN_ID, [day])
    left = journals[0].unsettled_charges()
    for journal in journals:
        journal.close()

    assert sorted(settled) == [False, False, False, True]
    assert usage[day.key()] == Usage(1, 30)  # the reservation of 100 became the 30 the chain took
    assert left == []


def test_racing_raw_transactions_of_one_sender_never_pass_its_cap(store: StoreLocation) -> None:
    """Several instances accepting one sender's raw transactions at once: the cap is counted under the
    sender's lock in the inserting transaction, so together they keep it (each alone did before)."""
    journals = [open_journal(store) for _ in range(4)]
    cap = 4
    accepted: list[str] = []
    refused: list[int] = []
    failed: list[str] = []
    start = threading.Barrier(THREADS)

    def accept(index: int) -> None:
        journal = journals[index % len(journals)]
        start.wait()
        for attempt in range(TRIES):
            record = replace(queued_record(f"raw{index}x{attempt}", 0), kind=RecordKind.RAW)
            try:
                with journal.write() as writer:
                    unmined = writer.unmined_raw_locked(CHAIN_ID, record.sender)
                    check_raw_pending(record.sender, unmined, max_pending=cap)
                    writer.insert(record)
                accepted.append(record.id)
            except TooManyPendingError as error:
                refused.append(int(error.details["pending"]))
            except Exception as error:  # any other failure is what this test looks for
                failed.append(repr(error))

    threads = [threading.Thread(target=accept, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    kept = [r for r in journals[0].all() if r.kind is RecordKind.RAW]
    for journal in journals:
        journal.close()

    assert failed == []
    assert len(accepted) == cap
    assert sorted(r.id for r in kept) == sorted(accepted)
    assert set(refused) == {cap}
