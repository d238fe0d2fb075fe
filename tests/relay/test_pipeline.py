"""The batched send pipeline: calls that arrive together are journaled in one transaction (one commit) before
any of them is broadcast, their bytes go out in one JSON-RPC batch in nonce order, one call refused in a
group leaves the others (and no nonce gap), and a node that mines on arrival answers the send with the
receipt (`eth_sendRawTransactionSync`), while every other node gets the plain method."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import pytest
from anyio.from_thread import BlockingPortal
from eth_account.signers.local import LocalAccount
from web3.types import TxReceipt

from relayer.chain.connect import Chain
from relayer.chain.jsonrpc import RpcCall, RpcPort, RpcReply
from relayer.domain import calldata
from relayer.domain.records import RelayRecord
from relayer.domain.status import TxStatus
from relayer.domain.typed_data import parse_signed_relay
from relayer.errors import DuplicateRequestError
from relayer.services.relay.service import RelayService
from relayer.services.relay.values import Submission
from tests.blocking import Blocking
from tests.conftest import units
from tests.relay.conftest import port_on, settle
from tests.relay.test_relay_recovery import automine_off, mine, nonce_of

GATE_LIMIT_S = 30.0
"""Bounds a broken run only (the gate opens as soon as the calls are queued)."""


def _sends(calls: Sequence[RpcCall]) -> int:
    """Broadcasts in a batch (not the sync method's probe with empty bytes)."""
    return sum(
        1 for c in calls if c.method.startswith("eth_sendRawTransaction") and len(str(c.params[0])) > 2
    )


class GatedPort:
    """The test's real chain port, noting each batch's broadcasts, and holding the first batch that
    broadcasts until `open()`: calls made meanwhile queue up as the next group."""

    def __init__(self, inner: RpcPort) -> None:
        self.inner = inner
        self.send_batches: list[int] = []
        self.methods: list[str] = []
        self.reached = asyncio.Event()
        self._open = asyncio.Event()

    def open(self) -> None:
        self._open.set()

    async def batch(self, calls: Sequence[RpcCall]) -> list[RpcReply]:
        self.methods += [call.method for call in calls]
        sends = _sends(calls)
        if sends:
            self.send_batches.append(sends)
            if not self._open.is_set():
                self.reached.set()
                await asyncio.wait_for(self._open.wait(), GATE_LIMIT_S)
        return await self.inner.batch(calls)

    async def aclose(self) -> None:
        await self.inner.aclose()


@contextmanager
def counted_writes(service: Blocking[RelayService]) -> Iterator[list[int]]:
    """The journal's write transactions (`Journal.write`) opened meanwhile, one entry each."""
    journal = service.inner.journal
    opened: list[int] = []
    write = journal.write

    def counting() -> Any:
        opened.append(1)
        return write()

    journal.write = counting  # type: ignore[method-assign]
    try:
        yield opened
    finally:
        del journal.write


async def _queued(service: RelayService, count: int) -> None:
    """Until `count` calls wait for the next group (the sender's queue)."""
    deadline = time.monotonic() + GATE_LIMIT_S
    while len(service.sender._calls) < count:
        assert time.monotonic() < deadline, "the calls never reached the sender"
        await asyncio.sleep(0.005)


def _contiguous(chain: Chain, records: list[RelayRecord], start: Mapping[str, int]) -> None:
    by_signer: dict[str, list[int]] = defaultdict(list)
    for record in records:
        by_signer[record.sender].append(record.nonce)
    for address, nonces in by_signer.items():
        assert sorted(nonces) == list(range(start[address], start[address] + len(nonces)))
        assert nonce_of(chain, address) == start[address] + len(nonces)  # each mined once, none extra


@pytest.fixture
def operator_close(
    accounts: list[LocalAccount],
    relay_accounts: list[LocalAccount],
    transact: Callable[[LocalAccount, bytes], TxReceipt],
    open_position: Callable[..., bytes],
) -> bytes:
    """A close of 0.001 of a 1 BTC position the relay signers may close as approved operators."""
    trader = accounts[1]
    for signer in relay_accounts:
        transact(trader, calldata.set_operator(signer.address, True))
    return calldata.close_position(open_position(owner=trader, size="1"), units("0.001"), 0)


def test_calls_arriving_together_share_one_commit_and_one_send_batch(
    chain: Chain,
    portal: BlockingPortal,
    relay_accounts: list[LocalAccount],
    make_service: Callable[..., Blocking[RelayService]],
    operator_close: bytes,
) -> None:
    port = GatedPort(port_on(portal, chain))
    service = make_service(port=port)
    service.resume()
    start: dict[str, int] = {a.address: nonce_of(chain, a.address) for a in relay_accounts}
    later = 6
    inner = service.inner

    async def scenario() -> list[Submission]:
        first = asyncio.create_task(inner.submit_call(operator_close))
        await port.reached.wait()  # the first group's broadcast is held at the node
        others = [asyncio.create_task(inner.submit_call(operator_close)) for _ in range(later)]
        await _queued(inner, later)
        port.open()
        return await asyncio.gather(first, *others)

    with counted_writes(service) as writes:
        submissions = service.portal.call(scenario)
    assert len(writes) == 2  # one journal transaction per group: the first call's, then the six's
    assert port.send_batches == [1, later]  # and one broadcast batch per group
    settle(service)
    records = service.list(limit=100)
    assert len(records) == 1 + later == len({s.record.id for s in submissions})
    assert {r.status for r in records} == {TxStatus.CONFIRMED}
    _contiguous(chain, records, start)


def test_a_call_refused_in_a_group_leaves_the_others_and_no_gap(
    chain: Chain,
    portal: BlockingPortal,
    accounts: list[LocalAccount],
    relay_accounts: list[LocalAccount],
    make_service: Callable[..., Blocking[RelayService]],
    operator_close: bytes,
    open_position: Callable[..., bytes],
    signed_body: Callable[..., dict[str, Any]],
) -> None:
    """Two copies of one signed request in one group: the second breaks the live-request rule inside the
    group's transaction; only its savepoint is undone, so the others commit and no nonce is skipped."""
    port = GatedPort(port_on(portal, chain))
    service = make_service(port=port)
    service.resume()
    relay = parse_signed_relay(signed_body(accounts[1], open_position(owner=accounts[1], size="1")))
    start: dict[str, int] = {a.address: nonce_of(chain, a.address) for a in relay_accounts}
    inner = service.inner

    async def scenario() -> list[Submission | BaseException]:
        first = asyncio.create_task(inner.submit_call(operator_close))
        await port.reached.wait()
        group = [
            asyncio.create_task(inner.submit_call(operator_close)),
            asyncio.create_task(inner.submit_signed(relay)),
            asyncio.create_task(inner.submit_signed(relay)),
            asyncio.create_task(inner.submit_call(operator_close)),
        ]
        await _queued(inner, len(group))
        port.open()
        return await asyncio.gather(first, *group, return_exceptions=True)

    answers = service.portal.call(scenario)
    refused = [a for a in answers if isinstance(a, BaseException)]
    assert len(refused) == 1
    assert isinstance(refused[0], DuplicateRequestError)
    assert port.send_batches == [1, 3]  # the refused one was never sent
    settle(service)
    records = service.list(limit=100)
    assert len(records) == 4
    assert {r.status for r in records} == {TxStatus.CONFIRMED}
    _contiguous(chain, records, start)


def test_a_node_mining_on_arrival_answers_the_send_with_the_receipt(
    chain: Chain,
    portal: BlockingPortal,
    make_service: Callable[..., Blocking[RelayService]],
    operator_close: bytes,
) -> None:
    port = GatedPort(port_on(portal, chain))
    port.open()
    service = make_service(port=port)
    record = service.submit_call(operator_close).record
    if chain.is_embedded:  # eth-tester has no sync method: the plain one, the receipt read by the rounds
        assert record.status is TxStatus.SUBMITTED
        assert port.methods.count("eth_sendRawTransactionSync") == 1  # the probe only ("method not found")
        assert port.methods.count("eth_sendRawTransaction") == 1
    else:  # anvil's automine: the receipt came back with the send
        assert record.status is TxStatus.MINED
        assert record.mined is not None
        assert port.methods.count("eth_sendRawTransactionSync") == 2  # the probe, then the send
        assert "eth_getTransactionReceipt" not in port.methods
    settle(service)
    assert service.get(record.id).status is TxStatus.CONFIRMED


@pytest.mark.only_backend("anvil")  # eth-tester never has the sync method
def test_a_node_with_blocks_gets_the_plain_send(
    chain: Chain,
    portal: BlockingPortal,
    make_service: Callable[..., Blocking[RelayService]],
    operator_close: bytes,
) -> None:
    """With automine off (as with block times) a sync send would hold the batch for a block: not used."""
    port = GatedPort(port_on(portal, chain))
    port.open()
    service = make_service(port=port)
    with automine_off(chain):
        record = service.submit_call(operator_close).record
        assert record.status is TxStatus.SUBMITTED
        sends = [m for m in port.methods if m.startswith("eth_sendRawTransaction")]
        assert sends == ["eth_sendRawTransactionSync", "eth_sendRawTransaction"]  # the probe, the plain send
        mine(chain)
    settle(service)
    assert service.get(record.id).status is TxStatus.CONFIRMED
