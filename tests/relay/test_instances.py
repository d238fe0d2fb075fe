"""Several relayer instances on one PostgreSQL database, in one test process: the leases decide who sends.

Two `RelayService`s share a database and one signer. Only the lease holder numbers and signs; a call made on
the other instance is journaled as an intent, which the holder sends as a record of the same id; copies of a
keyed request sent to both at once get one record; and when the holder stops answering, the other takes the
lease after it expires and carries on from the journal with the next nonce.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from eth_account.signers.local import LocalAccount

from relayer.domain.typed_data import SignedRelay
from relayer.errors import LeaseHolderUnavailableError, SignerUnavailableError
from relayer.services.keeper import Keeper
from relayer.services.relay.leases import KEEPER_LEASE, signer_lease
from relayer.services.relay.service import RelayService
from relayer.services.relay.values import Submission
from tests.blocking import Blocking
from tests.relay.conftest import settle

pytestmark = pytest.mark.only_store("postgres")

LEASE_TTL_S = 1.0


def _start(service: Blocking[RelayService]) -> None:
    """Start the service's loops on its portal's event loop (as the app's lifespan does)."""

    async def start() -> None:
        service.inner.start()

    service.portal.call(start)


def assert_sent_once(holder: Blocking[RelayService]) -> None:
    """Every record settled, and there is exactly one: the call went out once, whichever instance took it."""
    settle(holder)
    assert len(holder.list()) == 1


def _two(
    make_service: Callable[..., Blocking[RelayService]], signer: LocalAccount
) -> tuple[Blocking[RelayService], Blocking[RelayService]]:
    first = make_service(signers=[signer], lease_ttl_s=LEASE_TTL_S, poll_interval_s=0.05)
    first.resume()  # takes the signer's lease
    second = make_service(signers=[signer], lease_ttl_s=LEASE_TTL_S, poll_interval_s=0.05)
    second.resume()  # finds it held
    return first, second


def test_one_instance_holds_the_signer_and_sends_what_the_other_receives(
    relay_accounts: list[LocalAccount],
    make_service: Callable[..., Blocking[RelayService]],
    new_close: Callable[..., SignedRelay],
) -> None:
    signer = relay_accounts[0]
    holder, other = _two(make_service, signer)
    name = signer_lease(signer.address)
    assert holder.leases.holds(name)
    assert not other.leases.holds(name)
    _start(holder)  # its loops claim the intents the other instance journals

    answers = [other.submit_signed(new_close(nonce)) for nonce in range(3)]
    records = [answer.record for answer in answers]
    assert [record.sender for record in records] == [signer.address] * 3
    nonces = sorted(record.nonce for record in records)
    assert nonces == list(range(nonces[0], nonces[0] + 3))  # contiguous, numbered by the holder alone
    settle(holder)
    assert {holder.get(record.id).status.value for record in records} == {"confirmed"}
    assert other.journal.waiting_signers() == set()
    seen = {lease["name"]: lease for lease in holder.leases.describe()}
    assert (seen[name]["mine"], seen[name]["holder"]) == (True, holder.instance)


def test_keyed_copies_sent_to_both_instances_get_one_record(
    relay_accounts: list[LocalAccount],
    make_service: Callable[..., Blocking[RelayService]],
    new_close: Callable[..., SignedRelay],
) -> None:
    holder, other = _two(make_service, relay_accounts[0])
    _start(holder)
    relay = new_close()

    async def race(service: RelayService) -> list[Submission | BaseException]:
        calls = [service.submit_signed(relay, idempotency_key="once") for _ in range(5)]
        return await asyncio.gather(*calls, return_exceptions=True)

    async def both() -> list[Submission | BaseException]:
        first, second = await asyncio.gather(race(holder.inner), race(other.inner))
        return [*first, *second]

    answers = holder.portal.call(both)
    assert [a for a in answers if isinstance(a, BaseException)] == []
    submissions = [a for a in answers if isinstance(a, Submission)]
    assert len({s.record.id for s in submissions}) == 1
    assert sum(s.created for s in submissions) == 1
    assert_sent_once(holder)


def test_when_the_holder_stops_answering_the_other_takes_over_after_the_ttl(
    relay_accounts: list[LocalAccount],
    make_service: Callable[..., Blocking[RelayService]],
    new_close: Callable[..., SignedRelay],
) -> None:
    signer = relay_accounts[0]
    dead, survivor = _two(make_service, signer)
    first = dead.submit_signed(new_close()).record
    settle(dead)
    # `dead` never renews again (as if SIGKILLed): `survivor`'s lease loop takes over once the lease expires.
    started = time.monotonic()
    _start(survivor)
    name = signer_lease(signer.address)
    while not survivor.leases.holds(name):
        assert time.monotonic() - started < 2 * LEASE_TTL_S + 1, "no takeover within 2 x TTL"
        time.sleep(0.05)
    takeover_s = time.monotonic() - started
    assert takeover_s <= 2 * LEASE_TTL_S
    second = survivor.submit_signed(new_close(1)).record
    assert second.nonce == first.nonce + 1  # the journal is the counter, whoever holds the lease
    assert dead.leases.token(name) is None  # the dead one's own clock stopped trusting its lease
    settle(survivor)
    assert survivor.get(second.id).status.value == "confirmed"


def test_one_keeper_across_instances_and_it_fails_over(
    relay_accounts: list[LocalAccount], make_service: Callable[..., Blocking[RelayService]]
) -> None:
    first, second = _two(make_service, relay_accounts[0])
    keepers = [Blocking(Keeper(relay=service.inner), service.portal) for service in (first, second)]
    keepers[0].tick()  # takes the keeper's lease
    assert keepers[1].tick() == []  # the other instance's pass does nothing: one keeper
    assert first.leases.holds(KEEPER_LEASE)
    assert not second.leases.holds(KEEPER_LEASE)
    time.sleep(LEASE_TTL_S + 0.1)  # the first instance stops renewing (as if killed)
    keepers[1].tick()
    assert second.leases.holds(KEEPER_LEASE)
    (lease,) = [lease for lease in second.journal.leases() if lease.name == KEEPER_LEASE]
    assert lease.epoch == 2


def test_a_call_no_holder_takes_in_time_is_withdrawn_unsigned(
    relay_accounts: list[LocalAccount],
    make_service: Callable[..., Blocking[RelayService]],
    new_close: Callable[..., SignedRelay],
) -> None:
    holder, other = _two(make_service, relay_accounts[0])  # the holder's loops never run: it takes nothing
    body = new_close()
    with pytest.raises(LeaseHolderUnavailableError) as refused:
        other.submit_signed(body, idempotency_key="k")
    assert refused.value.retryable
    assert other.journal.waiting_signers() == set()  # withdrawn: no holder can send it later
    assert holder.list() == []
    # Sent again once a holder runs, it is sent once, under the same key.
    _start(holder)
    again = other.submit_signed(body, idempotency_key="k")
    assert again.created
    assert_sent_once(holder)


def test_calls_handed_to_a_stopped_signer_are_refused_not_left_waiting(
    relay_accounts: list[LocalAccount],
    make_service: Callable[..., Blocking[RelayService]],
    new_close: Callable[..., SignedRelay],
) -> None:
    signer = relay_accounts[0]
    holder, other = _two(make_service, signer)
    holder.nonces.stop(signer.address, "another journal sends with this key")
    _start(holder)
    body = new_close()
    started = time.monotonic()
    with pytest.raises(SignerUnavailableError) as refused:
        other.submit_signed(body)
    assert time.monotonic() - started < 2 * LEASE_TTL_S  # refused by the holder, not timed out
    assert refused.value.details["reason"] == "another journal sends with this key"
    assert holder.list() == []
