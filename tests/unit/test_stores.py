"""The journal and key store on both databases: the same assertions against SQLite and PostgreSQL.

What several instances rely on is checked here at the store, before any service uses it: a nonce is unique
per signer, a lease is held by one holder at a time and fences writes by its epoch, an idempotency key is
claimed by one request at a time, and an intent is claimed and settled exactly once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from relayer.domain.fees import Fees
from relayer.domain.records import CallPlan, Intent
from relayer.domain.status import RecordKind, TxStatus
from relayer.errors import ConfigurationError, StoreUnavailableError
from relayer.services.relay.leases import Leases, signer_lease
from relayer.stores import migrations
from relayer.stores.journal import SqlJournal
from relayer.stores.journal_chains import ChainBinding
from relayer.stores.journal_port import JournalConflict, LeaseLost
from relayer.stores.location import StoreLocation, open_journal, open_key_store
from relayer.stores.postgres import BREAKER_S
from tests.relay.proxy import TcpProxy
from tests.relay.records import SENDER, queued_record

CHAIN = ChainBinding(31337, "0x" + "aa" * 32)
OWNER = "0x" + "0e" * 20


@pytest.fixture
def journal(store: StoreLocation) -> Iterator[SqlJournal]:
    opened = open_journal(store, relaying=True)
    opened.bind_to_chain(CHAIN, now=1)
    yield opened
    opened.close()


def _intent(intent_id: str, *, key: str | None = None, signer: str = SENDER) -> Intent:
    plan = CallPlan(RecordKind.CLOSE, SENDER, b"\x02", 90_000, Fees(30, 2), "h", key, OWNER)
    return Intent(intent_id, CHAIN.chain_id, signer, plan, created_at=time.time())


def test_records_round_trip_and_a_signer_nonce_is_unique(journal: SqlJournal) -> None:
    with journal.write() as writer:
        writer.insert(queued_record("a", 0, idempotency_key="k1", owner=OWNER))
        assert writer.max_nonce(SENDER) == 0
    record = journal.get("a")
    assert record is not None
    assert (record.nonce, record.data, record.attempts[0].raw_tx) == (0, b"\x01", b"raw")
    # Times are read back as the drivers give them, without conversion: seconds as floats on both.
    assert all(
        type(t) is float for t in (record.created_at, record.updated_at, record.attempts[0].created_at)
    )
    assert journal.by_idempotency_key("k1") == record
    assert journal.by_hash("0xa") == record
    with pytest.raises(JournalConflict) as conflict, journal.write() as writer:
        writer.insert(queued_record("b", 0))
    assert conflict.value.constraint == "signer_nonce"
    with pytest.raises(JournalConflict) as conflict, journal.write() as writer:
        writer.insert(queued_record("c", 1, idempotency_key="k1"))
    assert conflict.value.constraint == "idempotency_key"
    with pytest.raises(JournalConflict) as conflict, journal.write() as writer:
        writer.insert(queued_record("d", 2, owner=OWNER))
    assert conflict.value.constraint == "request_owner"
    assert [r.id for r in journal.pending()] == ["a"]
    assert journal.transition("a", TxStatus.QUEUED, TxStatus.SUBMITTED, now=2.0)
    assert not journal.transition("a", TxStatus.QUEUED, TxStatus.SUBMITTED, now=3.0)
    assert journal.nonce_summary() == {SENDER: (0, 1)}


def test_a_lease_has_one_holder_and_fences_writes_by_its_epoch(journal: SqlJournal) -> None:
    first = journal.acquire_lease("signer:x", "i0", 30.0)
    assert first is not None
    assert first.epoch == 1
    assert type(first.expires_at) is float
    assert type(journal.database_time()) is float
    assert journal.acquire_lease("signer:x", "i1", 30.0) is None  # held: nobody else takes it
    again = journal.acquire_lease("signer:x", "i0", 30.0)  # its own holder: extended at the same epoch
    assert again is not None
    assert (again.epoch, again.expires_at >= first.expires_at) == (1, True)
    renewed = journal.renew_lease(first, 30.0)
    assert renewed is not None
    assert renewed.expires_at >= first.expires_at
    with journal.write() as writer:
        writer.fence(first)
        writer.insert(queued_record("a", 0))

    journal.release_lease(first)
    second = journal.acquire_lease("signer:x", "i1", 30.0)
    assert second is not None
    assert second.epoch == 2
    assert journal.renew_lease(first, 30.0) is None  # the old epoch is over

    def insert_fenced_by_the_old_epoch() -> None:
        with journal.write() as writer:
            writer.insert(queued_record("b", 1))
            writer.fence(first)

    with pytest.raises(LeaseLost):
        insert_fenced_by_the_old_epoch()
    assert journal.get("b") is None  # nothing of the fenced write was kept
    forced = journal.acquire_lease("signer:x", "i2", 30.0, force=True)
    assert forced is not None
    assert forced.epoch == 3
    assert [(lease.name, lease.holder, lease.epoch) for lease in journal.leases()] == [("signer:x", "i2", 3)]


def test_an_expired_lease_is_taken_over(journal: SqlJournal) -> None:
    held = journal.acquire_lease("keeper", "i0", 0.2)
    assert held is not None
    assert journal.acquire_lease("keeper", "i1", 5.0) is None
    time.sleep(0.3)
    taken = journal.acquire_lease("keeper", "i1", 5.0)
    assert taken is not None
    assert (taken.holder, taken.epoch) == ("i1", 2)
    assert abs(journal.database_time() - time.time()) < 5


def test_an_idempotency_key_is_claimed_by_one_request_until_its_record_exists(journal: SqlJournal) -> None:
    assert journal.claim_key("k", "h", "req-1", stale_after_s=60) is None
    assert journal.claim_key("k", "h", "req-2", stale_after_s=60) == "h"  # another request works on it
    assert journal.claim_key("k", "h", "req-1", stale_after_s=60) is None  # its own claim, again
    with journal.write() as writer:
        writer.insert(queued_record("a", 0, idempotency_key="k"))  # the record ends the claim
    assert journal.claim_key("k", "h2", "req-2", stale_after_s=60) is None
    journal.release_key("k", "req-2")
    assert journal.claim_key("k", "h3", "req-3", stale_after_s=60) is None
    assert journal.renew_key("k", "req-3")  # its request is still being worked on
    assert not journal.renew_key("k", "req-2")  # not this one's claim
    time.sleep(0.05)
    assert journal.claim_key("k", "h3", "req-4", stale_after_s=0.01) is None  # stale: taken over
    assert not journal.renew_key("k", "req-3")  # it lost it


def test_an_intent_is_claimed_once_and_becomes_its_record_or_fails(journal: SqlJournal) -> None:
    journal.add_intent(_intent("i1", key="k1"))
    journal.add_intent(_intent("i2"))
    with pytest.raises(JournalConflict) as conflict:
        journal.add_intent(_intent("i3", key="k1"))
    assert conflict.value.constraint == "idempotency_key"
    assert journal.waiting_signers() == {SENDER}
    found = journal.intent_by_key("k1")
    assert found is not None
    assert found.plan.fees == Fees(30, 2)
    assert found.plan.account == OWNER
    with journal.write() as writer:
        claimed = writer.next_intent(SENDER)
        assert claimed is not None
        assert claimed.id == "i1"
        writer.insert(dataclasses.replace(queued_record("i1", 0), idempotency_key="k1"))
        writer.settle_intent("i1", None, now=2.0)
    assert journal.intent("i1") is None
    assert journal.get("i1") is not None
    with journal.write() as writer:
        claimed = writer.next_intent(SENDER)
        assert claimed is not None
        writer.settle_intent(claimed.id, {"code": "relayer_out_of_funds", "message": "m"}, now=3.0)
    failed = journal.intent("i2")
    assert failed is not None
    assert (failed.state, failed.error) == (Intent.FAILED, {"code": "relayer_out_of_funds", "message": "m"})
    with journal.write() as writer:
        assert writer.next_intent(SENDER) is None
    assert journal.waiting_signers() == set()


def test_api_keys_live_in_the_same_database(store: StoreLocation) -> None:
    keys = open_key_store(store, create=True)
    try:
        made = keys.insert_api_key(
            key_hash="ab" * 32, prefix="rk_ab", label="bot", account=OWNER, scopes=frozenset(), now=5
        )
        again = keys.insert_api_key(
            key_hash="cd" * 32, prefix="rk_cd", label="bot", account=OWNER, scopes=frozenset(), now=6
        )
        assert again.key_id > made.key_id
        assert keys.api_key_by_hash("ab" * 32) == made
        assert keys.revoke_api_keys_labelled(["bot"], now=7) == 2
        assert [key.revoked_at for key in keys.api_keys()] == [7, 7]
    finally:
        keys.close()


def test_a_database_at_a_newer_schema_is_refused(store: StoreLocation) -> None:
    journal = open_journal(store)
    if store.database_url is None:
        journal.db.execute(f"PRAGMA user_version = {migrations.SCHEMA_VERSION + 1}")
    else:
        journal.db.execute("UPDATE relayer_schema SET version = ?", (migrations.SCHEMA_VERSION + 1,))
    journal.close()
    with pytest.raises(ConfigurationError, match="newer than this relayer knows") as refused:
        open_journal(store)
    assert refused.value.details["schemaVersion"] == migrations.SCHEMA_VERSION + 1


@pytest.mark.only_store("postgres")
def test_a_database_cut_is_a_503_and_later_statements_fail_fast_until_it_is_back(
    store: StoreLocation,
) -> None:
    """The store runs on the event loop: a cut must cost one timeout, not one per statement."""
    assert store.database_url is not None
    parts = urlsplit(store.database_url)
    proxy = TcpProxy(parts.port or 5432)
    proxy.start()
    journal = open_journal(
        StoreLocation(store.journal_path, store.database_url.replace(f":{parts.port}/", f":{proxy.port}/"))
    )
    try:
        journal.bind_to_chain(CHAIN, now=1)
        assert journal.pending() == []
        proxy.stop()  # every connection dropped, new ones refused
        with pytest.raises(StoreUnavailableError) as away:
            journal.pending()
        assert away.value.http_status == 503
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError):
            journal.pending()
        assert time.monotonic() - started < 0.5  # the breaker answered, not another timeout
        proxy.start()
        time.sleep(BREAKER_S + 0.1)
        assert journal.pending() == []  # back: pooled connections replaced as they are found broken
    finally:
        proxy.stop()
        journal.close()


@pytest.mark.only_store("postgres")
def test_live_instances_share_the_signers_and_take_a_dead_ones_share(journal: SqlJournal) -> None:
    """Four signers, three instances: each holds one or two, every signer exactly once; when one stops
    renewing, the others take its signers once its leases expire."""
    signers = [signer_lease("0x" + f"{n:02x}" * 20) for n in range(4)]

    async def nothing(name: str) -> None:
        return None

    instances = [Leases(journal, f"i{n}", 0.6, list(signers), nothing) for n in range(3)]

    async def rounds(members: list[Leases], count: int) -> None:
        for _ in range(count):
            for member in members:
                await member.maintain()
            await asyncio.sleep(0.05)

    def held_by() -> dict[str, list[str]]:
        return {m.instance: [name for name in signers if m.holds(name)] for m in instances}

    asyncio.run(rounds(instances, 4))
    shares = held_by()
    assert sorted(name for held in shares.values() for name in held) == sorted(signers)  # each once
    assert sorted(len(held) for held in shares.values()) == [1, 1, 2]

    survivors = instances[:2]  # the third stops renewing, as if killed
    orphaned = shares["i2"]
    asyncio.run(rounds(survivors, 1))
    time.sleep(0.7)  # its leases and its presence expire
    asyncio.run(rounds(survivors, 4))
    after = {m.instance: [name for name in signers if m.holds(name)] for m in survivors}
    assert sorted(name for held in after.values() for name in held) == sorted(signers)
    assert sorted(len(held) for held in after.values()) == [2, 2]
    assert set(orphaned) <= {name for held in after.values() for name in held}
