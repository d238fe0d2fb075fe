"""The per-signer in-flight limit and the queue of calls waiting for a slot (`SignerSlots`).

A signer never has more than `max_in_flight_per_signer` transactions journaled and not mined (what the node's
pool holds for it: checked in the journal, and on anvil in the node's own pending count); load beyond waits in
a bounded queue and goes out as blocks free slots; a full queue, or a wait past `queue_wait_s`, is answered
503 `relay_queue_full` with `Retry-After`, nothing signed. New calls go to the signer with the fewest in
flight. A call handed over to the lease holder of another instance waits for the holder's slot too.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from web3.types import RPCEndpoint, TxReceipt

from relayer.chain.connect import Chain
from relayer.domain import calldata
from relayer.domain.status import TxStatus
from relayer.domain.typed_data import parse_typed_data_query
from relayer.errors import RelayQueueFullError
from relayer.services.relay.service import RelayService
from relayer.services.relay.signers import SignerSlots
from relayer.services.relay.values import Submission
from tests.blocking import Blocking
from tests.conftest import units
from tests.relay.conftest import http_client, settle

WAIT_ROUNDS = 1_000
"""Bounds a broken run only (x 0.01 s): a state the test waits for that never comes fails it."""


def _rpc(chain: Chain, method: str, *params: Any) -> Any:
    return chain.w3.provider.make_request(RPCEndpoint(method), list(params))


@contextmanager
def _automine_off(chain: Chain) -> Iterator[None]:
    """Transactions stay in the node's pool until `_mine(chain)`."""
    with chain.lock:
        if chain.is_embedded:
            chain.tester.disable_auto_mine_transactions()
        else:
            _rpc(chain, "evm_setAutomine", False)
    try:
        yield
    finally:
        with chain.lock:
            if chain.is_embedded:
                chain.tester.enable_auto_mine_transactions()
            else:
                _rpc(chain, "evm_setAutomine", True)


def _mine(chain: Chain) -> None:
    with chain.lock:
        if chain.is_embedded:
            chain.tester.mine_blocks()
        else:
            _rpc(chain, "evm_mine")


def _pool_count(chain: Chain, address: str) -> int | None:
    """Transactions of `address` the node holds unmined (None on eth-tester, which does not count them)."""
    if chain.is_embedded:
        return None
    w3 = chain.w3
    account = to_checksum_address(address)
    return int(w3.eth.get_transaction_count(account, "pending")) - int(w3.eth.get_transaction_count(account))


def _unmined(service: Blocking[RelayService], chain: Chain) -> dict[str, int]:
    """Records per signer journaled and not yet mined: queued or submitted, at a nonce the chain has not
    mined (a record's status follows the chain by a round)."""
    records = service.run(service.journal.pending)
    with chain.lock:
        mined = {a: int(chain.w3.eth.get_transaction_count(a)) for a in service.pool.addresses}
    counts = dict.fromkeys(service.pool.addresses, 0)
    for record in records:
        unmined = (
            record.status in {TxStatus.QUEUED, TxStatus.SUBMITTED} and record.nonce >= mined[record.sender]
        )
        if record.kind.is_ours and unmined:
            counts[record.sender] += 1
    return counts


def _until(condition: Callable[[], bool]) -> None:
    for _ in range(WAIT_ROUNDS):
        if condition():
            return
        time.sleep(0.01)
    raise AssertionError("the state waited for never came")


def _calls(service: Blocking[RelayService], data: bytes, count: int) -> list[Future[Submission]]:
    """`count` concurrent `submit_call(data)`s on the service's loop (their results come later)."""
    call = functools.partial(service.inner.submit_call, data)
    return [service.portal.start_task_soon(call) for _ in range(count)]


def _approved(
    accounts: list[LocalAccount],
    signers: list[LocalAccount],
    transact: Callable[[LocalAccount, bytes], TxReceipt],
    open_position: Callable[..., bytes],
) -> bytes:
    """A small close of a new position of `accounts[1]`, who approved `signers` as operators."""
    trader = accounts[1]
    for signer in signers:
        transact(trader, calldata.set_operator(signer.address, True))
    return calldata.close_position(open_position(owner=trader, size="1"), units("0.001"), 0)


def test_a_signer_never_has_more_than_its_limit_in_flight(
    chain: Chain,
    accounts: list[LocalAccount],
    relay_accounts: list[LocalAccount],
    transact: Callable[[LocalAccount, bytes], TxReceipt],
    open_position: Callable[..., bytes],
    make_service: Callable[..., Blocking[RelayService]],
) -> None:
    close = _approved(accounts, relay_accounts, transact, open_position)
    service = make_service(max_in_flight_per_signer=3, poll_interval_s=0.05, queue_wait_s=60)
    service.resume()
    service.run(service.inner.start)  # its loop re-sends what eth-tester refuses (one pending per sender)
    signers = service.pool.addresses
    with _automine_off(chain):
        calls = _calls(service, close, 10)
        _until(lambda: sum(_unmined(service, chain).values()) == 6 and service.slots.waiting == 4)
        assert _unmined(service, chain) == dict.fromkeys(signers, 3)  # 3 each, spread; the other 4 wait
        assert service.slots.counts(signers) == dict.fromkeys(signers, 3)
        assert all(_pool_count(chain, a) in {None, 3} for a in signers)  # what the node's pool holds
        assert not any(call.done() and call.exception() is not None for call in calls)

        peak = dict.fromkeys(signers, 0)

        def mined_and_done() -> bool:
            """One block more; the most in flight per signer seen, in the journal and the node's pool."""
            for address, count in _unmined(service, chain).items():
                peak[address] = max(peak[address], count, _pool_count(chain, address) or 0)
            _mine(chain)
            return all(call.done() for call in calls)

        _until(mined_and_done)  # the waiting 4 take slots as blocks free them (the queue recounts)
        assert service.slots.waiting == 0
        assert peak == dict.fromkeys(signers, 3)
    records = [call.result().record for call in calls]
    settle(service)
    assert {service.get(r.id).status for r in records} == {TxStatus.CONFIRMED}
    for address in signers:
        nonces = sorted(r.nonce for r in records if r.sender == address)
        assert nonces == list(range(nonces[0], nonces[0] + len(nonces)))  # contiguous, none twice


def test_a_new_call_goes_to_the_signer_with_the_fewest_in_flight(
    chain: Chain,
    accounts: list[LocalAccount],
    relay_accounts: list[LocalAccount],
    transact: Callable[[LocalAccount, bytes], TxReceipt],
    open_position: Callable[..., bytes],
    make_service: Callable[..., Blocking[RelayService]],
) -> None:
    close = _approved(accounts, relay_accounts, transact, open_position)
    busy, idle = relay_accounts[0], relay_accounts[1]
    with _automine_off(chain):
        loaded = make_service(signers=[busy])
        loaded.resume()
        for _ in range(2):
            loaded.submit_call(close)
        loaded.stop()
        service = make_service()  # a restart: both signers, one with 2 in flight it reads back
        service.resume()
        assert service.slots.counts([busy.address, idle.address]) == {busy.address: 2, idle.address: 0}
        first, second = (service.submit_call(close).record for _ in range(2))
        assert (first.sender, second.sender) == (idle.address, idle.address)
        third = service.submit_call(close).record  # 2 and 2: the rotation decides
        assert third.sender in {busy.address, idle.address}
        assert max(service.slots.counts(service.pool.addresses).values()) == 3
        _mine(chain)
    settle(service)


def _signed_close_body(
    service: Blocking[RelayService], owner: LocalAccount, position_id: bytes
) -> dict[str, Any]:
    wanted = {"kind": "close", "positionId": "0x" + position_id.hex()}
    answer = service.typed_data_for(parse_typed_data_query(wanted))
    signed = Account.sign_typed_data(owner.key, full_message=answer["typedData"])
    return {
        "kind": "close",
        "request": answer["typedData"]["message"],
        "signature": "0x" + signed.signature.hex(),
    }


def test_beyond_the_limits_and_a_full_queue_the_answer_is_503_with_retry_after(
    chain: Chain,
    accounts: list[LocalAccount],
    relay_accounts: list[LocalAccount],
    transact: Callable[[LocalAccount, bytes], TxReceipt],
    open_position: Callable[..., bytes],
    make_service: Callable[..., Blocking[RelayService]],
) -> None:
    close = _approved(accounts, relay_accounts, transact, open_position)
    service = make_service(max_in_flight_per_signer=1, queue_limit=1, poll_interval_s=0.05, queue_wait_s=60)
    service.resume()
    client = http_client(service)
    body = _signed_close_body(service, accounts[2], open_position(owner=accounts[2], size="1"))
    with _automine_off(chain):
        calls = _calls(service, close, 3)  # 1 + 1 in flight, 1 waiting: the queue is full
        _until(lambda: sum(_unmined(service, chain).values()) == 2 and service.slots.waiting == 1)

        response = client.post("/api/relay/signed", json=body)
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "relay_queue_full"
        assert response.json()["error"]["details"] == {"maxInFlightPerSigner": 1, "queueLimit": 1}
        assert response.headers["Retry-After"] == "1"
        assert len(service.list()) == 2  # nothing signed or kept for it

        _mine(chain)  # a slot frees: the waiting call goes
        _until(lambda: all(call.done() for call in calls))
        _mine(chain)
    settle(service)
    assert len({call.result().record.id for call in calls}) == 3


def test_a_call_that_waits_past_queue_wait_s_is_refused_unsigned(
    chain: Chain,
    accounts: list[LocalAccount],
    relay_accounts: list[LocalAccount],
    transact: Callable[[LocalAccount, bytes], TxReceipt],
    open_position: Callable[..., bytes],
    make_service: Callable[..., Blocking[RelayService]],
) -> None:
    signer = relay_accounts[0]
    close = _approved(accounts, [signer], transact, open_position)
    service = make_service(
        signers=[signer], max_in_flight_per_signer=1, poll_interval_s=0.05, queue_wait_s=0.3
    )
    service.resume()
    with _automine_off(chain):
        first = service.submit_call(close).record
        with pytest.raises(RelayQueueFullError) as refused:
            service.submit_call(close)
        assert refused.value.retryable
        assert [record.id for record in service.list()] == [first.id]
        assert _pool_count(chain, signer.address) in {None, 1}
        _mine(chain)
    settle(service)
    assert service.slots.counts([signer.address]) == {signer.address: 0}


@pytest.mark.only_store("postgres")
def test_a_call_handed_to_the_lease_holder_waits_for_its_slot(
    chain: Chain,
    accounts: list[LocalAccount],
    relay_accounts: list[LocalAccount],
    transact: Callable[[LocalAccount, bytes], TxReceipt],
    open_position: Callable[..., bytes],
    make_service: Callable[..., Blocking[RelayService]],
) -> None:
    signer = relay_accounts[0]
    close = _approved(accounts, [signer], transact, open_position)
    holder = make_service(signers=[signer], lease_ttl_s=2.0, poll_interval_s=0.05, max_in_flight_per_signer=1)
    holder.resume()
    other = make_service(signers=[signer], lease_ttl_s=2.0, poll_interval_s=0.05)  # 16 of its own
    other.resume()
    holder.run(holder.inner.start)
    with _automine_off(chain):
        first = holder.submit_call(close).record
        (handed,) = _calls(other, close, 1)  # journaled as an intent for the holder, whose slot is taken
        _until(lambda: bool(holder.run(holder.journal.waiting_signers)))
        holder.tick()  # a round: the slot is still taken, the intent still waits
        assert holder.run(holder.journal.waiting_signers) == {signer.address}
        assert [record.id for record in holder.list()] == [first.id]
        assert _pool_count(chain, signer.address) in {None, 1}

        _mine(chain)  # the holder's round frees the slot and sends the intent
        _until(handed.done)
        record = handed.result().record
        assert record.nonce == first.nonce + 1
        assert _pool_count(chain, signer.address) in {None, 1}
        _mine(chain)
    settle(holder)
    assert holder.get(record.id).status is TxStatus.CONFIRMED


async def _waiter(slots: SignerSlots, ticket: int, order: list[int]) -> None:
    deadline = time.monotonic() + 60
    again = False
    while not await slots.wait(deadline, ticket, poll_s=60, again=again):
        again = True
    order.append(ticket)


def test_slots_count_nonces_until_a_round_reads_them_mined() -> None:
    async def scenario() -> None:
        slots = SignerSlots(limit=2, queue_limit=1)
        assert slots.take("A")
        assert slots.take("A")
        assert not slots.take("A")
        slots.numbered("A", 7)  # numbered in the journal transaction: the slot becomes nonce 7 at once
        mark = slots.mark()
        slots.recount("A", {7}, None, mark)  # a round reads record 7 before its call settles: counted once
        assert slots.in_flight("A") == 2
        slots.settle("A", 7)
        slots.settle("A")  # nothing journaled: its slot is free again
        assert slots.in_flight("A") == 1
        mark = slots.mark()
        assert slots.take("A")
        slots.numbered("A", 8)
        slots.settle("A", 8)  # journaled after the round's read began: kept by the recount
        slots.recount("A", set(), None, mark)
        assert slots.in_flight("A") == 1  # 7 done (the read no longer shows it), 8 kept
        mark = slots.mark()
        slots.recount("A", {8, 9}, 9, mark)  # the chain mined up to 8; 9 is another instance's record read
        assert slots.in_flight("A") == 1

        order: list[int] = []
        first = asyncio.create_task(_waiter(slots, slots.ticket(), order))
        await asyncio.sleep(0)
        with pytest.raises(RelayQueueFullError):  # queue_limit 1
            await slots.wait(time.monotonic() + 60, slots.ticket(), poll_s=60)
        slots.recount("A", set(), 10, slots.mark())
        slots.wake_for_room(["A"])
        await first
        assert order == [1]

    asyncio.run(scenario())
