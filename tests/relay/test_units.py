"""The relay's pure parts and its journal, without a chain: classification, fee bumps, policy, signers,
settings, and the journal's schema, write-ahead transaction and compare-and-set."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from eth_account import Account
from eth_typing import HexStr
from hypothesis import given
from hypothesis import strategies as st

from relayer.chain.node_errors import Kind, classify
from relayer.config import RelaySettings
from relayer.domain import calldata
from relayer.domain.fees import Fees
from relayer.domain.policy import (
    FUNCTION_KINDS,
    POSITION_FUNCTIONS,
    bump_fees,
    call_kind,
    cap_fees,
    check_call,
    decode_raw_transaction,
)
from relayer.domain.status import ALLOWED, FINAL, RecordKind, TxStatus, can_transition
from relayer.errors import ConfigurationError, DisallowedTransactionError, FeeCapExceededError
from relayer.services.relay.nonces import next_nonce
from relayer.services.relay.signers import Signer, SignerPool, load_signers
from relayer.stores.journal import SqliteJournal, open_journal
from relayer.stores.journal_port import JournalConflict
from relayer.stores.sqlite import SCHEMA_VERSION
from tests.relay.records import queued_record

VAULT = Account.from_key("0x" + "44" * 32).address
KEY = "0x" + "11" * 32


class RpcError(Exception):
    """Shaped like web3's `Web3RPCError`: the node's JSON-RPC error in `rpc_response`."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.rpc_response = {"error": {"code": code, "message": message}}


class ValidationError(Exception):
    """Named like eth-tester's pool refusals (classification goes by its name and message)."""


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (RpcError(-32003, "transaction already imported"), Kind.ALREADY_KNOWN),
        (RpcError(-32000, "already known"), Kind.ALREADY_KNOWN),
        (RpcError(-32003, "nonce too low"), Kind.NONCE_TOO_LOW),
        (RpcError(-32000, "replacement transaction underpriced"), Kind.UNDERPRICED),
        (RpcError(-32003, "Insufficient funds for gas * price + value"), Kind.INSUFFICIENT_FUNDS),
        (RpcError(-32003, "invalid chain id for signer"), Kind.PERMANENT),
        (RpcError(-32000, "intrinsic gas too low"), Kind.PERMANENT),
        (ValidationError("Invalid transaction nonce: Expected 4, but got 3"), Kind.NONCE_TOO_LOW),
        (ValidationError("Invalid transaction nonce: Expected 4, but got 6"), Kind.NONCE_GAP),
        (
            ValidationError("Sender does not have enough balance to cover transaction value and gas"),
            Kind.INSUFFICIENT_FUNDS,
        ),
        (ConnectionError("refused"), Kind.UNAVAILABLE),
        (TimeoutError(), Kind.UNAVAILABLE),
    ],
)
def test_node_errors_are_classified_once(exc: Exception, kind: Kind) -> None:
    error = classify(exc)
    assert error.kind is kind
    if isinstance(exc, RpcError):
        assert error.code == exc.rpc_response["error"]["code"]
    assert kind.is_transient == (
        kind in {Kind.NONCE_GAP, Kind.UNDERPRICED, Kind.INSUFFICIENT_FUNDS, Kind.UNAVAILABLE}
    )


def test_status_table_is_closed_and_final_states_are_terminal() -> None:
    assert set(ALLOWED) == set(TxStatus)
    for status in FINAL:
        assert ALLOWED[status] == frozenset()
    assert can_transition(TxStatus.MINED, TxStatus.SUBMITTED)  # reorg
    assert not can_transition(TxStatus.FAILED, TxStatus.MINED)


@given(
    max_fee=st.integers(1, 10**15),
    priority=st.integers(1, 10**12),
    bump=st.integers(1_000, 5_000),
)
def test_bumped_fees_are_always_at_least_ten_percent_higher(max_fee: int, priority: int, bump: int) -> None:
    previous = Fees(max(max_fee, priority), priority)
    fees = bump_fees(previous, Fees(1, 1), bump, cap_wei=None)
    assert fees is not None
    assert fees.max_fee_per_gas_wei * 10 >= previous.max_fee_per_gas_wei * 11
    assert fees.max_priority_fee_per_gas_wei * 10 >= previous.max_priority_fee_per_gas_wei * 11
    assert fees.max_priority_fee_per_gas_wei <= fees.max_fee_per_gas_wei
    capped = bump_fees(previous, Fees(1, 1), bump, cap_wei=fees.max_fee_per_gas_wei - 1)
    assert capped is None


def test_fee_cap_clamps_or_refuses() -> None:
    assert cap_fees(Fees(300, 20), 100, base_fee_wei=50) == Fees(100, 20)
    assert cap_fees(Fees(300, 200), 100, base_fee_wei=50) == Fees(100, 100)
    with pytest.raises(FeeCapExceededError):
        cap_fees(Fees(300, 20), 100, base_fee_wei=101)


def test_policy_allows_position_functions_only() -> None:
    position = b"\x01" * 32
    assert check_call(VAULT, calldata.close_position(position, 1, 0), vault=VAULT) == "closePosition"
    inner = [calldata.close_position(position, 1, 0), calldata.set_take_profit(position, 10**8, 100)]
    assert check_call(VAULT, calldata.multicall(inner), vault=VAULT) == "multicall"
    for bad in (
        calldata.set_operator(VAULT, True),
        calldata.encode_call("setPriceKeeper", VAULT, True),
        calldata.multicall([calldata.encode_call("setMaxPriceAge", 10)]),
        calldata.multicall([calldata.multicall([])]),
        b"\xde\xad\xbe\xef",
    ):
        with pytest.raises(DisallowedTransactionError):
            check_call(VAULT, bad, vault=VAULT)
    with pytest.raises(DisallowedTransactionError):
        check_call("0x" + "cd" * 20, calldata.close_position(position, 1, 0), vault=VAULT)


def test_raw_transactions_decode_and_legacy_is_refused() -> None:
    account = Account.from_key(KEY)
    tx = {
        "type": 2,
        "chainId": 5,
        "nonce": 3,
        "to": VAULT,
        "value": 0,
        "gas": 50_000,
        "maxFeePerGas": 10,
        "maxPriorityFeePerGas": 2,
        "data": b"\x01\x02",
    }
    decoded = decode_raw_transaction(bytes(account.sign_transaction(tx).raw_transaction))
    assert (decoded.sender, decoded.chain_id, decoded.nonce, decoded.data) == (
        account.address,
        5,
        3,
        b"\x01\x02",
    )
    legacy = account.sign_transaction(
        {"chainId": 5, "nonce": 3, "to": VAULT, "value": 0, "gas": 50_000, "gasPrice": 1}
    )
    with pytest.raises(DisallowedTransactionError):
        decode_raw_transaction(bytes(legacy.raw_transaction))


def test_nonce_allocation_takes_the_higher_of_chain_and_journal() -> None:
    assert next_nonce(0, None) == 0
    assert next_nonce(3, None) == 3
    assert next_nonce(3, 7) == 8
    assert next_nonce(10, 7) == 10


def test_signers_never_show_their_key(tmp_path: Path) -> None:
    signer = Signer(Account.from_key(KEY))
    assert KEY[2:] not in repr(signer)
    assert KEY[2:] not in str(signer)
    keystore = tmp_path / "k.json"
    keystore.write_text(json.dumps(Account.encrypt(HexStr("0x" + "22" * 32), "pw", iterations=2)))
    env = {
        "RELAYER_SIGNER_KEY": KEY,
        "RELAYER_SIGNER_1_KEYSTORE": str(keystore),
        "RELAYER_SIGNER_1_KEYSTORE_PASSWORD": "pw",
        "RELAYER_SIGNER_2_KEY": "0x" + "33" * 32,
    }
    signers = load_signers(env)
    assert [s.address for s in signers] == [
        Account.from_key(k).address for k in (KEY, "0x" + "22" * 32, "0x" + "33" * 32)
    ]
    pool = SignerPool(signers)
    firsts = [pool.rotation()[0].address for _ in range(6)]
    assert set(firsts) == {s.address for s in signers}  # work spreads over all of them
    with pytest.raises(ConfigurationError) as error:
        load_signers({"RELAYER_SIGNER_KEY": "0x1234"})
    assert "1234" not in str(error.value)
    with pytest.raises(ConfigurationError):
        load_signers({"RELAYER_SIGNER_KEY": KEY, "RELAYER_SIGNER_1_KEY": KEY})
    with pytest.raises(ConfigurationError):
        SignerPool([])


def test_settings_from_env() -> None:
    settings = RelaySettings.from_env(
        {"RELAYER_RELAY_JOURNAL_PATH": "/tmp/j.sqlite3", "RELAYER_RELAY_CONFIRMATIONS": "3"}
    )
    assert (settings.journal_path, settings.confirmations) == (Path("/tmp/j.sqlite3"), 3)
    with pytest.raises(ConfigurationError):
        RelaySettings.from_env({"RELAYER_RELAY_CONFIRMATIONS": "three"})
    with pytest.raises(ConfigurationError):
        RelaySettings(fee_bump_bps=500)


def test_every_setting_has_its_variable_and_empty_means_unset() -> None:
    names = list(RelaySettings.model_fields)
    empty = {f"RELAYER_RELAY_{name.upper()}": "" for name in names}
    assert RelaySettings.from_env(empty) == RelaySettings()  # as in the app's `Settings.load`
    custom = RelaySettings(
        journal_path=Path("/tmp/other.sqlite3"),
        confirmations=2,
        replace_after_s=5,
        fee_bump_bps=2_000,
        max_fee_per_gas_wei=7,
        min_signer_balance_wei=8,
        poll_interval_s=0.25,
        broadcast_retries=4,
        retry_backoff_s=0.5,
        request_ttl_s=60,
    )
    env = {f"RELAYER_RELAY_{name.upper()}": str(getattr(custom, name)) for name in names}
    assert RelaySettings.from_env(env) == custom


@pytest.mark.parametrize(
    "bad",
    [
        {"poll_interval_s": 0},  # the loop would spin
        {"poll_interval_s": -1},
        {"poll_interval_s": float("nan")},
        {"request_ttl_s": 0},  # typed data would expire as it is handed out
        {"retry_backoff_s": -0.1},
    ],
)
def test_settings_refuse_intervals_that_break_the_loop(bad: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError):
        RelaySettings(**bad)
    name, value = next(iter(bad.items()))
    with pytest.raises(ConfigurationError):
        RelaySettings.from_env({f"RELAYER_RELAY_{name.upper()}": str(value)})


def test_every_position_function_has_a_record_kind() -> None:
    assert set(FUNCTION_KINDS) | {"multicall"} == POSITION_FUNCTIONS
    pid = b"\x01" * 32
    close = calldata.close_position(pid, 1, 0)
    take_profit = calldata.encode_call("setTakeProfit", pid, 10**8, 10_000)
    stop_loss = calldata.encode_call("setStopLoss", pid, 10**8, 10_000)
    execute = calldata.encode_call("executeTrigger", pid)
    assert [call_kind(data) for data in (close, take_profit, execute)] == [
        RecordKind.CLOSE,
        RecordKind.TRIGGER,
        RecordKind.EXECUTE,
    ]
    assert call_kind(calldata.encode_call("multicall", [take_profit, stop_loss])) is RecordKind.TRIGGER
    assert call_kind(calldata.encode_call("multicall", [close, take_profit])) is RecordKind.MULTICALL


def test_issue_12_calls_are_allowed_and_classified_and_operator_grants_are_not() -> None:
    pid = b"\x01" * 32
    owner = "0x" + "11" * 20
    kinds = {
        calldata.set_order(pid, 1, 10**8, 2_500): RecordKind.TRIGGER,
        calldata.cancel_order(pid, 4): RecordKind.TRIGGER,
        calldata.set_exit_plan(pid, [(0, 10**8, 2_500, 0), (4, 10**7, 10_000, 100)]): RecordKind.TRIGGER,
        calldata.set_exit_plan_with_sig(pid, [], 0, 1, b"\1" * 65): RecordKind.TRIGGER,
        calldata.cancel_order_with_sig(pid, 0, 0, 1, b"\1" * 65): RecordKind.TRIGGER,
        calldata.execute_order(pid, 2): RecordKind.EXECUTE,
        calldata.ratchet_stop(pid, 4): RecordKind.EXECUTE,
        calldata.emergency_exit(owner): RecordKind.CLOSE,
        calldata.emergency_exit_with_sig(owner, "BTCUSDT", 0, 1, b"\1" * 65): RecordKind.CLOSE,
    }
    for data, kind in kinds.items():
        check_call(VAULT, data, vault=VAULT)
        assert call_kind(data) is kind
    assert call_kind(
        calldata.multicall([calldata.execute_order(pid, 4), calldata.execute_order(pid, 0)])
    ) is (RecordKind.EXECUTE)
    for grant in (
        calldata.set_operator_rights(owner, 7, 0),
        calldata.set_operator_with_sig(owner, owner, 7, 0, 0, 1, b"\1" * 65),
        calldata.multicall([calldata.set_operator_rights(owner, 15, 0)]),
    ):
        with pytest.raises(DisallowedTransactionError):
            check_call(VAULT, grant, vault=VAULT)


def test_operator_commands_open_only_an_existing_journal_unless_they_create(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    with pytest.raises(ConfigurationError, match="no relay journal"):
        open_journal(path, create=False)
    assert not path.exists()  # a reader never leaves an empty journal behind
    open_journal(path, create=True).close()
    open_journal(path, create=False).close()


def test_journal_schema_wal_and_compare_and_set(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    journal = SqliteJournal(path)
    assert journal.schema_version == SCHEMA_VERSION
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with journal.write() as writer:
        assert writer.max_nonce("0xS") is None
        writer.insert(queued_record("a", 0, idempotency_key="k", owner="0xO"))
    for duplicate, rule in (
        (queued_record("b", 0), "signer_nonce"),
        (queued_record("c", 1, idempotency_key="k"), "idempotency_key"),
        (queued_record("d", 2, owner="0xO"), "request_owner"),
    ):
        with pytest.raises(JournalConflict) as conflict, journal.write() as writer:
            writer.insert(duplicate)
        assert conflict.value.constraint == rule
    assert [r.id for r in journal.records()] == ["a"]  # the refused writes left nothing behind

    assert journal.transition("a", TxStatus.QUEUED, TxStatus.SUBMITTED, now=2.0)
    assert not journal.transition("a", TxStatus.QUEUED, TxStatus.SUBMITTED, now=3.0)  # moved on: no-op
    with pytest.raises(ValueError, match="illegal"):
        journal.transition("a", TxStatus.SUBMITTED, TxStatus.QUEUED, now=3.0)
    journal.close()
    reopened = SqliteJournal(path)  # migrations are idempotent; the record survived
    record = reopened.get("a")
    assert record is not None
    assert record.status is TxStatus.SUBMITTED
    assert record.hashes == ["0xa"]
    assert reopened.by_hash("0xa") == record
    reopened.close()
