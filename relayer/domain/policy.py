"""What the relayer agrees to send: pure checks over decoded values (no node, no journal).

The vault is the only target; only its position-management functions may be called (a `multicall` only if
every inner call is itself allowed); the chain id must be ours; relayed fees are capped. The cap never applies
to a no-op nonce filler, so a fee spike can never leave a nonce gap that jams the queue.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_account.typed_transactions.typed_transaction import TypedTransaction
from eth_utils.address import to_checksum_address
from hexbytes import HexBytes

from relayer.domain import calldata
from relayer.domain.bps import plus_bps
from relayer.domain.fees import Fees
from relayer.domain.jsonio import reject_unknown_fields
from relayer.domain.status import RecordKind
from relayer.errors import (
    DisallowedTransactionError,
    FeeBelowBaseFeeError,
    FeeCapExceededError,
    InvalidFieldError,
    InvalidNonceError,
    NonceTooFarError,
    TooManyPendingError,
)

FUNCTION_KINDS: dict[str, RecordKind] = {
    "openPosition": RecordKind.OPEN,
    "closePosition": RecordKind.CLOSE,
    "closePositionWithSig": RecordKind.CLOSE,
    "emergencyExit": RecordKind.CLOSE,
    "emergencyExitWithSig": RecordKind.CLOSE,
    "setTakeProfit": RecordKind.TRIGGER,
    "setStopLoss": RecordKind.TRIGGER,
    "setTriggerWithSig": RecordKind.TRIGGER,
    "setOrder": RecordKind.TRIGGER,
    "cancelOrder": RecordKind.TRIGGER,
    "setExitPlan": RecordKind.TRIGGER,
    "setExitPlanWithSig": RecordKind.TRIGGER,
    "cancelOrderWithSig": RecordKind.TRIGGER,
    "executeTrigger": RecordKind.EXECUTE,
    "executeOrder": RecordKind.EXECUTE,
    "ratchetStop": RecordKind.EXECUTE,
}
"""The record kind of each position function but `multicall` (see `call_kind`): closes (an emergency exit
included), order changes (`trigger`: take-profits, stops, whole exit plans, cancellations) and the keeper's
calls (`execute`: executing an order, ratcheting a trailing stop)."""

POSITION_FUNCTIONS: frozenset[str] = frozenset({*FUNCTION_KINDS, "multicall"})
"""The vault functions a relayed transaction (raw, or a call the relayer makes) may call: position management
only. No admin call, and no operator grant (`setOperator`, `setOperatorRights`, `setOperatorWithSig`): who may
act for an account is the owner's own act. The one way the relayer carries a grant is the owner's EIP-712
`SetOperatorRequest` through `POST /api/relay/signed` (kind `operator_rights`), whose signature over the exact
grant is checked against that owner before anything is paid (`relayer.domain.typed_data`)."""

MAX_MULTICALL_DEPTH = 1
"""A `multicall` may hold allowed calls, not further multicalls."""


@dataclass(frozen=True)
class RawTransaction:
    """The fields of a user-signed typed transaction the relayer checks, with its recovered sender."""

    raw: bytes
    sender: str
    chain_id: int
    nonce: int
    to: str | None
    value_wei: int
    data: bytes
    gas_limit: int
    max_fee_per_gas_wei: int
    max_priority_fee_per_gas_wei: int
    tx_type: int


RAW_RELAY_FIELDS = ("transaction", "rawTransaction")
"""The fields of a `POST /api/relay/raw` body: the signed bytes, under either name (not both)."""

_HEX_BYTES = re.compile(r"0x(?:[0-9a-fA-F]{2})+", re.ASCII)  # exact: `bytes.fromhex` alone skips whitespace


def parse_raw_relay(body: Mapping[str, Any]) -> RawTransaction:
    """`{"transaction": "0x<signed raw transaction>"}`, decoded and its sender recovered.

    Raises:
        InvalidFieldError: an unknown field, both names at once, or bytes that are not whole 0x-hex.
        DisallowedTransactionError: per `decode_raw_transaction`.
    """
    reject_unknown_fields(body, RAW_RELAY_FIELDS)
    if len(body) > 1:
        raise InvalidFieldError("rawTransaction", "give the signed bytes once, as `transaction`")
    text = body.get("transaction", body.get("rawTransaction"))
    if not isinstance(text, str) or not _HEX_BYTES.fullmatch(text):
        raise InvalidFieldError("transaction", "must be the signed transaction as 0x-hex (whole bytes)")
    return decode_raw_transaction(bytes.fromhex(text[2:]))


def decode_raw_transaction(raw: bytes) -> RawTransaction:
    """Decode and recover a signed EIP-1559 (type 2) or EIP-2930 (type 1) transaction.

    Raises:
        DisallowedTransactionError: for legacy, blob or set-code transactions, or bytes that do not decode.
    """
    if not raw or raw[0] not in (1, 2):
        raise DisallowedTransactionError(
            "only typed EIP-1559 (type 2) or EIP-2930 (type 1) transactions are relayed", field="transaction"
        )
    try:
        fields: dict[str, Any] = TypedTransaction.from_bytes(HexBytes(raw)).as_dict()
        sender = to_checksum_address(Account.recover_transaction(raw))
    except Exception:  # any malformed encoding or signature: one answer for the client
        raise DisallowedTransactionError("the transaction bytes do not decode", field="transaction") from None
    to = fields.get("to")
    if raw[0] == 1:
        max_fee = priority = int(fields["gasPrice"])
    else:
        max_fee, priority = int(fields["maxFeePerGas"]), int(fields["maxPriorityFeePerGas"])
    return RawTransaction(
        raw=raw,
        sender=sender,
        chain_id=int(fields["chainId"]),
        nonce=int(fields["nonce"]),
        to=to_checksum_address(bytes(to)) if to else None,
        value_wei=int(fields["value"]),
        data=bytes(fields["data"]),
        gas_limit=int(fields["gas"]),
        max_fee_per_gas_wei=max_fee,
        max_priority_fee_per_gas_wei=priority,
        tx_type=raw[0],
    )


def check_call(
    to: str | None, data: bytes, *, vault: str, allowed: frozenset[str] = POSITION_FUNCTIONS
) -> str:
    """The vault function `data` calls, if the call is allowed.

    Raises:
        DisallowedTransactionError: wrong target, unknown or disallowed function (also inside a multicall).
    """
    if to is None or to_checksum_address(to) != to_checksum_address(vault):
        raise DisallowedTransactionError("the transaction must target the vault", to=to, vaultAddress=vault)
    return _check_function(data, allowed, depth=0)


def call_kind(data: bytes) -> RecordKind:
    """The record kind of a vault call that passed `check_call`: by its function, and for a `multicall` by its
    calls (one kind: that kind; several: `multicall`).

    >>> call_kind(calldata.encode_call("executeTrigger", b"\\x01" * 32))
    <RecordKind.EXECUTE: 'execute'>
    """
    function, args = calldata.decode_call(data)
    if function != "multicall":
        return FUNCTION_KINDS[function]
    kinds = {call_kind(bytes(inner)) for inner in args["data"]}
    return kinds.pop() if len(kinds) == 1 else RecordKind.MULTICALL


def _check_function(data: bytes, allowed: frozenset[str], depth: int) -> str:
    try:
        function, args = calldata.decode_call(data)
    except Exception:  # web3 raises several types for an unknown selector or bad arguments
        raise DisallowedTransactionError(
            "the calldata is not a call of a vault function", selector="0x" + data[:4].hex()
        ) from None
    if function not in allowed:
        raise DisallowedTransactionError(f"vault function {function} may not be relayed", function=function)
    if function == "multicall":
        if depth >= MAX_MULTICALL_DEPTH:
            raise DisallowedTransactionError("nested multicall may not be relayed", function=function)
        for inner in args["data"]:
            _check_function(bytes(inner), allowed, depth + 1)
    return function


def check_raw(
    tx: RawTransaction, *, vault: str, chain_id: int, allowed: frozenset[str] = POSITION_FUNCTIONS
) -> str:
    """Check a decoded raw transaction against the policy; returns the vault function it calls.

    Raises:
        DisallowedTransactionError: wrong chain id, value sent, wrong target or disallowed function.
    """
    if tx.chain_id != chain_id:
        raise DisallowedTransactionError(
            "the transaction is signed for another chain", chainId=tx.chain_id, expectedChainId=chain_id
        )
    if tx.value_wei != 0:
        raise DisallowedTransactionError(
            "the vault accepts no ether: value must be 0", value=str(tx.value_wei)
        )
    return check_call(tx.to, tx.data, vault=vault, allowed=allowed)


def check_raw_sendable(
    tx: RawTransaction, *, next_nonce: int, base_fee_wei: int | None, balance_wei: int, nonce_window: int
) -> None:
    """Whether a raw transaction could be mined now, judged against its sender's state at the latest block:
    its nonce is the sender's next one or at most `nonce_window` ahead, its max fee pays the latest base fee
    (not checked on a chain without one), and the sender's balance pays its gas limit at its max fee plus its
    value. One that fails any of these would sit queued, never mined, and be broadcast again and again.

    >>> tx = RawTransaction(b"", "0xS", 1, 5, None, 0, b"", 100_000, 10, 1, 2)
    >>> check_raw_sendable(tx, next_nonce=3, base_fee_wei=7, balance_wei=10**6, nonce_window=2)
    >>> check_raw_sendable(tx, next_nonce=3, base_fee_wei=7, balance_wei=10**6, nonce_window=1)
    Traceback (most recent call last):
    ...
    relayer.errors.NonceTooFarError: nonce 5 of 0xS is 2 ahead of its next nonce 3 (at most 1 allowed)

    Raises:
        InvalidNonceError: the nonce is already used on chain (a replay).
        NonceTooFarError: the nonce is more than `nonce_window` ahead of `next_nonce`.
        FeeBelowBaseFeeError: the max fee per gas is below the latest block's base fee.
        DisallowedTransactionError: the sender cannot pay for its gas and value.
    """
    if tx.nonce < next_nonce:
        raise InvalidNonceError(
            f"nonce {tx.nonce} of {tx.sender} is already used (replayed)",
            owner=tx.sender,
            expected=next_nonce,
            got=tx.nonce,
        )
    if tx.nonce - next_nonce > nonce_window:
        raise NonceTooFarError(
            f"nonce {tx.nonce} of {tx.sender} is {tx.nonce - next_nonce} ahead of its next nonce {next_nonce}"
            f" (at most {nonce_window} allowed)",
            sender=tx.sender,
            nonce=tx.nonce,
            nextNonce=next_nonce,
            window=nonce_window,
        )
    if base_fee_wei is not None and tx.max_fee_per_gas_wei < base_fee_wei:
        raise FeeBelowBaseFeeError(
            "the transaction's max fee per gas is below the latest block's base fee: no block would take it",
            maxFeePerGas=str(tx.max_fee_per_gas_wei),
            baseFeePerGas=str(base_fee_wei),
        )
    worst_cost_wei = tx.gas_limit * tx.max_fee_per_gas_wei + tx.value_wei
    if balance_wei < worst_cost_wei:  # the node would refuse it: the sender's problem, said now
        raise DisallowedTransactionError(
            "the transaction's sender cannot pay for its gas and value",
            sender=tx.sender,
            balanceWei=str(balance_wei),
            maxCostWei=str(worst_cost_wei),
        )


def check_raw_pending(sender: str, unmined: int, *, max_pending: int) -> None:
    """A sender may have at most `max_pending` raw transactions here not yet mined (`unmined`) when a new one
    arrives.

    Raises:
        TooManyPendingError: it already has `max_pending` (or more).
    """
    if unmined >= max_pending:
        raise TooManyPendingError(
            f"{sender} already has {unmined} raw transactions waiting here (at most {max_pending}):"
            " send more once they are mined or expired",
            sender=sender,
            pending=unmined,
            limit=max_pending,
        )


def cap_fees(fees: Fees, max_fee_per_gas_wei: int, *, base_fee_wei: int | None) -> Fees:
    """Fees clamped to the cap; refuses when even the cap cannot pay the current base fee.

    Raises:
        FeeCapExceededError: when the base fee alone is above the cap (nothing could be mined now).
    """
    if base_fee_wei is not None and base_fee_wei > max_fee_per_gas_wei:
        raise FeeCapExceededError(
            "the network base fee is above the relayer's max fee per gas",
            baseFeePerGas=str(base_fee_wei),
            maxFeePerGas=str(max_fee_per_gas_wei),
        )
    if fees.is_legacy:
        return Fees(0, 0, min(fees.price_cap_wei, max_fee_per_gas_wei))
    max_fee = min(fees.max_fee_per_gas_wei, max_fee_per_gas_wei)
    return Fees(max_fee, min(fees.max_priority_fee_per_gas_wei, max_fee))


def bump_fees(previous: Fees, current: Fees, bump_bps: int, *, cap_wei: int | None) -> Fees | None:
    """Replacement fees: at least `bump_bps` above `previous` on both fees (rounded up) and no less than the
    network's `current` suggestion; None when the cap forbids a valid bump.

    >>> bump_fees(Fees(100, 10), Fees(50, 5), 1_000, cap_wei=None)
    Fees(max_fee_per_gas_wei=110, max_priority_fee_per_gas_wei=11, gas_price_wei=None)
    >>> bump_fees(Fees(100, 10), Fees(50, 5), 1_000, cap_wei=105) is None
    True
    """

    def up(value: int) -> int:
        return plus_bps(value, bump_bps, round_up=True)

    if previous.is_legacy:
        price = max(up(previous.price_cap_wei), current.price_cap_wei)
        if cap_wei is not None and price > cap_wei:
            return None
        return Fees(0, 0, price)
    priority = max(up(previous.max_priority_fee_per_gas_wei), current.max_priority_fee_per_gas_wei)
    max_fee = max(up(previous.max_fee_per_gas_wei), current.max_fee_per_gas_wei, priority)
    if cap_wei is not None and max_fee > cap_wei:
        return None
    return Fees(max_fee, priority)


def is_low_balance(balance_wei: int, min_balance_wei: int) -> bool:
    """Whether a signer's balance should raise an alert in health."""
    return balance_wei < min_balance_wei
