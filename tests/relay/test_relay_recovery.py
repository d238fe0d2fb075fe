"""What makes submission trustworthy: 100 concurrent relays without a gap or a duplicate, replacement of a
stuck transaction, expiry that frees the nonce, restart at the worst moments, and a node that goes away."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from web3.types import RPCEndpoint, TxReceipt

from relayer.chain.connect import Chain, rpc_chain
from relayer.chain.transact import send
from relayer.chain.vault import VaultReader
from relayer.domain import calldata, sponsorship
from relayer.domain.status import AttemptKind, TxStatus
from relayer.domain.typed_data import parse_signed_relay
from relayer.errors import (
    ChainUnavailableError,
    FeeCapReachedError,
    InvalidNonceError,
    RequestExpiredBeforeSendError,
    restore_error,
)
from relayer.services.relay.service import RelayService
from relayer.services.relay.values import SenderHooks
from tests.blocking import Blocking
from tests.conftest import units
from tests.relay.conftest import Crash, FakeClock, crash, http_client, settle, until_crash
from tests.relay.proxy import TcpProxy


def rpc(chain: Chain, method: str, *params: Any) -> Any:
    return chain.w3.provider.make_request(RPCEndpoint(method), list(params))


@contextmanager
def automine_off(chain: Chain) -> Iterator[None]:
    """Hold transactions in the pool until `mine(chain)`: a stuck transaction, deterministically."""
    if chain.is_embedded:
        chain.tester.disable_auto_mine_transactions()
    else:
        rpc(chain, "evm_setAutomine", False)
    try:
        yield
    finally:
        if chain.is_embedded:
            chain.tester.enable_auto_mine_transactions()
        else:
            rpc(chain, "evm_setAutomine", True)


def mine(chain: Chain) -> None:
    if chain.is_embedded:
        chain.tester.mine_blocks()
    else:
        rpc(chain, "evm_mine")


def nonce_of(chain: Chain, address: str) -> int:
    return chain.w3.eth.get_transaction_count(to_checksum_address(address))


def test_100_concurrent_relays_no_gap_no_duplicate(
    chain: Chain,
    accounts: list[LocalAccount],
    relay_accounts: list[LocalAccount],
    vault: VaultReader,
    transact: Callable[[LocalAccount, bytes], TxReceipt],
    open_position: Callable[..., bytes],
    service: Blocking[RelayService],
) -> None:
    trader = accounts[1]
    for signer in relay_accounts:  # the relayer closes for the trader as an approved operator
        transact(trader, calldata.set_operator(signer.address, True))
    position_id = open_position(owner=trader, size="1")
    start: dict[str, int] = {a.address: nonce_of(chain, a.address) for a in relay_accounts}
    service.resume()
    close = calldata.close_position(position_id, units("0.001"), 0)

    with ThreadPoolExecutor(max_workers=16) as pool:
        submissions = list(pool.map(lambda _: service.submit_call(close), range(100)))
    settle(service, rounds=20)

    records = service.list(limit=1_000)
    assert len(records) == 100 == len({s.record.id for s in submissions})
    assert {r.status for r in records} == {TxStatus.CONFIRMED}
    by_signer: dict[str, list[int]] = defaultdict(list)
    for record in records:
        by_signer[record.sender].append(record.nonce)
    assert len(by_signer) == 2  # work spread across both signers
    for address, nonces in by_signer.items():
        assert sorted(nonces) == list(range(start[address], start[address] + len(nonces)))  # contiguous
        assert nonce_of(chain, address) == start[address] + len(nonces)  # each mined once, none extra
    mined = [r.mined.tx_hash for r in records if r.mined]
    assert len(set(mined)) == 100
    assert vault.position(position_id).size == units("0.9")


def test_stuck_transaction_is_replaced_with_bumped_fees(
    chain: Chain,
    accounts: list[LocalAccount],
    open_position: Callable[..., bytes],
    service: Blocking[RelayService],
    clock: FakeClock,
    signed_body: Callable[..., dict[str, Any]],
    vault: VaultReader,
) -> None:
    position_id = open_position(owner=accounts[1])
    body = signed_body(accounts[1], position_id, sizeDelta="0.5")
    with automine_off(chain):
        record = service.submit_signed(parse_signed_relay(body)).record
        assert record.status == TxStatus.SUBMITTED
        service.tick()
        assert len(service.get(record.id).attempts) == 1  # not yet due
        clock.advance(service.settings.replace_after_s)
        service.tick()
        first, bump = service.get(record.id).attempts
        assert bump.kind == AttemptKind.BUMP
        assert bump.max_fee_per_gas_wei * 10 >= first.max_fee_per_gas_wei * 11
        assert bump.max_priority_fee_per_gas_wei * 10 >= first.max_priority_fee_per_gas_wei * 11
        # The sponsorship charge follows the bump: in flight, the owner's day counts the bump's worst case.
        assert _owner_day_spent(service, accounts[1].address) == record.gas_limit * bump.max_fee_per_gas_wei
        mine(chain)
    settle(service)
    final = service.get(record.id)
    assert final.mined is not None  # settled at what the chain took
    spent = final.mined.gas_used * final.mined.effective_gas_price_wei
    assert _owner_day_spent(service, accounts[1].address) == spent
    assert final.status == TxStatus.CONFIRMED
    assert final.mined is not None
    assert final.mined.tx_hash == bump.tx_hash
    assert final.hashes == [first.tx_hash, bump.tx_hash]  # every hash kept
    assert nonce_of(chain, final.sender) == final.nonce + 1
    assert vault.position(position_id).size == units("0.5")


def test_fee_cap_stops_bumping_but_not_the_queue(
    chain: Chain,
    accounts: list[LocalAccount],
    open_position: Callable[..., bytes],
    make_service: Callable[..., Blocking[RelayService]],
    clock: FakeClock,
    signed_body: Callable[..., dict[str, Any]],
) -> None:
    position_id = open_position(owner=accounts[1])
    base_fee = int(chain.w3.eth.get_block("latest")["baseFeePerGas"])
    service = make_service(max_fee_per_gas_wei=base_fee + 1)  # room to be mined, none to bump
    body = signed_body(accounts[1], position_id)
    with automine_off(chain):
        record = service.submit_signed(parse_signed_relay(body)).record
        clock.advance(service.settings.replace_after_s)
        service.tick()
        stuck = service.get(record.id)
        assert len(stuck.attempts) == 1
        assert stuck.error is not None
        assert isinstance(restore_error(stuck.error), FeeCapReachedError)  # a note: the record waits
        mine(chain)
    settle(service)
    assert service.get(record.id).status == TxStatus.CONFIRMED


def test_expired_request_frees_its_nonce_with_a_noop(
    chain: Chain,
    accounts: list[LocalAccount],
    relay_accounts: list[LocalAccount],
    open_position: Callable[..., bytes],
    service: Blocking[RelayService],
    signed_body: Callable[..., dict[str, Any]],
    vault: VaultReader,
) -> None:
    trader = accounts[1]
    position_id = open_position(owner=trader)
    deadline = int(chain.w3.eth.get_block("latest")["timestamp"]) + 60
    body = signed_body(trader, position_id, deadline=str(deadline))
    with automine_off(chain):
        record = service.submit_signed(parse_signed_relay(body)).record
        if not chain.is_embedded:  # anvil would mine it with the time jump; eth-tester's jump mines nothing
            rpc(chain, "anvil_dropTransaction", record.latest.tx_hash)
        chain.advance_time(120)
        service.tick()
        noop = service.get(record.id).latest
        assert noop.kind == AttemptKind.NOOP
        mine(chain)
    settle(service)
    final = service.get(record.id)
    assert final.status == TxStatus.EXPIRED
    assert final.error is not None
    assert isinstance(restore_error(final.error), RequestExpiredBeforeSendError)
    assert final.mined is not None
    assert final.mined.tx_hash == noop.tx_hash
    assert nonce_of(chain, final.sender) == final.nonce + 1  # the nonce is used: no gap
    assert vault.position(position_id).size == units("1")  # the expired close never ran
    # The queue moves on: the next relay from the same signers goes through.
    assert vault.contract.functions.nonces(trader.address).call() == 0
    again = service.submit_signed(parse_signed_relay(signed_body(trader, position_id))).record
    settle(service)
    assert service.get(again.id).status == TxStatus.CONFIRMED


def test_restart_between_journal_write_and_broadcast(
    chain: Chain,
    accounts: list[LocalAccount],
    open_position: Callable[..., bytes],
    make_service: Callable[..., Blocking[RelayService]],
    signed_body: Callable[..., dict[str, Any]],
    vault: VaultReader,
) -> None:
    position_id = open_position(owner=accounts[1])
    crashing = make_service(hooks=SenderHooks(after_journal=crash), lease_ttl_s=CRASHED_LEASE_TTL_S)
    body = signed_body(accounts[1], position_id)
    with pytest.raises(Crash):
        until_crash(crashing, "submit_signed", parse_signed_relay(body))
    (journaled,) = crashing.list()
    assert journaled.status == TxStatus.QUEUED
    assert nonce_of(chain, journaled.sender) == journaled.nonce  # nothing reached the chain
    # A client retrying against the restarted relayer: the service resumes before it takes a new nonce, so the
    # journaled bytes go out (and mine) first and the retry is refused as replayed: never a second tx.
    wait_out_the_crashed_lease()
    with pytest.raises(InvalidNonceError):
        make_service(lease_ttl_s=CRASHED_LEASE_TTL_S).submit_signed(parse_signed_relay(body))

    wait_out_the_crashed_lease()
    restarted = make_service()
    assert restarted.resume() >= 0
    settle(restarted)
    final = restarted.get(journaled.id)
    assert final.status == TxStatus.CONFIRMED
    assert final.mined is not None
    assert final.mined.tx_hash == journaled.latest.tx_hash
    assert nonce_of(chain, final.sender) == journaled.nonce + 1
    assert vault.position(position_id).size == 0


@pytest.mark.parametrize("automine", [True, False], ids=["mined-before-restart", "pending-at-restart"])
def test_restart_between_broadcast_and_receipt(
    chain: Chain,
    accounts: list[LocalAccount],
    open_position: Callable[..., bytes],
    make_service: Callable[..., Blocking[RelayService]],
    signed_body: Callable[..., dict[str, Any]],
    automine: bool,
) -> None:
    position_id = open_position(owner=accounts[1])
    crashing = make_service(hooks=SenderHooks(after_broadcast=crash), lease_ttl_s=CRASHED_LEASE_TTL_S)
    body = signed_body(accounts[1], position_id)
    with automine_off(chain) if not automine else _nothing():
        with pytest.raises(Crash):
            until_crash(crashing, "submit_signed", parse_signed_relay(body))
        (journaled,) = crashing.list()
        assert journaled.status == TxStatus.QUEUED
        assert journaled.latest.broadcast_at is None
        wait_out_the_crashed_lease()
        restarted = make_service()
        restarted.resume()  # finds it mined, or re-sends the same bytes ("already known")
        if not automine:
            mine(chain)
    settle(restarted)
    final = restarted.get(journaled.id)
    assert final.status == TxStatus.CONFIRMED
    assert final.hashes == journaled.hashes  # nothing re-signed
    assert nonce_of(chain, final.sender) == journaled.nonce + 1  # sent once


@contextmanager
def _nothing() -> Iterator[None]:
    yield


CRASHED_LEASE_TTL_S = 0.5
"""The lease TTL of a service that crashes in a test: its restart takes the signer's lease once it expires
(at once on SQLite, whose relay lock admits one process; after the TTL on PostgreSQL, where the database
cannot know the holder is gone)."""


def wait_out_the_crashed_lease() -> None:
    time.sleep(CRASHED_LEASE_TTL_S + 0.1)


@pytest.mark.only_backend("anvil")  # an in-process chain cannot go down
def test_node_down_and_back(
    chain: Chain,
    accounts: list[LocalAccount],
    open_position: Callable[..., bytes],
    make_service: Callable[..., Blocking[RelayService]],
    signed_body: Callable[..., dict[str, Any]],
) -> None:
    proxy = TcpProxy(int(chain.name.rsplit(":", 1)[1]))
    proxy.start()
    try:
        service = make_service(
            target=rpc_chain(proxy.url), hooks=SenderHooks(after_journal=lambda _: proxy.stop())
        )
        position_id = open_position(owner=accounts[1])
        record = service.submit_signed(
            parse_signed_relay(signed_body(accounts[1], position_id, sizeDelta="0.5"))
        ).record
        # Journaled; the broadcast met a dead node and is left to the background loop.
        assert record.status == TxStatus.QUEUED
        assert record.error is not None
        noted = restore_error(record.error)
        assert (type(noted), noted.http_status, noted.details["nodeKind"]) == (
            ChainUnavailableError,
            503,
            "unavailable",
        )

        refused = http_client(service).post(
            "/api/relay/signed", json={"kind": "close", "request": {}, "signature": "0x"}
        )
        assert refused.status_code == 422  # bad input is still answered without the node
        down = http_client(service).get(
            "/api/relay/typed-data", params={"kind": "close", "positionId": "0x" + position_id.hex()}
        )
        assert (down.status_code, down.json()["error"]["code"]) == (503, "chain_unavailable")
        assert down.headers["Retry-After"] == "1"
        service.tick()  # the loop survives the outage
        assert service.get(record.id).status == TxStatus.QUEUED

        proxy.start()
        settle(service)
        assert service.get(record.id).status == TxStatus.CONFIRMED
        assert service.get(record.id).error is None  # the outage note was about the wait, which is over
    finally:
        proxy.stop()


def test_first_request_after_start_takes_the_chains_nonce(
    chain: Chain,
    accounts: list[LocalAccount],
    relay_accounts: list[LocalAccount],
    open_position: Callable[..., bytes],
    make_service: Callable[..., Blocking[RelayService]],
    signed_body: Callable[..., dict[str, Any]],
) -> None:
    """A request beating the background loop's first round must not allocate from an unreconciled counter."""
    signer = relay_accounts[0]
    for _ in range(2):  # the signer was used elsewhere: the chain is two nonces ahead of a new journal
        send(chain.w3, signer, signer.address, b"")
    service = make_service(signers=[signer])  # never started: no resume() has run
    position_id = open_position(owner=accounts[1])
    record = service.submit_signed(parse_signed_relay(signed_body(accounts[1], position_id))).record
    assert record.nonce == 2
    settle(service)
    assert service.get(record.id).status == TxStatus.CONFIRMED


def _owner_day_spent(service: Blocking[RelayService], owner: str) -> int:
    """What the sponsorship policy counts as spent for `owner` today (its day window)."""
    now_s = int(service.inner.clock())
    start = sponsorship.window_start(now_s, sponsorship.DAY_S)
    day = sponsorship.Window(f"owner:{owner.lower()}", sponsorship.DAY_S, start)
    inner = service.inner
    return inner.journal.spend_usage(inner.chain.chain_id, [day])[day.key()].spent_wei
