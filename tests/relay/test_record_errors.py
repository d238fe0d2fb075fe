"""Every error the sender writes on a record is a real `RelayerError`'s `to_dict()`: `restore_error` gives a
client back the same class, code and HTTP status (never a 500 `internal_error` for an unknown code), with the
node's own code and message kept in `details`.

The sender runs on a real journal in `tmp_path` and a real `ChainClient` over a scripted port (no chain): each
test makes the node answer one way and reads back what the record keeps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from anyio.from_thread import BlockingPortal
from eth_account import Account

from relayer.chain.artifact import load_artifact
from relayer.chain.client import ChainClient, Receipt
from relayer.chain.connect import Chain, chain_port
from relayer.chain.deploy import Deployment
from relayer.chain.embedded_rpc import _error_object
from relayer.chain.failure import why_reverted
from relayer.chain.jsonrpc import RpcCall, RpcReply
from relayer.config import RelaySettings
from relayer.domain import calldata
from relayer.domain.records import Attempt, Mined, RelayRecord
from relayer.domain.status import AttemptKind, RecordKind, TxStatus
from relayer.errors import (
    ChainUnavailableError,
    ExecutionRevertedError,
    FeeCapReachedError,
    NodeDeferredError,
    NodeRejectedError,
    NonceUsedElsewhereError,
    RelayerError,
    RelayerOutOfFundsError,
    restore_error,
)
from relayer.services.relay.leases import Leases, signer_lease
from relayer.services.relay.nonces import NonceAllocator
from relayer.services.relay.sender import Sender
from relayer.services.relay.signers import Signer, SignerPool
from relayer.stores.journal import SqliteJournal
from relayer.stores.journal_port import Journal
from tests.blocking import Blocking
from tests.relay.test_units import RpcError, ValidationError

SIGNER = Signer(Account.from_key("0x" + "22" * 32))
VAULT = Account.from_key("0x" + "44" * 32).address


class ScriptedPort:
    """The node below the sender's `ChainClient`, answering as a test scripts it: chain 1 with the vault's
    code, block 1 (base fee 10 wei, tip 2 wei), no receipts, `latest_nonce`, and `refusals` for the next
    broadcasts. A refusal is what a node does for a web3 or eth-tester exception: a `ConnectionError` is
    no answer at all, anything else the JSON-RPC error object the embedded chain's adapter answers for it."""

    def __init__(self, refusals: list[BaseException] | None = None, latest_nonce: int = 0) -> None:
        self.refusals = list(refusals or [])
        self.latest_nonce = latest_nonce

    async def batch(self, calls: Sequence[RpcCall]) -> list[RpcReply]:
        if any(call.method == "eth_sendRawTransaction" for call in calls) and self.refusals:
            refusal = self.refusals.pop(0)
            if isinstance(refusal, ConnectionError):
                raise ChainUnavailableError(f"the node did not answer: {type(refusal).__name__}")
            return [RpcReply(error=_error_object(refusal))]
        return [self._answer(call) for call in calls]

    def _answer(self, call: RpcCall) -> RpcReply:
        answers: dict[str, Any] = {
            "eth_chainId": "0x1",
            "eth_getCode": load_artifact().deployed_bytecode,
            "eth_getBlockByNumber": {"number": "0x1", "timestamp": "0x1", "baseFeePerGas": "0xa"},
            "eth_maxPriorityFeePerGas": "0x2",
            "eth_sendRawTransaction": "0x" + "ef" * 32,
            "eth_getTransactionReceipt": None,
            "eth_getTransactionCount": hex(self.latest_nonce),
        }
        return RpcReply(result=answers[call.method])

    async def aclose(self) -> None:
        return None


def _record(
    kind: RecordKind, sender: str = SIGNER.address, to: str = VAULT, data: bytes = b"\x01"
) -> RelayRecord:
    attempt = Attempt("0x" + "ab" * 32, 0, AttemptKind.ORIGINAL, b"\x02raw", 30, 2, 1.0)
    return RelayRecord(
        id="r1",
        kind=kind,
        status=TxStatus.QUEUED,
        request_hash="h",
        sender=sender,
        nonce=0,
        chain_id=1,
        to=to,
        data=data,
        value_wei=0,
        gas_limit=100_000,
        created_at=1.0,
        updated_at=1.0,
        attempts=(attempt,),
    )


@pytest.fixture
def make_sender(
    tmp_path: Path, portal: BlockingPortal
) -> Iterator[Callable[..., tuple[Blocking[Sender], Journal]]]:
    journals: list[Journal] = []

    def _make(node: ScriptedPort, record: RelayRecord, **settings: Any) -> tuple[Blocking[Sender], Journal]:
        journal = SqliteJournal(tmp_path / f"journal-{len(journals)}.sqlite3")
        journals.append(journal)
        with journal.write() as writer:
            writer.insert(record)
        relay_settings = RelaySettings(journal_path=tmp_path / "unused", retry_backoff_s=0.0, **settings)

        async def make() -> Sender:
            client = ChainClient(node, VAULT, backoff_s=0)
            await client.start()
            leases = Leases(journal, "test", 30.0, [signer_lease(SIGNER.address)], _nothing_to_recover)
            await leases.maintain()  # this process acts for the signer (one process: taken at once)
            pool = SignerPool([SIGNER])
            return Sender(journal, client, pool, NonceAllocator(), leases, relay_settings, clock=lambda: 2.0)

        return Blocking(portal.call(make), portal), journal

    yield _make
    for journal in journals:
        journal.close()


async def _nothing_to_recover(name: str) -> None:
    return None


def _restored(journal: Journal) -> RelayerError:
    record = journal.get("r1")
    assert record is not None
    assert record.error is not None
    assert set(record.error) == {"code", "message", "details"}  # the `to_dict()` shape, nothing flat
    return restore_error(record.error)


@pytest.mark.parametrize(
    ("refusal", "expected", "status", "node_code"),
    [
        (ConnectionError("refused"), ChainUnavailableError, 503, None),
        (RpcError(-32000, "replacement transaction underpriced"), NodeDeferredError, 503, -32000),
        # eth-tester's refusal, answered as a node does (geth's generic code): the embedded chain's adapter
        (ValidationError("Invalid transaction nonce: Expected 4, but got 6"), NodeDeferredError, 503, -32000),
        (RpcError(-32003, "insufficient funds for gas * price + value"), RelayerOutOfFundsError, 503, -32003),
    ],
)
def test_transient_refusals_note_a_restorable_error_and_keep_the_record_pending(
    make_sender: Callable[..., tuple[Blocking[Sender], Journal]],
    refusal: Exception,
    expected: type[RelayerError],
    status: int,
    node_code: int | None,
) -> None:
    record = _record(RecordKind.CLOSE)
    sender, journal = make_sender(ScriptedPort([refusal] * 3), record)
    sender.broadcast(record, record.latest)
    error = _restored(journal)
    assert (type(error), error.code, error.http_status, error.retryable) == (
        expected,
        expected.code,
        status,
        True,
    )
    assert error.details["nodeCode"] == node_code
    assert error.details["nodeMessage"]
    fresh = journal.get("r1")
    assert fresh is not None
    assert fresh.status is TxStatus.QUEUED  # a note: the loop re-sends, bumps or fills it


@pytest.mark.parametrize("kind", [RecordKind.CLOSE, RecordKind.RAW])
def test_a_permanent_refusal_fails_the_record_as_node_rejected(
    make_sender: Callable[..., tuple[Blocking[Sender], Journal]], kind: RecordKind
) -> None:
    record = _record(kind)
    refusal = RpcError(-32000, "intrinsic gas too low")
    sender, journal = make_sender(ScriptedPort([refusal]), record)
    sender.broadcast(record, record.latest)
    after = journal.get("r1")
    assert after is not None
    if kind is RecordKind.CLOSE:  # ours: its nonce is filled by a no-op, then the record ends failed
        assert (after.latest.kind, after.noop_outcome) == (AttemptKind.NOOP, TxStatus.FAILED)
    else:
        assert after.status is TxStatus.FAILED
    error = _restored(journal)
    assert (type(error), error.code, error.http_status) == (NodeRejectedError, "node_rejected", 502)
    assert (error.details["nodeCode"], error.details["nodeMessage"]) == (-32000, "intrinsic gas too low")


def test_a_refused_no_op_keeps_the_record_pending_so_its_nonce_is_never_a_gap(
    make_sender: Callable[..., tuple[Blocking[Sender], Journal]],
) -> None:
    """The call is refused for good, and then so is the no-op that fills its nonce: settling the record would
    leave the signer's nonce unused and every later transaction waiting behind it. It stays pending, noted,
    for the loop to re-send and bump the no-op."""
    record = _record(RecordKind.CLOSE)
    refusal = RpcError(-32000, "intrinsic gas too low")
    sender, journal = make_sender(ScriptedPort([refusal, refusal]), record)
    sender.broadcast(record, record.latest)
    after = journal.get("r1")
    assert after is not None
    assert after.latest.kind is AttemptKind.NOOP
    assert after.status is TxStatus.QUEUED  # not failed: the nonce is still to be used
    assert after.noop_outcome is TxStatus.FAILED  # what it ends as once the no-op is mined
    assert _restored(journal).code == "node_rejected"


@pytest.mark.parametrize(
    "refusal",
    [
        RpcError(-32005, "limit exceeded"),
        RpcError(-32603, "the node sent no reply for this call"),
        RpcError(-32000, "request timed out"),
        RpcError(-32600, "batch size too large"),
    ],
)
def test_a_node_that_cannot_serve_a_send_now_is_retried_not_a_refusal(
    make_sender: Callable[..., tuple[Blocking[Sender], Journal]], refusal: Exception
) -> None:
    """A provider's rate limit, an unanswered call or a refused batch says nothing about the transaction: it
    stays as it was (no no-op spent on its nonce), noted as `chain_unavailable`."""
    record = _record(RecordKind.CLOSE)
    sender, journal = make_sender(ScriptedPort([refusal] * 3), record)
    sender.broadcast(record, record.latest)
    after = journal.get("r1")
    assert after is not None
    assert (after.status, [a.kind for a in after.attempts]) == (TxStatus.QUEUED, [AttemptKind.ORIGINAL])
    assert _restored(journal).code == "chain_unavailable"


def test_a_nonce_used_by_a_stranger_ends_replaced_with_a_restorable_error(
    make_sender: Callable[..., tuple[Blocking[Sender], Journal]],
) -> None:
    record = _record(RecordKind.RAW, sender=Account.from_key("0x" + "33" * 32).address)
    sender, journal = make_sender(ScriptedPort(latest_nonce=1), record)
    sender.settle_used_nonce(record)
    assert journal.get("r1").status is TxStatus.REPLACED  # type: ignore[union-attr]
    error = _restored(journal)
    assert (type(error), error.code, error.http_status, error.retryable) == (
        NonceUsedElsewhereError,
        "nonce_used_elsewhere",
        409,
        True,
    )


def test_a_bump_sent_while_a_used_nonce_is_settled_keeps_the_record_from_being_called_replaced(
    make_sender: Callable[..., tuple[Blocking[Sender], Journal]],
) -> None:
    """The nonce is used and none of the record's known hashes mined; while the sender reads the chain,
    another task journals a fee bump for it (whose hash may be the one that mined). Settling it `replaced`
    against the hashes it knew before would tell a client `nonce_used_elsewhere` for a call that executed:
    the compare-and-set on its last attempt leaves it pending for the next round to look at the new hash."""
    record = _record(RecordKind.CLOSE)
    journals: list[Journal] = []

    class BumpedMeanwhile(ScriptedPort):
        def _answer(self, call: RpcCall) -> RpcReply:
            if call.method == "eth_getTransactionCount" and call.params[1] == "latest":
                bump = Attempt("0x" + "cd" * 32, 1, AttemptKind.BUMP, b"\x02bump", 40, 3, 2.0)
                with journals[0].write() as writer:
                    writer.add_attempts("r1", [bump])
            return super()._answer(call)

    sender, journal = make_sender(BumpedMeanwhile(latest_nonce=1), record)
    journals.append(journal)
    sender.settle_used_nonce(record)
    after = journal.get("r1")
    assert after is not None
    assert after.status is TxStatus.QUEUED  # not `replaced`: its newest hash was never looked for
    assert [a.kind for a in after.attempts] == [AttemptKind.ORIGINAL, AttemptKind.BUMP]


def test_the_fee_cap_note_is_a_restorable_error(
    make_sender: Callable[..., tuple[Blocking[Sender], Journal]],
) -> None:
    record = _record(RecordKind.CLOSE)
    sender, journal = make_sender(ScriptedPort(), record, max_fee_per_gas_wei=30)  # the attempt is at the cap
    assert sender.replace(record) is False
    error = _restored(journal)
    assert (type(error), error.code, error.http_status) == (FeeCapReachedError, "fee_cap_reached", 503)
    assert journal.get("r1").status is TxStatus.QUEUED  # type: ignore[union-attr]


@pytest.mark.parametrize("chain", ["eth-tester"], indirect=True)
def test_a_revert_the_replay_does_not_reproduce_is_an_execution_reverted_error(
    chain: Chain, deployment: Deployment, portal: BlockingPortal
) -> None:
    async def reason() -> RelayerError:
        client = ChainClient(chain_port(chain), deployment.address)
        try:
            await client.start()
            return await why_reverted(client, receipt, record)
        finally:
            await client.aclose()

    succeeding = calldata.encode_call("markets")
    mined = Mined("0x" + "ab" * 32, 1, "0x" + "cd" * 32, 100_000, 0, False)
    receipt = Receipt(mined, transaction_index=0, logs=[])  # first of block 1; no node knows it: no trace
    sender = chain.test_accounts()[0].address  # funded: the replay pays for its gas like the transaction did
    record = _record(RecordKind.CLOSE, sender=sender, to=deployment.address, data=succeeding)
    error = restore_error(portal.call(reason).to_dict())
    assert (type(error), error.code, error.http_status) == (ExecutionRevertedError, "execution_reverted", 422)
    assert error.message == "reverted on chain (the replay did not reproduce it)"
