"""Why a relayed transaction reverted is read at its own position in its block.

Two full closes of one position relayed into one block: the first closes it, the second reverts with the
vault's `PositionNotFound`, which only shows on the state the first left behind (on the state before the
block, the second close succeeds). On anvil the node's trace says so; on eth-tester the block is re-executed
in process; a node without `debug_traceTransaction` (anvil behind a provider that refuses the debug
namespace, as many hosted nodes do) replays only a block's first transaction and says so when it cannot tell.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes
from web3 import HTTPProvider, Web3
from web3.types import RPCEndpoint, RPCResponse, TxReceipt

from relayer.chain.connect import Chain
from relayer.chain.deploy import Deployment
from relayer.chain.node import RelayNode
from relayer.chain.transact import build_transaction
from relayer.domain import calldata
from relayer.domain.records import RelayRecord
from relayer.domain.status import TxStatus
from relayer.errors import ExecutionRevertedError, PositionNotFoundError, restore_error
from relayer.services.relay.service import RelayService
from tests.conftest import units
from tests.relay.conftest import settle
from tests.relay.test_relay_recovery import automine_off, mine


class NoTraceProvider(HTTPProvider):
    """A real node reached over HTTP that answers every `debug_*` method the way a node without the debug
    namespace does (JSON-RPC -32601), and logs the methods it was asked."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.asked: list[str] = []

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        self.asked.append(method)
        if method.startswith("debug_"):
            return {
                "jsonrpc": "2.0",
                "id": 0,
                "error": {"code": -32601, "message": f"the method {method} does not exist/is not available"},
            }
        return super().make_request(method, params)


@pytest.fixture
def no_trace(chain: Chain) -> tuple[Chain, NoTraceProvider]:
    """The same anvil, seen through a provider without the debug namespace."""
    provider = NoTraceProvider(chain.w3.provider.endpoint_uri)  # type: ignore[attr-defined]
    return Chain(Web3(provider), "anvil without traces", None, chain.test_keys), provider


@pytest.fixture
def closes_in_one_block(
    chain: Chain,
    accounts: list[LocalAccount],
    relay_accounts: list[LocalAccount],
    transact: Callable[[LocalAccount, bytes], TxReceipt],
    open_position: Callable[..., bytes],
) -> Callable[[RelayService, int], list[RelayRecord]]:
    """Factory: relay `count` full closes of one fresh position, each simulated alone (so each is sent), mine
    them into one block, settle, and return their records in the order they sit in the block."""

    def _closes(service: RelayService, count: int) -> list[RelayRecord]:
        trader = accounts[1]
        for signer in relay_accounts:  # the relayer closes for the trader as an approved operator
            transact(trader, calldata.set_operator(signer.address, True))
        position_id = open_position(owner=trader, size="1")
        close_all = calldata.close_position(position_id, units("1"), 0)
        with automine_off(chain):
            ids = [service.submit_call(close_all).record.id for _ in range(count)]
            mine(chain)
        settle(service)
        records = [service.get(record_id) for record_id in ids]
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
    make_service: Callable[..., RelayService],
    closes_in_one_block: Callable[[RelayService, int], list[RelayRecord]],
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
    chain: Chain, deployment: Deployment, accounts: list[LocalAccount], open_position: Callable[..., bytes]
) -> None:
    trader = accounts[1]
    close = calldata.close_position(open_position(owner=trader), units("1"), 0)
    tx = build_transaction(chain.w3, trader.address, deployment.address, close)
    tx["gas"] = 30_000  # above the intrinsic cost, far below what the close needs
    tx_hash = chain.w3.eth.send_raw_transaction(trader.sign_transaction(tx).raw_transaction)
    chain.w3.eth.wait_for_transaction_receipt(tx_hash)  # anvil mines right after answering
    node = RelayNode(chain, deployment.address)
    receipt = node.receipt(HexBytes(tx_hash).to_0x_hex())
    assert receipt is not None
    assert receipt.mined.success is False
    error = restore_error(node.revert_reason(receipt, trader.address, deployment.address, close, 30_000))
    assert (type(error), error.code) == (ExecutionRevertedError, "execution_reverted")
    assert error.details["evmError"] in {"out of gas", "OutOfGas"}  # anvil's trace / py-evm's exception


@pytest.mark.only_backend("anvil")
def test_without_traces_a_later_transaction_of_a_block_is_reported_honestly_and_the_node_asked_once(
    make_service: Callable[..., RelayService],
    closes_in_one_block: Callable[[RelayService, int], list[RelayRecord]],
    no_trace: tuple[Chain, NoTraceProvider],
) -> None:
    target, provider = no_trace
    first, *later = closes_in_one_block(make_service(target=target), 3)
    assert first.status is TxStatus.CONFIRMED
    for index, record in enumerate(later, start=1):
        assert record.status is TxStatus.FAILED
        assert record.error is not None
        error = restore_error(record.error)
        assert (type(error), error.code) == (ExecutionRevertedError, "execution_reverted")
        assert "the node offers no trace to tell why" in error.message
        assert error.details["transactionIndex"] == index
    assert provider.asked.count("debug_traceTransaction") == 1  # "method not found" is remembered
    assert "eth_call" not in provider.asked  # no replay pretends to know


@pytest.mark.only_backend("anvil")
def test_without_traces_a_blocks_first_transaction_is_replayed_on_the_state_before_it(
    chain: Chain,
    deployment: Deployment,
    accounts: list[LocalAccount],
    no_trace: tuple[Chain, NoTraceProvider],
) -> None:
    trader = accounts[1]
    close = calldata.close_position(b"\x07" * 32, units("1"), 0)  # no such position
    tx = build_transaction(chain.w3, trader.address, deployment.address, calldata.encode_call("markets"))
    tx.update(data=HexBytes(close), gas=200_000)  # signed without simulation: it reverts on chain
    tx_hash = chain.w3.eth.send_raw_transaction(trader.sign_transaction(tx).raw_transaction)
    chain.w3.eth.wait_for_transaction_receipt(tx_hash)  # anvil mines right after answering
    target, provider = no_trace
    node = RelayNode(target, deployment.address)
    receipt = node.receipt(HexBytes(tx_hash).to_0x_hex())
    assert receipt is not None
    assert (receipt.mined.success, receipt.transaction_index) == (False, 0)
    before = len(provider.asked)
    error = restore_error(node.revert_reason(receipt, trader.address, deployment.address, close, 200_000))
    assert (type(error), error.code) == (PositionNotFoundError, "position_not_found")
    assert error.details["positionId"] == "0x" + "07" * 32
    asked = [m for m in provider.asked[before:] if m in {"debug_traceTransaction", "eth_call"}]
    assert asked == ["debug_traceTransaction", "eth_call"]  # no trace, so the replay


@pytest.mark.only_backend("eth-tester")
def test_a_replay_that_py_evm_refuses_still_fails_the_record_honestly(
    chain: Chain,
    make_service: Callable[..., RelayService],
    closes_in_one_block: Callable[[RelayService, int], list[RelayRecord]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A replay that raises something other than a revert (py-evm's `ValidationError`, say) must not leave
    the record `submitted`, failing every round of the loop: it fails, saying the replay could not tell
    why."""
    from eth_utils.exceptions import ValidationError  # what py-evm raises for a block it refuses

    def refuse(tx_hash: str, block_number: int) -> None:
        raise ValidationError(f"cannot re-execute block {block_number}")

    monkeypatch.setattr(chain, "replay_in_block", refuse)
    first, second = closes_in_one_block(make_service(), 2)

    assert first.status is TxStatus.CONFIRMED
    assert second.status is TxStatus.FAILED
    assert second.mined is not None
    assert second.error is not None
    error = restore_error(second.error)
    assert (type(error), error.code) == (ExecutionRevertedError, "execution_reverted")
    assert error.message.startswith("reverted on chain; could not replay it: ValidationError: cannot re-exec")
    assert error.details["replayError"] == "ValidationError"
