"""A broadcast that waited for the signer's nonce lock while the send path sent the same bytes sends nothing:
the relay loop's round may hold a copy of a `queued` record read before the send path broadcast it (and, under
automine, before it was mined); sending it again would only be refused (`nonce_too_low`) and logged as a
warning. A deliberate re-send of a broadcast attempt still goes out, and a refusal whose receipt turns out to
be ours is told at INFO."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import pytest
from anyio.from_thread import BlockingPortal
from eth_account import Account
from eth_account.signers.local import LocalAccount

from relayer.chain.connect import Chain
from relayer.chain.jsonrpc import RpcCall, RpcPort, RpcReply
from relayer.domain.records import RelayRecord
from relayer.domain.status import TxStatus
from relayer.domain.typed_data import parse_signed_relay, parse_typed_data_query
from relayer.services.relay.service import RelayService
from relayer.services.relay.values import SenderHooks
from tests.blocking import Blocking
from tests.relay.conftest import port_on

SEND = "eth_sendRawTransaction"
SENDER_LOG = "relayer.relay"


class AskedPort:
    """The test's real chain port, logging the methods it was asked (the node sees exactly these)."""

    def __init__(self, inner: RpcPort) -> None:
        self.inner = inner
        self.asked: list[str] = []

    async def batch(self, calls: Sequence[RpcCall]) -> list[RpcReply]:
        self.asked += [call.method for call in calls]
        return await self.inner.batch(calls)

    async def aclose(self) -> None:
        await self.inner.aclose()


def _submitted(
    make_service: Callable[..., Blocking[RelayService]],
    port: AskedPort,
    owner: LocalAccount,
    position_id: bytes,
) -> tuple[Blocking[RelayService], RelayRecord, RelayRecord]:
    """A signed close sent through the send path: the service, its record as journaled (`queued`, not yet
    broadcast: the copy a loop round could hold) and as it is now."""
    journaled: list[RelayRecord] = []
    service = make_service(port=port, hooks=SenderHooks(after_journal=journaled.append))
    wanted = {"kind": "close", "positionId": "0x" + position_id.hex()}
    typed = service.typed_data_for(parse_typed_data_query(wanted))["typedData"]
    signature = Account.sign_typed_data(owner.key, full_message=typed).signature
    body = {"kind": "close", "request": typed["message"], "signature": "0x" + signature.hex()}
    record = service.submit_signed(parse_signed_relay(body)).record
    (stale,) = journaled
    return service, stale, record


def test_a_stale_copy_of_a_queued_record_is_not_broadcast_again(
    chain: Chain,
    portal: BlockingPortal,
    accounts: list[LocalAccount],
    open_position: Callable[..., bytes],
    make_service: Callable[..., Blocking[RelayService]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = AskedPort(port_on(portal, chain))
    service, stale, record = _submitted(make_service, port, accounts[1], open_position(owner=accounts[1]))
    sent = port.asked.count(SEND)

    with caplog.at_level(logging.DEBUG, logger=SENDER_LOG):
        Blocking(service.sender, portal).broadcast(stale, stale.latest)  # the round's copy, after the lock

    assert (stale.status, stale.latest.broadcast_at) == (TxStatus.QUEUED, None)
    assert record.status is not TxStatus.QUEUED
    assert sent == 1
    assert port.asked.count(SEND) == 1  # the same bytes were not sent again
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert service.get(record.id).status == record.status  # and nothing about the record changed


def test_a_resend_refused_as_used_by_our_own_transaction_is_told_at_info(
    chain: Chain,
    portal: BlockingPortal,
    accounts: list[LocalAccount],
    open_position: Callable[..., bytes],
    make_service: Callable[..., Blocking[RelayService]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = AskedPort(port_on(portal, chain))
    service, _, record = _submitted(make_service, port, accounts[1], open_position(owner=accounts[1]))
    current = service.get(record.id)
    assert current.latest.broadcast_at is not None  # the send path's broadcast, mined at once (automine)

    with caplog.at_level(logging.DEBUG, logger=SENDER_LOG):
        Blocking(service.sender, portal).broadcast(current, current.latest)  # a deliberate re-send

    refusals = [r for r in caplog.records if r.getMessage().startswith("node refused")]
    assert port.asked.count(SEND) == 2  # re-sent: the record's copy was not stale
    assert [r.levelno for r in refusals] == [logging.INFO]
    assert "nonce_too_low" in refusals[0].getMessage()
    assert service.get(record.id).status is TxStatus.MINED  # our receipt settled it
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
