"""Why a relayed transaction reverted is read at its own position in its block.

Two full closes of one position relayed into one block: the first closes it, the second reverts with the
vault's `PositionNotFound`, which only shows on the state the first left behind (on the state before the
block, the second close succeeds). On anvil the node's trace says so; on eth-tester the embedded chain's
port answers `debug_traceTransaction` by re-executing the block in process; a node without
`debug_traceTransaction` (anvil behind a provider that refuses the debug namespace, as many hosted nodes do)
replays only a block's first transaction and says so when it cannot tell.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence

import pytest
from anyio.from_thread import BlockingPortal
from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes
from web3.types import TxReceipt

from relayer.chain.client import ChainClient
from relayer.chain.connect import Chain
from relayer.chain.deploy import Deployment
from relayer.chain.failure import why_reverted
from relayer.chain.jsonrpc import RpcCall, RpcPort, RpcReply
from relayer.chain.transact import build_transaction
from relayer.domain import calldata
from relayer.domain.records import RelayRecord
from relayer.domain.status import TxStatus
from relayer.errors import (
    ChainUnavailableError,
    ExecutionRevertedError,
    PositionNotFoundError,
    restore_error,
)
from relayer.services.relay.service import RelayService
from tests.blocking import Blocking
from tests.conftest import units
from tests.relay.conftest import port_on, settle
from tests.relay.records import queued_record
from tests.relay.test_relay_recovery import automine_off, mine


class NoTracePort:
    """A real node's port that answers every `debug_*` method the way a node without the debug namespace
    does (JSON-RPC -32601), and logs the methods it was asked."""

    def __init__(self, inner: RpcPort) -> None:
        self.inner = inner
        self.asked: list[str] = []

    async def batch(self, calls: Sequence[RpcCall]) -> list[RpcReply]:
        self.asked += [call.method for call in calls]
        forwarded = [call for call in calls if not call.method.startswith("debug_")]
        answers = iter(await self.inner.batch(forwarded) if forwarded else [])
        return [
            RpcReply(
                error={
                    "code": -32601,
                    "message": f"the method {call.method} does not exist/is not available",
                }
            )
            if call.method.startswith("debug_")
            else next(answers)
            for call in calls
        ]

    async def aclose(self) -> None:
        await self.inner.aclose()


class HeldBroadcasts:
    """A node's port that does not take broadcasts (as if unreachable for them) while it is in place: the
    relay journals each close, simulated alone, and leaves it queued for its loop to send."""

    def __init__(self, inner: RpcPort) -> None:
        self.inner = inner

    async def batch(self, calls: Sequence[RpcCall]) -> list[RpcReply]:
        if any(call.method == "eth_sendRawTransaction" for call in calls):
            raise ChainUnavailableError("the node did not answer: ConnectError")
        return await self.inner.batch(calls)

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.fixture
def no_trace(chain: Chain, portal: BlockingPortal) -> NoTracePort:
    """The same anvil, seen through a port without the debug namespace."""
    return NoTracePort(port_on(portal, chain))


def record_of(sender: str, to: str, data: bytes, gas_limit: int) -> RelayRecord:
    """A record of the call `sender` sent (what a revert reason is read for)."""
    return dataclasses.replace(queued_record("r1", 0), sender=sender, to=to, data=data, gas_limit=gas_limit)


@pytest.fixture
def closes_in_one_block(
    chain: Chain,
    accounts: list[LocalAccount],
    relay_accounts: list[LocalAccount],
    transact: Callable[[LocalAccount, bytes], TxReceipt],
    open_position: Callable[..., bytes],
) -> Callable[[Blocking[RelayService], int], list[RelayRecord]]:
    """Factory: relay `count` full closes of one fresh position, each simulated alone (so each is sent), mine
    them into one block, settle, and return their records in the order they sit in the block.

    A node may simulate on its pending state (anvil does when no block is named), where an earlier close
    already took the position: so the closes reach the node only once all of them are journaled."""

    def _closes(service: Blocking[RelayService], count: int) -> list[RelayRecord]:
        trader = accounts[1]
        for signer in relay_accounts:  # the relayer closes for the trader as an approved operator
            transact(trader, calldata.set_operator(signer.address, True))
        position_id = open_position(owner=trader, size="1")
        close_all = calldata.close_position(position_id, units("1"), 0)
        client = service.chain.inner
        held = HeldBroadcasts(client.port)
        client.port = held
        with automine_off(chain):
            ids = [service.submit_call(close_all).record.id for _ in range(count)]
            assert {service.get(record_id).status for record_id in ids} == {TxStatus.QUEUED}
            client.port = held.inner  # the node takes broadcasts again: the loop sends them all
            service.tick()
            assert {service.get(record_id).status for record_id in ids} == {TxStatus.SUBMITTED}
            mine(chain)
        settle(service)
        records: list[RelayRecord] = [service.get(record_id) for record_id in ids]
        mined = [r.mined for r in records if r.mined is not None]
        assert len(mined) == count
        assert len({m.block_number for m in mined}) == 1  # one block, as intended
        index = {
            m.tx_hash: chain.w3.eth.get_transaction_receipt(HexBytes(m.tx_hash))["transactionIndex"]
            for m in mined
        }
        return sorted(records, key=lambda r: index[r.mined.tx_hash])  # type: ignore[union-attr]

    return _closes


def test_a_close_that_an_earlier_close_in_its_block_undid_fails_with_the_vaults_reason(
    make_service: Callable[..., Blocking[RelayService]],
    closes_in_one_block: Callable[[Blocking[RelayService], int], list[RelayRecord]],
) -> None:
    first, second = closes_in_one_block(make_service(), 2)
    assert first.status is TxStatus.CONFIRMED
    assert second.status is TxStatus.FAILED
    assert second.mined is not None
    assert second.mined.success is False
    assert second.error is not None
    error = restore_error(second.error)
    assert (type(error), error.code, error.http_status) == (PositionNotFoundError, "position_not_found", 404)
    assert error.details["revert"] == "PositionNotFound"


def test_a_revert_for_lack_of_gas_says_so(
    chain: Chain,
    deployment: Deployment,
    accounts: list[LocalAccount],
    open_position: Callable[..., bytes],
    make_client: Callable[..., Blocking[ChainClient]],
) -> None:
    trader = accounts[1]
    close = calldata.close_position(open_position(owner=trader), units("1"), 0)
    tx = build_transaction(chain.w3, trader.address, deployment.address, close)
    tx["gas"] = 30_000  # above the intrinsic cost, far below what the close needs
    tx_hash = chain.w3.eth.send_raw_transaction(trader.sign_transaction(tx).raw_transaction)
    chain.w3.eth.wait_for_transaction_receipt(tx_hash)  # anvil mines right after answering
    client = make_client()
    receipt = client.receipt(HexBytes(tx_hash).to_0x_hex())
    assert receipt is not None
    assert receipt.mined.success is False
    record = record_of(trader.address, deployment.address, close, 30_000)
    error = restore_error(client.portal.call(why_reverted, client.inner, receipt, record).to_dict())
    assert (type(error), error.code) == (ExecutionRevertedError, "execution_reverted")
    # py-evm's exception, or anvil's trace: "out of gas", or (the close is cheap enough since issue 12 that
    # the gas runs out at its one storage write) "out of gas: not enough gas for reentrancy sentry".
    evm_error = error.details["evmError"]
    assert evm_error == "OutOfGas" or evm_error.startswith("out of gas"), evm_error


@pytest.mark.only_backend("anvil")
def test_without_traces_a_later_transaction_of_a_block_is_reported_honestly_and_the_node_asked_once(
    make_service: Callable[..., Blocking[RelayService]],
    closes_in_one_block: Callable[[Blocking[RelayService], int], list[RelayRecord]],
    no_trace: NoTracePort,
) -> None:
    first, *later = closes_in_one_block(make_service(port=no_trace), 3)
    assert first.status is TxStatus.CONFIRMED
    for index, record in enumerate(later, start=1):
        assert record.status is TxStatus.FAILED
        assert record.error is not None
        error = restore_error(record.error)
        assert (type(error), error.code) == (ExecutionRevertedError, "execution_reverted")
        assert "no trace tells why (the node offers no trace)" in error.message
        assert error.details["transactionIndex"] == index
    assert no_trace.asked.count("debug_traceTransaction") == 1  # "method not found" is remembered
    assert "eth_call" not in no_trace.asked  # no replay pretends to know


@pytest.mark.only_backend("anvil")
def test_without_traces_a_blocks_first_transaction_is_replayed_on_the_state_before_it(
    chain: Chain,
    deployment: Deployment,
    accounts: list[LocalAccount],
    no_trace: NoTracePort,
    make_client: Callable[..., Blocking[ChainClient]],
) -> None:
    trader = accounts[1]
    close = calldata.close_position(b"\x07" * 32, units("1"), 0)  # no such position
    tx = build_transaction(chain.w3, trader.address, deployment.address, calldata.encode_call("markets"))
    tx.update(data=HexBytes(close), gas=200_000)  # signed without simulation: it reverts on chain
    tx_hash = chain.w3.eth.send_raw_transaction(trader.sign_transaction(tx).raw_transaction)
    chain.w3.eth.wait_for_transaction_receipt(tx_hash)  # anvil mines right after answering
    client = make_client(no_trace)
    receipt = client.receipt(HexBytes(tx_hash).to_0x_hex())
    assert receipt is not None
    assert (receipt.mined.success, receipt.transaction_index) == (False, 0)
    before = len(no_trace.asked)
    record = record_of(trader.address, deployment.address, close, 200_000)
    error = restore_error(client.portal.call(why_reverted, client.inner, receipt, record).to_dict())
    assert (type(error), error.code) == (PositionNotFoundError, "position_not_found")
    assert error.details["positionId"] == "0x" + "07" * 32
    asked = [m for m in no_trace.asked[before:] if m in {"debug_traceTransaction", "eth_call"}]
    assert asked == ["debug_traceTransaction", "eth_call"]  # no trace, so the replay


def refuse_replays(chain: Chain, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make py-evm refuse to re-execute any block, as it does with a `ValidationError` for one it rejects."""
    from eth_utils.exceptions import ValidationError  # what py-evm raises for a block it refuses

    def refuse(tx_hash: str, block_number: int) -> None:
        raise ValidationError(f"cannot re-execute block {block_number}")

    monkeypatch.setattr(chain, "replay_in_block", refuse)


@pytest.mark.only_backend("eth-tester")
def test_a_replay_that_py_evm_refuses_still_fails_the_record_honestly(
    chain: Chain,
    make_service: Callable[..., Blocking[RelayService]],
    closes_in_one_block: Callable[[Blocking[RelayService], int], list[RelayRecord]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A replay that raises something other than a revert (py-evm's `ValidationError`, say) must not leave
    the record `submitted`, failing every round of the loop: it fails, saying it could not tell why."""
    refuse_replays(chain, monkeypatch)
    first, second = closes_in_one_block(make_service(), 2)

    assert first.status is TxStatus.CONFIRMED
    assert second.status is TxStatus.FAILED
    assert second.mined is not None
    assert second.error is not None
    error = restore_error(second.error)
    assert (type(error), error.code) == (ExecutionRevertedError, "execution_reverted")
    assert error.message.startswith("reverted on chain; ")
    assert "no trace tells why (replay failed: ValidationError" in error.message
    assert error.details["transactionIndex"] == 1  # no replay on the state before the block pretends to know


@pytest.mark.only_backend("eth-tester")
def test_a_replay_that_py_evm_refuses_names_what_refused_it(
    chain: Chain,
    make_service: Callable[..., Blocking[RelayService]],
    closes_in_one_block: Callable[[Blocking[RelayService], int], list[RelayRecord]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The record says why the replay could not tell: py-evm's own error (was `replayError` and the message
    "reverted on chain; could not replay it: ValidationError: ...")."""
    refuse_replays(chain, monkeypatch)
    _, second = closes_in_one_block(make_service(), 2)
    assert second.status is TxStatus.FAILED
    assert second.error is not None
    assert "ValidationError: cannot re-execute block" in json.dumps(second.error)
