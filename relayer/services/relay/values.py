"""The relay's plain values: what `RelayService` and its `Sender` take in and hand back.

Idempotency-key scopes and request fingerprints, a submission's answer, a signer's status, the call the
builder checked for the relay, and the plan, transaction dict and fees the sender signs with (and its test
hooks).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from relayer.domain.blocks import ChainHead
from relayer.domain.fees import Fees, fee_fields
from relayer.domain.records import Attempt, RelayRecord
from relayer.domain.sponsorship import Sponsored
from relayer.domain.status import RecordKind
from relayer.errors import InvalidFieldError

PUBLIC_SCOPE = "public"
"""The idempotency-key namespace of anonymous callers (signed and raw relays)."""
KEEPER_SCOPE = "keeper"
"""The keeper's namespace: no client can name it, so no client can squat an order's key."""
MAX_IDEMPOTENCY_KEY_CHARS = 200


def scoped_key(scope: str, key: str | None) -> str | None:
    """`scope:key`: callers share one journal but never one key space (a client must not be able to take
    the key the keeper, or another account, will use).

    Raises:
        InvalidFieldError: a key that is empty or longer than 200 characters.
    """
    if key is None:
        return None
    if not key or len(key) > MAX_IDEMPOTENCY_KEY_CHARS:
        raise InvalidFieldError("Idempotency-Key", f"must be 1..{MAX_IDEMPOTENCY_KEY_CHARS} characters")
    return f"{scope}:{key}"


@dataclass(frozen=True)
class Submission:
    """A relay answer: the record, and whether this call created it (False: an idempotent repeat)."""

    record: RelayRecord
    created: bool


@dataclass(frozen=True)
class SignerStatus:
    """What an operator needs to see of one relayer signer."""

    address: str
    balance_wei: int
    low_balance: bool
    chain_latest_nonce: int
    chain_pending_nonce: int
    journal_next_nonce: int
    in_flight: int
    stopped: str | None = None
    """Why this process sends nothing for the signer (in use by another journal); None: it may send."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "balanceWei": str(self.balance_wei),
            "lowBalance": self.low_balance,
            "chainLatestNonce": self.chain_latest_nonce,
            "chainPendingNonce": self.chain_pending_nonce,
            "journalNextNonce": self.journal_next_nonce,
            "inFlight": self.in_flight,
            "stopped": self.stopped,
        }


def request_hash(endpoint: str, body: Mapping[str, Any]) -> str:
    """A stable fingerprint of a request body for the idempotency rule (key order and spacing ignored)."""
    canonical = json.dumps(
        {"endpoint": endpoint, "body": body}, sort_keys=True, separators=(",", ":"), default=str
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class CheckedCall:
    """A vault call the builder built, checked and simulated for `account`: the relay journals and sends it
    without checking, simulating or looking up its idempotency key again (the caller did all three)."""

    data: bytes
    kind: RecordKind
    gas_limit: int
    """The builder's: its simulation (from the position's owner) plus the configured margin; the relay adds
    `OPERATOR_CHECK_GAS` for the operator check its signer's call makes."""
    head: ChainHead
    fees: Fees
    """The block the builder read and the fees suggested for the next one (capped here by the relay's max)."""
    account: str
    fingerprint: str
    idempotency_key: str | None
    key_scope: str
    sponsored: Sponsored | None = None
    """Whom the sponsorship policy charges (None: `account` as an owner)."""


NOOP_GAS = 21_000
"""Intrinsic gas of a plain value transfer: a no-op self-transfer needs exactly this, on every EVM chain."""


@dataclass(frozen=True)
class SenderHooks:
    """Test seams to simulate a crash: called right after the journal commit, and right after the node
    accepted an attempt (before the journal notes it). A hook that raises stops the sender right there."""

    after_journal: Callable[[RelayRecord], None] | None = None
    after_broadcast: Callable[[RelayRecord, Attempt], None] | None = None


def build_tx(
    *, chain_id: int, nonce: int, to: str, data: bytes, value_wei: int, gas: int, fees: Fees
) -> dict[str, Any]:
    """A signable transaction dict (type 2, or legacy on chains without a base fee)."""
    return {
        "chainId": chain_id,
        "nonce": nonce,
        "to": to,
        "data": data,
        "value": value_wei,
        "gas": gas,
        **fee_fields(fees),
    }


def attempt_fees(attempt: Attempt, *, legacy: bool) -> Fees:
    """The fees an attempt was signed with (legacy attempts keep their gas price as max fee)."""
    if legacy:
        return Fees(0, 0, attempt.max_fee_per_gas_wei)
    return Fees(attempt.max_fee_per_gas_wei, attempt.max_priority_fee_per_gas_wei)
