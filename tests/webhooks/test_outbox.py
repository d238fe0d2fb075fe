"""The outbox at the store and dispatcher level, on both databases: fan-out is idempotent and filtered, a
claim is a lease (a crashed dispatcher's delivery is retried, its late finish changes nothing), two
dispatchers on one database deliver each notice once, pruning keeps what is still needed."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from relayer.config import WebhookSettings
from relayer.domain.apikeys import ApiKey, Scope
from relayer.domain.notices import Notice, NoticeType
from relayer.domain.webhooks import DeliveryState, new_secret
from relayer.errors import ConfigurationError, UnauthenticatedError, WebhookTestBusyError
from relayer.services.webhooks import WebhookService
from relayer.stores.journal import SqlJournal, write_notices
from relayer.stores.journal_chains import ChainBinding
from relayer.stores.location import StoreLocation, open_journal
from relayer.stores.sqlite import SqliteDatabase
from relayer.stores.webhooks import WebhookStore
from tests.webhooks.conftest import HANG, Receiver

CHAIN = ChainBinding(31337, "0x" + "aa" * 32)
ALICE = "0x" + "a1" * 20
BOB = "0x" + "b0" * 20


@pytest.fixture
def journal(store: StoreLocation) -> Iterator[SqlJournal]:
    opened = open_journal(store, relaying=True)
    opened.bind_to_chain(CHAIN, now=1)
    yield opened
    opened.close()


def _notify(journal: SqlJournal, *notices: tuple[NoticeType, str | None], now: float | None = None) -> None:
    with journal.db.transaction() as session:
        write_notices(
            session,
            CHAIN.chain_id,
            [Notice(kind, account, "r1", {"n": i}) for i, (kind, account) in enumerate(notices)],
            time.time() if now is None else now,
        )


def _hook(hooks: WebhookStore, account: str | None, url: str = "http://127.0.0.1:9/", **kw: object) -> str:
    made = hooks.create(
        webhook_id=f"wh_{account}_{len(hooks.subscriptions())}",
        account=account,
        url=url,
        secret=new_secret(),
        types=kw.get("types"),  # type: ignore[arg-type]
    )
    assert made is not None
    return made.id


def _no_key(presented: str | None, scope: Scope) -> ApiKey:
    raise UnauthenticatedError("no keys here")


def test_fan_out_gives_each_subscription_its_notices_once(journal: SqlJournal) -> None:
    hooks = WebhookStore(journal.db, CHAIN.chain_id)
    _notify(journal, (NoticeType.TRANSACTION_STATUS, ALICE))  # before any subscription: nobody hears it
    alice = _hook(hooks, ALICE)
    fills = _hook(hooks, BOB, types=frozenset({NoticeType.POSITION_DECREASED}))
    everyone = _hook(hooks, None)
    _notify(
        journal,
        (NoticeType.TRANSACTION_STATUS, ALICE),
        (NoticeType.POSITION_DECREASED, ALICE),
        (NoticeType.TRANSACTION_STATUS, BOB),
        (NoticeType.POSITION_DECREASED, BOB),
        (NoticeType.ORDER_EXECUTED, None),
    )

    assert hooks.fan_out() == 2 + 1 + 5
    assert hooks.fan_out() == 0
    assert [len(hooks.deliveries(h)) for h in (alice, fills, everyone)] == [2, 1, 5]
    # Run again from an old cursor (a crash between insert and cursor update cannot happen, but a replay
    # must still add nothing): the uniqueness rule keeps one delivery per notice.
    journal.db.execute("UPDATE webhooks SET cursor_txn = 0, cursor_id = 0")
    hooks.fan_out()
    assert [len(hooks.deliveries(h)) for h in (alice, fills, everyone)] == [3, 1, 6]  # + the older notice
    assert len({d.notice_id for d in hooks.deliveries(alice)}) == 3
    # Another chain's store sees none of them.
    assert WebhookStore(journal.db, 1).subscriptions() == []


def test_a_claim_is_a_lease_and_a_late_finish_changes_nothing(journal: SqlJournal) -> None:
    hooks = WebhookStore(journal.db, CHAIN.chain_id)
    _hook(hooks, ALICE)
    _notify(journal, (NoticeType.TRANSACTION_STATUS, ALICE))
    hooks.fan_out()

    (crashed,) = hooks.claim_due(slots=4, busy={}, per_webhook=4, lease_s=0.3)
    assert hooks.claim_due(slots=4, busy={}, per_webhook=4, lease_s=0.3) == []  # held
    time.sleep(0.4)
    (retried,) = hooks.claim_due(slots=4, busy={}, per_webhook=4, lease_s=30)
    assert (retried.delivery_id, retried.msg_id, retried.body) == (
        crashed.delivery_id,
        crashed.msg_id,
        crashed.body,
    )
    assert (crashed.attempt, retried.attempt) == (1, 2)

    assert not hooks.finish(crashed, state=DeliveryState.DELIVERED, status=200, error=None)
    assert hooks.finish(retried, state=DeliveryState.PENDING, status=500, error="not 2xx", retry_in_s=60)
    (delivery,) = hooks.deliveries(retried.webhook_id)
    assert (delivery.state, delivery.attempts, delivery.last_status) == (DeliveryState.PENDING, 2, 500)
    assert hooks.claim_due(slots=4, busy={}, per_webhook=4, lease_s=30) == []  # not due for a minute


def test_the_in_flight_cap_per_subscription(journal: SqlJournal) -> None:
    hooks = WebhookStore(journal.db, CHAIN.chain_id)
    alice, bob = _hook(hooks, ALICE), _hook(hooks, BOB)
    _notify(journal, *[(NoticeType.TRANSACTION_STATUS, ALICE)] * 6, (NoticeType.TRANSACTION_STATUS, BOB))
    hooks.fan_out()

    claimed = hooks.claim_due(slots=8, busy={alice: 1}, per_webhook=2, lease_s=30)

    assert Counter(d.webhook_id for d in claimed) == {alice: 1, bob: 1}


def test_pruning_keeps_pending_deliveries_notices(journal: SqlJournal) -> None:
    hooks = WebhookStore(journal.db, CHAIN.chain_id)
    _hook(hooks, ALICE)
    old = time.time() - 10 * 86_400
    _notify(journal, (NoticeType.TRANSACTION_STATUS, ALICE), (NoticeType.TRANSACTION_STATUS, ALICE), now=old)
    _notify(journal, (NoticeType.TRANSACTION_STATUS, BOB), now=old)
    hooks.fan_out()
    done, pending = hooks.claim_due(slots=2, busy={}, per_webhook=2, lease_s=30)
    hooks.finish(done, state=DeliveryState.DELIVERED, status=200, error=None)
    journal.db.execute("UPDATE deliveries SET updated_at = ?", (old,))

    assert hooks.prune(7 * 86_400) == (1, 2)  # the delivered one; its notice and Bob's, not the pending one's
    (left,) = hooks.deliveries(pending.webhook_id)
    assert left.id == pending.delivery_id
    assert journal.db.row("SELECT COUNT(*) AS n FROM notices")["n"] == 1  # type: ignore[index]


def test_two_dispatchers_on_one_database_deliver_each_notice_once(
    store: StoreLocation, journal: SqlJournal, receiver: Receiver
) -> None:
    settings = WebhookSettings(allow_private_urls=True, poll_interval_s=0.02, concurrency=4)
    hooks = WebhookStore(journal.db, CHAIN.chain_id)
    _hook(hooks, ALICE, url=receiver.url("/a"))
    _hook(hooks, None, url=receiver.url("/all"))
    # A delivery a crashed dispatcher claimed (and never finished) comes back once its claim expires.
    _notify(journal, (NoticeType.TRANSACTION_STATUS, ALICE))
    hooks.fan_out()
    hooks.claim_due(slots=1, busy={}, per_webhook=1, lease_s=1.0)
    for _ in range(20):
        _notify(journal, (NoticeType.TRANSACTION_STATUS, ALICE), (NoticeType.POSITION_DECREASED, BOB))
    other = open_journal(store)  # a second instance: its own connections to the same database

    async def run() -> None:
        first = WebhookService(hooks, settings, _no_key)
        second = WebhookService(WebhookStore(other.db, CHAIN.chain_id), settings, _no_key)
        first.start()
        second.start()
        try:
            deadline = time.monotonic() + 20
            while len(receiver.received) < 21 + 41 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)  # anything sent twice would arrive by now
        finally:
            await first.stop()
            await second.stop()

    try:
        asyncio.run(run())
    finally:
        other.close()
    ids = Counter((item.path, item.headers["webhook-id"]) for item in receiver.received)
    assert len([key for key in ids if key[0] == "/a"]) == 21
    assert len([key for key in ids if key[0] == "/all"]) == 41
    assert set(ids.values()) == {1}
    assert hooks.counts() == {"delivered": 62}


def test_a_retry_that_delivers_makes_the_receivers_other_waiting_deliveries_due(journal: SqlJournal) -> None:
    hooks = WebhookStore(journal.db, CHAIN.chain_id)
    alice, bob = _hook(hooks, ALICE), _hook(hooks, BOB)
    _notify(journal, *[(NoticeType.TRANSACTION_STATUS, ALICE)] * 3, (NoticeType.TRANSACTION_STATUS, BOB))
    hooks.fan_out()
    for first in hooks.claim_due(slots=8, busy={}, per_webhook=8, lease_s=30):
        hooks.finish(first, state=DeliveryState.PENDING, status=None, error="refused", retry_in_s=3_600)
    journal.db.execute("UPDATE deliveries SET next_at = 0 WHERE id = (SELECT MIN(id) FROM deliveries)")
    (back,) = hooks.claim_due(slots=8, busy={}, per_webhook=8, lease_s=30)

    assert hooks.finish(back, state=DeliveryState.DELIVERED, status=200, error=None, receiver_back=True)

    now_due = hooks.claim_due(slots=8, busy={}, per_webhook=8, lease_s=30)
    assert Counter(d.webhook_id for d in now_due) == {alice: 2}  # Bob's receiver is still waited out
    assert bob not in {d.webhook_id for d in now_due}


def test_one_accounts_hanging_receivers_leave_slots_for_other_accounts_and_global_ones(
    journal: SqlJournal, receiver: Receiver
) -> None:
    settings = WebhookSettings(
        allow_private_urls=True, poll_interval_s=0.02, concurrency=4, per_webhook_in_flight=2, timeout_s=20.0
    )
    assert settings.account_in_flight == 2  # half of concurrency by default
    hooks = WebhookStore(journal.db, CHAIN.chain_id)
    _hook(hooks, ALICE, url=receiver.url("/tarpit1"))
    _hook(hooks, ALICE, url=receiver.url("/tarpit2"))
    _hook(hooks, BOB, url=receiver.url("/fine"))
    _hook(hooks, None, url=receiver.url("/all"))
    receiver.script("/tarpit1", *[HANG] * 50)  # accepts, never answers (until the test ends)
    receiver.script("/tarpit2", *[HANG] * 50)
    took: list[float] = []

    async def run() -> None:
        service = WebhookService(hooks, settings, _no_key)
        service.start()
        try:
            _notify(journal, *[(NoticeType.TRANSACTION_STATUS, ALICE)] * 6)
            service.wake()
            while len(receiver.at("/tarpit1")) + len(receiver.at("/tarpit2")) < 2:
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.3)  # the tarpits hold what they may
            started = time.monotonic()
            _notify(journal, *[(NoticeType.POSITION_DECREASED, BOB)] * 3)
            service.wake()
            while len(receiver.at("/fine")) < 3 and time.monotonic() - started < 8:
                await asyncio.sleep(0.02)
            took.append(time.monotonic() - started)
        finally:
            await service.stop()

    asyncio.run(run())
    assert len(receiver.at("/fine")) == 3
    assert took[0] < 5.0  # well under timeout_s (20 s): not waiting for a tarpit's slot
    assert len(receiver.at("/tarpit1")) + len(receiver.at("/tarpit2")) == 2  # the account's share, held
    assert len(receiver.at("/all")) >= 1  # the global subscriptions' own share flows too


def test_per_account_in_flight_must_stay_below_concurrency() -> None:
    assert WebhookSettings().account_in_flight == 8  # of 16, above per_webhook_in_flight (4)
    assert WebhookSettings(concurrency=8).account_in_flight == 4
    assert WebhookSettings(concurrency=1).account_in_flight == 1
    with pytest.raises(ConfigurationError, match="per_account_in_flight"):
        WebhookSettings(concurrency=4, per_account_in_flight=4)


def test_a_test_message_is_one_at_a_time_per_subscription_and_per_key(
    journal: SqlJournal, receiver: Receiver
) -> None:
    hooks = WebhookStore(journal.db, CHAIN.chain_id)
    first = hooks.get(_hook(hooks, ALICE, url=receiver.url("/slow")))
    second = hooks.get(_hook(hooks, ALICE, url=receiver.url("/other")))
    assert first is not None
    assert second is not None
    receiver.script("/slow", HANG)
    service = WebhookService(hooks, WebhookSettings(allow_private_urls=True, timeout_s=5.0), _no_key)

    async def run() -> list[object]:
        held = asyncio.get_running_loop().create_task(service.send_test(first, key_id=7))
        while not receiver.at("/slow"):
            await asyncio.sleep(0.02)
        refused: list[object] = []
        for hook, key_id in ((first, 8), (second, 7)):  # the same subscription; the same key
            try:
                await service.send_test(hook, key_id=key_id)
            except WebhookTestBusyError as exc:
                refused.append(exc.details["retryAfterS"])
        answered = await service.send_test(second, key_id=8)  # another key, another subscription
        refused.append(answered.status)
        receiver.release()
        refused.append((await held).status)
        await service.stop()
        return refused

    assert asyncio.run(run()) == [6, 6, 200, 200]


def test_an_idle_round_takes_no_write_lock(journal: SqlJournal) -> None:
    if not isinstance(journal.db, SqliteDatabase):
        pytest.skip("SQLite's one writer lock")
    hooks = WebhookStore(journal.db, CHAIN.chain_id)
    _hook(hooks, ALICE)
    _notify(journal, (NoticeType.TRANSACTION_STATUS, BOB))  # not Alice's: nothing becomes due
    service = WebhookService(hooks, WebhookSettings(allow_private_urls=True), _no_key)
    asyncio.run(service.round())  # fans out (moves the cursor) and prunes once
    other = sqlite3.connect(journal.db.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process writes (or holds the lock) meanwhile
    started = time.monotonic()
    try:
        rounds = threading.Thread(target=lambda: [asyncio.run(service.round()) for _ in range(3)])
        rounds.start()
        rounds.join(timeout=3)
        waited = rounds.is_alive()
    finally:
        other.execute("ROLLBACK")
        other.close()
    rounds.join()
    assert not waited
    assert time.monotonic() - started < 3


def test_with_deliveries_disabled_old_notices_are_still_pruned(
    journal: SqlJournal, receiver: Receiver
) -> None:
    _notify(journal, (NoticeType.TRANSACTION_STATUS, ALICE), now=time.time() - 8 * 86_400)
    hooks = WebhookStore(journal.db, CHAIN.chain_id)
    _hook(hooks, ALICE, url=receiver.url("/a"))
    _notify(journal, (NoticeType.TRANSACTION_STATUS, ALICE))
    settings = WebhookSettings(enabled=False, allow_private_urls=True, poll_interval_s=0.02, retention_days=7)
    service = WebhookService(hooks, settings, _no_key)

    async def run() -> str | None:
        service.start()
        try:
            for _ in range(100):
                if journal.db.row("SELECT COUNT(*) AS n FROM notices")["n"] == 1:  # type: ignore[index]
                    break
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.2)
            return service.running
        finally:
            await service.stop()

    assert asyncio.run(run()) == "notices-prune"
    assert journal.db.row("SELECT COUNT(*) AS n FROM notices")["n"] == 1  # type: ignore[index]
    assert receiver.received == []  # nothing delivered from an instance with webhooks disabled
    assert hooks.counts() == {}


def test_the_webhook_id_is_unique_per_database(journal: SqlJournal, tmp_path: Path) -> None:
    fresh = open_journal(StoreLocation(tmp_path / "redeployed.sqlite3"), relaying=True)  # counts from 1 again
    fresh.bind_to_chain(CHAIN, now=1)
    ids: list[str] = []
    try:
        for opened in (journal, fresh):
            hooks = WebhookStore(opened.db, CHAIN.chain_id)
            webhook = _hook(hooks, ALICE)
            _notify(opened, (NoticeType.TRANSACTION_STATUS, ALICE))
            hooks.fan_out()
            (due,) = hooks.claim_due(slots=1, busy={}, per_webhook=1, lease_s=30)
            assert re.fullmatch(r"evt_[0-9a-f]{16}_1", due.msg_id)
            assert json.loads(due.body)["id"] == due.msg_id  # the envelope's id is the webhook-id
            (listed,) = hooks.deliveries(webhook)
            assert listed.to_dict()["noticeId"] == due.msg_id
            ids.append(due.msg_id)
    finally:
        fresh.close()
    assert ids[0] != ids[1]
