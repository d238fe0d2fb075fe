"""`POST /api/relay/raw` takes only what could be mined now, and lets go of what was not (issue 11).

The attack measured before: transactions that can never be mined (a nonce 10,000 ahead; a zero-balance sender
with `maxFeePerGas` 0) were accepted, stayed `queued` forever, were re-broadcast every loop round and after
every restart, and the idle server logged a WARNING per record per round. Now: a nonce within
`raw_nonce_window` of the sender's next one, a max fee at or above the latest base fee, a balance that pays,
at most `raw_max_pending_per_sender` unmined raw records per sender, and a time to live (`raw_ttl_s`) after
which a record is `expired` and never broadcast again; a refusal repeated round after round is logged once.
Every test runs on eth-tester and anvil unless it says why not, and on SQLite and PostgreSQL.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient

from relayer.chain.connect import Chain
from relayer.chain.deploy import Deployment
from relayer.chain.transact import build_transaction
from relayer.domain import calldata
from relayer.domain.records import RelayRecord
from relayer.domain.status import TxStatus
from relayer.services.relay.service import RelayService
from tests.blocking import Blocking
from tests.conftest import units
from tests.relay.conftest import FakeClock, http_client

TTL_S = 600
"""`RelaySettings.raw_ttl_s`'s default, given explicitly so the tests read on their own."""


@pytest.fixture(autouse=True)
def _empty_pool(chain: Chain) -> Iterator[None]:
    """anvil keeps a transaction after a nonce gap in its pool across a snapshot revert: dropped after each
    test, or it would be mined in a later one once that account's gap is filled."""
    yield
    if not chain.is_embedded:
        with chain.lock:
            chain.w3.provider.make_request("anvil_dropAllTransactions", [])  # type: ignore[arg-type]


def _error(response: Any) -> tuple[int, str | None]:
    """(status, error code); a record answered instead (202) has no error code, or its node's note."""
    return response.status_code, (response.json().get("error") or {}).get("code")


def _record(service: Blocking[RelayService], record_id: str) -> RelayRecord:
    record: RelayRecord | None = service.journal.get(record_id)
    assert record is not None
    return record


def _next_nonce(chain: Chain, account: LocalAccount) -> int:
    with chain.lock:
        return int(chain.w3.eth.get_transaction_count(account.address, "latest"))


def _signed_close(
    chain: Chain, owner: LocalAccount, deployment: Deployment, position_id: bytes, **overrides: Any
) -> str:
    """A user-signed partial close of `position_id` (0.1), with `overrides` (nonce, fees) applied."""
    data = calldata.close_position(position_id, units("0.1"), 0)
    with chain.lock:
        tx = build_transaction(chain.w3, owner.address, deployment.address, data)
    tx.update(overrides)
    return "0x" + bytes(owner.sign_transaction(tx).raw_transaction).hex()


def _send_directly(chain: Chain, account: LocalAccount, nonce: int) -> None:
    """The sender's own zero-value self-transfer at `nonce`, sent to the node without the relayer, mined."""
    with chain.lock:
        tx = build_transaction(chain.w3, account.address, account.address, b"", nonce=nonce)
        tx_hash = chain.w3.eth.send_raw_transaction(account.sign_transaction(tx).raw_transaction)
        chain.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)


def test_a_nonce_too_far_ahead_is_refused_and_one_within_the_window_taken(
    chain: Chain,
    accounts: list[LocalAccount],
    deployment: Deployment,
    open_position: Callable[..., bytes],
    client: TestClient,
    service: Blocking[RelayService],
) -> None:
    trader = accounts[1]
    position_id = open_position(owner=trader)
    nonce = _next_nonce(chain, trader)
    window = service.settings.raw_nonce_window

    far = _signed_close(chain, trader, deployment, position_id, nonce=nonce + 10_000)
    response = client.post("/api/relay/raw", json={"transaction": far})
    assert _error(response) == (422, "nonce_too_far")  # before: 202, then queued forever
    assert response.json()["error"]["details"] == {
        "sender": trader.address,
        "nonce": nonce + 10_000,
        "nextNonce": nonce,
        "window": window,
    }
    just_past = _signed_close(chain, trader, deployment, position_id, nonce=nonce + window + 1)
    assert _error(client.post("/api/relay/raw", json={"transaction": just_past})) == (422, "nonce_too_far")
    assert service.journal.all() == []  # nothing journaled, nothing broadcast

    at_the_edge = _signed_close(chain, trader, deployment, position_id, nonce=nonce + window)
    assert client.post("/api/relay/raw", json={"transaction": at_the_edge}).status_code == 202
    assert [r.nonce for r in service.journal.all()] == [nonce + window]


def test_a_fee_below_the_base_fee_or_a_sender_who_cannot_pay_is_the_senders_problem(
    chain: Chain,
    accounts: list[LocalAccount],
    deployment: Deployment,
    open_position: Callable[..., bytes],
    client: TestClient,
    service: Blocking[RelayService],
) -> None:
    trader = accounts[1]
    position_id = open_position(owner=trader)
    with chain.lock:
        base_fee = int(chain.w3.eth.get_block("latest")["baseFeePerGas"])
    assert base_fee > 0

    # A funded sender offering less than the base fee: no block would take it.
    cheap = _signed_close(chain, trader, deployment, position_id, maxFeePerGas=0, maxPriorityFeePerGas=0)
    response = client.post("/api/relay/raw", json={"transaction": cheap})
    assert _error(response) == (422, "fee_below_base_fee")
    assert response.json()["error"]["details"] == {"maxFeePerGas": "0", "baseFeePerGas": str(base_fee)}

    # A zero-balance sender (the measured attack: maxFeePerGas 0), then one offering a real fee.
    broke: LocalAccount = Account.create()
    data = calldata.close_position(position_id, units("0.1"), 0)
    with chain.lock:
        chain_id = chain.w3.eth.chain_id
    common = {"chainId": chain_id, "to": deployment.address, "data": data, "value": 0}
    for fee in (0, 10 * base_fee):
        tx: dict[str, Any] = {
            **common,
            "nonce": 0,
            "gas": 200_000,
            "maxFeePerGas": fee,
            "maxPriorityFeePerGas": 0,
        }
        signed = "0x" + bytes(broke.sign_transaction(tx).raw_transaction).hex()
        status, code = _error(client.post("/api/relay/raw", json={"transaction": signed}))
        assert 400 <= status < 500, code  # the sender's problem: never 503 `relayer_out_of_funds`
        assert code == ("fee_below_base_fee" if fee == 0 else "disallowed_transaction")
    assert service.journal.all() == []


def test_a_sender_may_have_only_so_many_raw_transactions_waiting(
    chain: Chain,
    accounts: list[LocalAccount],
    deployment: Deployment,
    open_position: Callable[..., bytes],
    make_service: Callable[..., Blocking[RelayService]],
    clock: FakeClock,
) -> None:
    trader, other = accounts[1], accounts[2]
    position_id = open_position(owner=trader)
    other_position = open_position(owner=other)
    service = make_service(raw_max_pending_per_sender=2, raw_ttl_s=TTL_S)
    client = http_client(service)
    nonce = _next_nonce(chain, trader)

    # Nonces after a gap: never mined while the gap stays (eth-tester refuses them, anvil holds them).
    for ahead in (1, 2):
        signed = _signed_close(chain, trader, deployment, position_id, nonce=nonce + ahead)
        assert client.post("/api/relay/raw", json={"transaction": signed}).status_code == 202
    third = _signed_close(chain, trader, deployment, position_id, nonce=nonce + 3)
    response = client.post("/api/relay/raw", json={"transaction": third})
    assert _error(response) == (429, "too_many_pending")
    assert response.json()["error"]["details"] == {"sender": trader.address, "pending": 2, "limit": 2}
    # The cap is per sender: another sender is not held up.
    others = _signed_close(chain, other, deployment, other_position)
    assert client.post("/api/relay/raw", json={"transaction": others}).status_code == 202

    # Once the waiting ones expired, the sender may send again.
    clock.advance(TTL_S)
    service.tick()
    assert client.post("/api/relay/raw", json={"transaction": third}).status_code == 202


def test_an_expired_raw_record_is_never_broadcast_again_not_even_after_a_restart(
    chain: Chain,
    accounts: list[LocalAccount],
    deployment: Deployment,
    open_position: Callable[..., bytes],
    make_service: Callable[..., Blocking[RelayService]],
    clock: FakeClock,
) -> None:
    trader = accounts[1]
    position_id = open_position(owner=trader)
    service = make_service(raw_ttl_s=TTL_S)
    client = http_client(service)
    nonce = _next_nonce(chain, trader)
    gapped = _signed_close(chain, trader, deployment, position_id, nonce=nonce + 1)
    record_id = client.post("/api/relay/raw", json={"transaction": gapped}).json()["id"]

    clock.advance(TTL_S - 1)
    service.tick()
    assert _record(service, record_id).status in (TxStatus.QUEUED, TxStatus.SUBMITTED)  # not yet
    clock.advance(1)
    service.tick()
    record = _record(service, record_id)
    assert record.status is TxStatus.EXPIRED
    assert record.error is not None
    assert record.error["code"] == "raw_transaction_expired"
    assert record.error["details"]["ttlS"] == TTL_S
    assert service.journal.pending() == []

    # The node forgets it (anvil held it in its pool; eth-tester never took it), then the sender fills the
    # gap: from here on, any broadcast of the expired bytes would be mined at once.
    if not chain.is_embedded:
        with chain.lock:
            chain.w3.provider.make_request("anvil_dropAllTransactions", [])  # type: ignore[arg-type]
    _send_directly(chain, trader, nonce)
    service.tick()
    restarted = make_service(raw_ttl_s=TTL_S)  # the same journal: a restart
    assert restarted.resume() == 0
    restarted.tick()
    assert _next_nonce(chain, trader) == nonce + 1  # the expired transaction was never sent again
    assert _record(restarted, record_id).status is TxStatus.EXPIRED
    # The same bytes sent again answer the record they made: expired, nothing sent.
    again = http_client(restarted).post("/api/relay/raw", json={"transaction": gapped})
    assert (again.status_code, again.json()["status"]) == (200, "expired")
    restarted.tick()
    assert _next_nonce(chain, trader) == nonce + 1


@pytest.mark.only_backend("anvil")
def test_a_raw_transaction_mined_after_all_is_found_not_expired(
    chain: Chain,
    accounts: list[LocalAccount],
    deployment: Deployment,
    open_position: Callable[..., bytes],
    make_service: Callable[..., Blocking[RelayService]],
    clock: FakeClock,
) -> None:
    """anvil only: it holds a transaction after a nonce gap and mines it once the gap is filled (eth-tester
    refuses it, so there it can only be mined by a broadcast of ours)."""
    trader = accounts[1]
    position_id = open_position(owner=trader)
    service = make_service(raw_ttl_s=TTL_S)
    client = http_client(service)
    nonce = _next_nonce(chain, trader)
    gapped = _signed_close(chain, trader, deployment, position_id, nonce=nonce + 1)
    record_id = client.post("/api/relay/raw", json={"transaction": gapped}).json()["id"]
    assert _record(service, record_id).status is TxStatus.SUBMITTED  # anvil took it into its pool
    _send_directly(chain, trader, nonce)  # the gap filled: anvil mines the held transaction too
    assert _next_nonce(chain, trader) == nonce + 2

    clock.advance(TTL_S)
    # Expiry reads the receipts first (even when asked directly, as a round with a stale nonce read would).
    assert service.sender.expire_raw(_record(service, record_id)) is False
    assert _record(service, record_id).status is TxStatus.MINED
    service.tick()
    assert _record(service, record_id).status is TxStatus.CONFIRMED


@pytest.mark.only_backend("eth-tester")
def test_a_refusal_repeated_every_round_is_logged_once(
    chain: Chain,
    accounts: list[LocalAccount],
    deployment: Deployment,
    open_position: Callable[..., bytes],
    client: TestClient,
    service: Blocking[RelayService],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """eth-tester only: it refuses a transaction after a nonce gap on every broadcast (anvil holds it)."""
    trader = accounts[1]
    position_id = open_position(owner=trader)
    nonce = _next_nonce(chain, trader)
    gapped = _signed_close(chain, trader, deployment, position_id, nonce=nonce + 1)
    with caplog.at_level(logging.DEBUG, logger="relayer.relay"):
        record_id = client.post("/api/relay/raw", json={"transaction": gapped}).json()["id"]
        for _ in range(5):
            service.tick()
    refusals = [r for r in caplog.records if "node refused" in r.getMessage() and record_id in r.getMessage()]
    assert len(refusals) == 6  # the broadcast on arrival, then one per round: each still sent
    assert [r.levelno for r in refusals].count(logging.WARNING) == 1  # but news only once
    record = _record(service, record_id)
    assert record.status is TxStatus.QUEUED
    assert record.error is not None
    assert record.error["details"]["nodeKind"] == "nonce_gap"
