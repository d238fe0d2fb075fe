"""The leases of one instance, on both stores: a lease that lapsed on this process's clock (its loop slow, or
not started, as here) is renewed by the next send or round before anything is numbered, never handed over as
an intent nobody sends."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount

from relayer.domain.status import TxStatus
from relayer.domain.typed_data import SignedRelay
from relayer.errors import SignerUnavailableError, StoreUnavailableError
from relayer.services.relay.leases import signer_lease
from relayer.services.relay.service import RelayService
from relayer.services.relay.values import SenderHooks
from tests.blocking import Blocking
from tests.relay.conftest import settle

TTL_S = 0.5


def test_a_lapsed_lease_is_renewed_by_the_next_send_and_round(
    relay_accounts: list[LocalAccount],
    make_service: Callable[..., Blocking[RelayService]],
    new_close: Callable[..., SignedRelay],
) -> None:
    signer = relay_accounts[0]
    service = make_service(signers=[signer], lease_ttl_s=TTL_S)
    service.resume()
    name = signer_lease(signer.address)
    assert service.leases.holds(name)
    time.sleep(TTL_S)  # no loop renews it meanwhile
    assert not service.leases.holds(name)

    record = service.submit_signed(new_close()).record
    assert record.sender == signer.address  # sent here, under the renewed (or retaken) lease
    time.sleep(TTL_S)
    settle(service)  # each round renews before it acts
    assert service.get(record.id).status is TxStatus.CONFIRMED
    held = [lease.name for lease in service.journal.leases() if not lease.name.startswith("instance:")]
    assert held == sorted([name, "raw"])


@pytest.mark.only_store("sqlite")  # the scenario is two journals: two files
def test_a_signer_another_journal_sends_with_is_stopped_not_jammed(
    tmp_path: Path,
    relay_accounts: list[LocalAccount],
    make_service: Callable[..., Blocking[RelayService]],
    new_close: Callable[..., SignedRelay],
) -> None:
    """Two relayers with their own journals and one key: the second finds, when it takes the signer, that
    the chain is past everything its journal numbered; it says so and sends nothing more from it."""
    signer = relay_accounts[0]

    def close(service: Blocking[RelayService], nonce: int) -> None:
        service.submit_signed(new_close(nonce))
        settle(service)

    ours = make_service(signers=[signer], journal_path=tmp_path / "ours.sqlite3")
    close(ours, 0)
    theirs = make_service(signers=[signer], journal_path=tmp_path / "theirs.sqlite3")
    close(theirs, 1)  # numbered from the chain: its journal knew nothing
    close(theirs, 2)

    restarted = make_service(signers=[signer], journal_path=tmp_path / "ours.sqlite3")
    restarted.resume()
    (status,) = restarted.signers_status()
    assert status.stopped is not None
    assert "another journal" in status.stopped
    body = new_close(3)
    with pytest.raises(SignerUnavailableError) as refused:
        restarted.submit_signed(body)
    assert refused.value.http_status == 503
    assert len(restarted.list()) == 1  # nothing new journaled for the stopped signer


def test_a_database_failure_after_the_commit_still_answers_the_record(
    relay_accounts: list[LocalAccount],
    make_service: Callable[..., Blocking[RelayService]],
    new_close: Callable[..., SignedRelay],
) -> None:
    """Past the commit the call is on its way: a client told `store_unavailable` would send it again."""

    def database_away(*_: object) -> None:
        raise StoreUnavailableError("the database did not answer")

    service = make_service(hooks=SenderHooks(after_broadcast=database_away))
    body = new_close()
    record = service.submit_signed(body).record
    assert record.status is TxStatus.QUEUED  # its broadcast bookkeeping waits for the next round
    settle(service)  # the rounds find it mined (the node had it)
    assert service.get(record.id).status is TxStatus.CONFIRMED
    assert len(service.list()) == 1
