"""`EmbeddedRpc`: the in-process chain answers JSON-RPC calls exactly as a node would on the wire, errors
included, and never runs py-evm from two threads at once."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_typing import HexStr
from eth_utils.crypto import keccak
from eth_utils.exceptions import ValidationError

from relayer.chain.artifact import load_artifact
from relayer.chain.connect import Chain, embedded_chain, rpc_chain
from relayer.chain.deploy import deploy_vault
from relayer.chain.embedded_rpc import EmbeddedRpc
from relayer.chain.jsonrpc import RpcCall, RpcReply
from relayer.chain.node_errors import Kind, classify, classify_rpc_error
from relayer.chain.transact import build_transaction
from relayer.domain import calldata
from relayer.errors import ChainUnavailableError, InvalidSizeError

pytestmark = pytest.mark.anyio

_HEX = re.compile(r"0x[0-9a-fA-F]*\Z")
_QUANTITY = re.compile(r"0x(?:0|[1-9a-f][0-9a-f]*)\Z")
_WORD = re.compile(r"0x[0-9a-f]{64}\Z")
_INVALID_SIZE = keccak(text="InvalidSize(uint256)")[:4]
_POSITION_OPENED = "0x" + keccak(text="PositionOpened(bytes32,address,bytes32,bool,uint256,uint256)").hex()
_GAS = 500_000


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the adapter hands its work to a thread with asyncio's run_in_executor


@pytest.fixture(scope="module")
def embedded() -> Chain:
    return embedded_chain()


@pytest.fixture(scope="module")
def vault(embedded: Chain) -> str:
    return deploy_vault(embedded.w3, embedded.test_accounts()[0]).address


@pytest.fixture
def _restore(embedded: Chain, vault: str) -> Iterator[None]:
    snapshot = embedded.snapshot()
    try:
        yield
    finally:
        with embedded.lock:
            embedded.tester.enable_auto_mine_transactions()
            embedded.revert(snapshot)


@pytest.fixture
async def rpc(embedded: Chain, _restore: None) -> AsyncIterator[EmbeddedRpc]:
    adapter = EmbeddedRpc(embedded)
    try:
        yield adapter
    finally:
        await adapter.aclose()


def call(method: str, *params: Any) -> RpcCall:
    return RpcCall(method, list(params))


def assert_wire(value: Any) -> None:
    """JSON as a node sends it: no numbers but floats, no bytes, camelCase keys."""
    assert json.loads(json.dumps(value)) == value
    if isinstance(value, dict):
        for key, item in value.items():
            assert "_" not in key, key
            assert_wire(item)
    elif isinstance(value, list):
        for item in value:
            assert_wire(item)
    else:
        assert value is None or isinstance(value, bool | str | float), repr(value)
        if isinstance(value, str):
            assert _HEX.match(value), value


def signed(chain: Chain, account: LocalAccount, to: str, data: bytes, **fields: Any) -> tuple[str, str]:
    """(raw, hash) of a type-2 transaction, with a fixed gas limit so that it may revert when mined."""
    with chain.lock:
        w3 = chain.w3
        tx: dict[str, Any] = {
            "type": 2,
            "chainId": w3.eth.chain_id,
            "to": to,
            "data": data,
            "value": 0,
            "gas": _GAS,
            "maxFeePerGas": 100 * 10**9,
            "maxPriorityFeePerGas": 10**9,
            "nonce": w3.eth.get_transaction_count(account.address, "pending"),
        }
    tx.update(fields)
    raw = account.sign_transaction(tx)
    return "0x" + raw.raw_transaction.hex(), "0x" + raw.hash.hex()


def open_call(size: int = 10**18) -> bytes:
    return calldata.open_position("BTCUSDT", True, size, 0)


def test_only_the_embedded_chain() -> None:
    with pytest.raises(TypeError):
        EmbeddedRpc(rpc_chain("http://127.0.0.1:1"))


async def test_reads_answer_in_wire_format(rpc: EmbeddedRpc, embedded: Chain, vault: str) -> None:
    trader = embedded.test_accounts()[1].address
    with embedded.lock:
        number = embedded.w3.eth.block_number
        balance = embedded.w3.eth.get_balance(trader)
        chain_id = embedded.w3.eth.chain_id
    replies = await rpc.batch(
        [
            call("eth_chainId"),
            call("eth_blockNumber"),
            call("eth_getBlockByNumber", "latest", False),
            call("eth_getBlockByNumber", hex(number), False),
            call("eth_getBlockByNumber", hex(number + 100), False),
            call("eth_getCode", vault, "latest"),
            call("eth_getTransactionCount", trader, "pending"),
            call("eth_getTransactionCount", trader.lower(), "latest"),
            call("eth_getBalance", trader, "latest"),
            call("eth_gasPrice"),
            call("eth_maxPriorityFeePerGas"),
            call("eth_getTransactionReceipt", "0x" + "11" * 32),
        ]
    )
    assert all(reply.error is None for reply in replies), [reply.error for reply in replies]
    for reply in replies:
        assert_wire(reply.result)
    for reply in (replies[0], replies[1], replies[6], replies[7], replies[8], replies[9], replies[10]):
        assert _QUANTITY.match(reply.result), reply.result
    assert replies[0].quantity() == chain_id
    assert replies[1].quantity() == number
    latest, same = replies[2].result, replies[3].result
    assert latest == same
    assert latest["number"] == hex(number)
    assert _WORD.match(latest["hash"])
    assert _WORD.match(latest["parentHash"])
    assert len(latest["logsBloom"]) == 2 + 2 * 256
    assert all(_WORD.match(tx_hash) for tx_hash in latest["transactions"])
    assert replies[2].head().number == number
    assert replies[4].result is None
    assert load_artifact().matches_runtime_code(replies[5].data())
    assert replies[6].quantity() == replies[7].quantity() == 0
    assert replies[8].quantity() == balance
    assert replies[11].result is None
    assert (rpc.batches_answered, rpc.calls_answered) == (1, len(replies))


async def test_calls_with_and_without_a_sender(rpc: EmbeddedRpc, embedded: Chain, vault: str) -> None:
    with embedded.lock:
        number = embedded.w3.eth.block_number
    trader = embedded.test_accounts()[1].address
    markets, opened = await rpc.batch(
        [
            call("eth_call", {"to": vault, "data": "0x" + calldata.encode_call("markets").hex()}, "latest"),
            call(
                "eth_call",
                {"from": trader, "to": vault, "data": "0x" + open_call().hex(), "gas": hex(_GAS)},
                hex(number),
            ),
        ]
    )
    assert markets.error is None
    assert _HEX.match(markets.result)
    assert len(markets.data()) == 32 * 5  # offset, length, three markets
    assert opened.error is None
    assert _WORD.match(opened.result)


async def test_a_revert_answers_code_3_with_its_data(rpc: EmbeddedRpc, embedded: Chain, vault: str) -> None:
    trader = embedded.test_accounts()[1].address
    data = "0x" + open_call(size=0).hex()
    replies = await rpc.batch(
        [
            call("eth_call", {"to": vault, "data": data}, "latest"),
            call("eth_call", {"from": trader, "to": vault, "data": data, "gas": hex(_GAS)}, "latest"),
            call("eth_estimateGas", {"from": trader, "to": vault, "data": data}),
        ]
    )
    for reply in replies:
        assert reply.error is not None
        assert reply.error["code"] == 3
        assert reply.error["message"] == "execution reverted"
        assert reply.error["data"] == "0x" + (_INVALID_SIZE + bytes(32)).hex()
        assert classify_rpc_error(reply.error).kind is Kind.REVERTED
        with pytest.raises(InvalidSizeError):
            reply.value()


async def test_refused_transactions_classify_as_before(rpc: EmbeddedRpc, embedded: Chain, vault: str) -> None:
    """Each refusal answers an error object that classifies like the exception eth-tester raised."""
    trader = embedded.test_accounts()[1]
    with embedded.lock:
        sent, _ = signed(embedded, trader, vault, open_call())
        embedded.w3.eth.send_raw_transaction(HexStr(sent))  # nonce 0 is used now
    used, _ = signed(embedded, trader, vault, open_call(), nonce=0)
    future, _ = signed(embedded, trader, vault, open_call(), nonce=9)
    poor, _ = signed(embedded, Account.create(), vault, open_call())
    cheap, _ = signed(embedded, trader, vault, open_call(), maxFeePerGas=1, maxPriorityFeePerGas=1)
    raws = [used, future, poor, cheap]
    replies = await rpc.batch([call("eth_sendRawTransaction", raw) for raw in raws])
    kinds = []
    for raw, reply in zip(raws, replies, strict=True):
        with embedded.lock, pytest.raises(ValidationError) as raised:
            embedded.w3.eth.send_raw_transaction(HexStr(raw))
        assert reply.error is not None
        assert reply.error["code"] == -32000
        assert str(raised.value) in reply.error["message"]  # eth-tester's words are kept
        assert classify_rpc_error(reply.error).kind is classify(raised.value).kind
        kinds.append(classify_rpc_error(reply.error).kind)
    # A max fee under the base fee waits for a bump (as geth's "max fee per gas less than block base fee").
    assert kinds == [Kind.NONCE_TOO_LOW, Kind.NONCE_GAP, Kind.INSUFFICIENT_FUNDS, Kind.UNDERPRICED]
    assert replies[0].error is not None
    assert replies[0].error["message"].startswith("nonce too low: ")


async def test_a_sent_transaction_has_a_receipt_and_logs(
    rpc: EmbeddedRpc, embedded: Chain, vault: str
) -> None:
    trader = embedded.test_accounts()[1]
    with embedded.lock:
        tx = build_transaction(embedded.w3, trader.address, vault, open_call())
    raw = trader.sign_transaction(tx)
    tx_hash = "0x" + raw.hash.hex()
    (sent,) = await rpc.batch([call("eth_sendRawTransaction", "0x" + raw.raw_transaction.hex())])
    assert sent.error is None
    assert sent.result == tx_hash
    (receipt_reply,) = await rpc.batch([call("eth_getTransactionReceipt", tx_hash)])
    receipt = receipt_reply.result
    assert_wire(receipt)
    assert receipt["status"] == "0x1"
    assert receipt["transactionHash"] == tx_hash
    assert _QUANTITY.match(receipt["blockNumber"])
    assert _QUANTITY.match(receipt["gasUsed"])
    block = receipt["blockNumber"]
    (opened,) = [log for log in receipt["logs"] if log["topics"][0] == _POSITION_OPENED]
    assert all(_WORD.match(topic) for topic in opened["topics"])
    assert opened["address"].lower() == vault.lower()
    assert opened["removed"] is False
    filters = [
        {"address": vault, "topics": [_POSITION_OPENED], "fromBlock": block, "toBlock": block},
        {"address": [vault.lower()], "topics": [[_POSITION_OPENED]], "fromBlock": "0x0", "toBlock": "latest"},
    ]
    replies = await rpc.batch([call("eth_getLogs", log_filter) for log_filter in filters])
    for reply in replies:
        assert reply.error is None
        assert_wire(reply.result)
        assert reply.result == [opened]
    assert set(opened) >= {
        "address",
        "topics",
        "data",
        "blockNumber",
        "blockHash",
        "logIndex",
        "transactionHash",
        "transactionIndex",
    }


async def test_trace_of_mined_transactions(rpc: EmbeddedRpc, embedded: Chain, vault: str) -> None:
    """Two transactions in one block (auto-mining off): the second reverts, and its trace says why."""
    with embedded.lock:
        embedded.tester.disable_auto_mine_transactions()
    good_raw, good = signed(embedded, embedded.test_accounts()[1], vault, open_call())
    bad_raw, bad = signed(embedded, embedded.test_accounts()[2], vault, open_call(size=0))
    replies = await rpc.batch(
        [
            call("eth_sendRawTransaction", good_raw),
            call("eth_sendRawTransaction", bad_raw),
            call("eth_getTransactionReceipt", bad),
            call("debug_traceTransaction", bad, {"tracer": "callTracer"}),
        ]
    )
    assert [reply.result for reply in replies[:3]] == [good, bad, None]  # pending: no receipt, no trace
    assert replies[3].error == {"code": -32000, "message": "transaction not found"}
    with embedded.lock:
        embedded.tester.mine_blocks()
    options = {"tracer": "callTracer", "tracerConfig": {"onlyTopCall": True}}
    good_receipt, bad_receipt, good_trace, bad_trace, unknown = await rpc.batch(
        [
            call("eth_getTransactionReceipt", good),
            call("eth_getTransactionReceipt", bad),
            call("debug_traceTransaction", good, options),
            call("debug_traceTransaction", bad, options),
            call("debug_traceTransaction", "0x" + "22" * 32, options),
        ]
    )
    assert good_receipt.result["blockNumber"] == bad_receipt.result["blockNumber"]
    assert (good_receipt.result["status"], bad_receipt.result["status"]) == ("0x1", "0x0")
    assert bad_receipt.result["transactionIndex"] == "0x1"
    assert good_trace.result["type"] == "CALL"
    assert "error" not in good_trace.result
    assert _WORD.match(good_trace.result["output"])
    assert bad_trace.result == {
        "type": "CALL",
        "error": "execution reverted",
        "output": "0x" + (_INVALID_SIZE + bytes(32)).hex(),
    }
    assert unknown.error == {"code": -32000, "message": "transaction not found"}


async def test_a_failed_replay_is_an_error_object(
    rpc: EmbeddedRpc, embedded: Chain, vault: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw, tx_hash = signed(embedded, embedded.test_accounts()[1], vault, open_call())
    await rpc.batch([call("eth_sendRawTransaction", raw)])

    def refuse(tx_hash: str, block_number: int) -> None:
        raise RuntimeError("state root mismatch")

    monkeypatch.setattr(embedded, "replay_in_block", refuse)
    (reply,) = await rpc.batch([call("debug_traceTransaction", tx_hash, {})])
    assert reply.error == {"code": -32000, "message": "replay failed: RuntimeError: state root mismatch"}


async def test_unknown_methods_are_not_found(rpc: EmbeddedRpc) -> None:
    (reply,) = await rpc.batch([call("eth_noSuchMethod", 1)])
    assert reply.error is not None
    assert reply.error["code"] == -32601
    assert classify_rpc_error(reply.error).kind is Kind.PERMANENT


async def test_concurrent_batches_are_all_answered(rpc: EmbeddedRpc, embedded: Chain) -> None:
    accounts = [account.address for account in embedded.test_accounts()]

    async def ask(address: str) -> list[RpcReply]:
        return await rpc.batch(
            [call("eth_blockNumber"), call("eth_getBalance", address, "latest"), call("eth_chainId")]
        )

    answers = await asyncio.gather(*(ask(accounts[i % len(accounts)]) for i in range(30)))
    assert all(len(replies) == 3 for replies in answers)
    assert all(reply.error is None and _QUANTITY.match(reply.result) for r in answers for reply in r)
    assert (rpc.batches_answered, rpc.calls_answered) == (30, 90)


async def test_a_batch_waits_while_another_thread_holds_the_chain(rpc: EmbeddedRpc, embedded: Chain) -> None:
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with embedded.lock:
            holding.set()
            release.wait()

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait()
    try:
        pending = asyncio.ensure_future(rpc.batch([call("eth_blockNumber")]))
        await asyncio.sleep(0.2)
        assert not pending.done()
        assert rpc.calls_answered == 0
    finally:
        release.set()
        holder.join()
    (reply,) = await pending
    assert reply.error is None
    assert rpc.calls_answered == 1


@pytest.mark.usefixtures("_restore")
def test_two_event_loops_never_run_the_chain_at_once(
    embedded: Chain, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two adapters, each in its own thread and event loop, on one chain: one py-evm call at a time."""
    manager = embedded.w3.manager
    original = manager.request_blocking
    inside, most = 0, 0
    counting = threading.Lock()

    def watched(method: Any, params: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal inside, most
        with counting:
            inside += 1
            most = max(most, inside)
        try:
            return original(method, params, *args, **kwargs)
        finally:
            with counting:
                inside -= 1

    monkeypatch.setattr(manager, "request_blocking", watched)
    accounts = [account.address for account in embedded.test_accounts()]
    answered: list[int] = []

    async def drive() -> None:
        adapter = EmbeddedRpc(embedded)
        try:
            batches = [
                adapter.batch([call("eth_getBalance", address, "latest"), call("eth_blockNumber")])
                for address in accounts
            ]
            replies = await asyncio.gather(*batches)
            answered.append(sum(reply.error is None for r in replies for reply in r))
        finally:
            await adapter.aclose()

    threads = [threading.Thread(target=asyncio.run, args=(drive(),)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answered == [2 * len(accounts)] * 2
    assert most == 1


async def test_closed_adapter_refuses_batches(embedded: Chain) -> None:
    adapter = EmbeddedRpc(embedded)
    (reply,) = await adapter.batch([call("eth_chainId")])
    assert reply.error is None
    await adapter.aclose()
    await adapter.aclose()
    with pytest.raises(ChainUnavailableError):
        await adapter.batch([call("eth_chainId")])
