"""The relay record and its attempts as plain values (no SQL, no web3), plus their wire view."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from relayer.constants import ETH_DECIMALS, MAX_LIST_LIMIT, MAX_LIST_OFFSET
from relayer.domain.fees import Fees
from relayer.domain.sponsorship import Charge
from relayer.domain.status import AttemptKind, RecordKind, TxStatus
from relayer.domain.units import format_fixed
from relayer.errors import InvalidFieldError


@dataclass(frozen=True)
class RecordPage:
    """Which records a listing asks for, checked: an optional status, at most `limit` from `offset`."""

    status: TxStatus | None
    limit: int
    offset: int

    @classmethod
    def parse(cls, status: str | None, limit: int, offset: int = 0) -> RecordPage:
        """The one rule for every listing face (REST, `relayer relay list`).

        Raises:
            InvalidFieldError: an unknown status, or a limit or offset out of range (an offset past a signed
                64-bit integer would otherwise overflow in SQLite).
        """
        wanted = None
        if status:
            try:
                wanted = TxStatus(status)
            except ValueError:
                raise InvalidFieldError(
                    "status", f"must be one of {', '.join(s.value for s in TxStatus)}"
                ) from None
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise InvalidFieldError("limit", f"must be between 1 and {MAX_LIST_LIMIT}", value=limit)
        if not 0 <= offset <= MAX_LIST_OFFSET:
            raise InvalidFieldError("offset", f"must be between 0 and {MAX_LIST_OFFSET}", value=offset)
        return cls(wanted, limit, offset)


@dataclass(frozen=True)
class Attempt:
    """One signed transaction of a record. A record keeps every attempt (every hash it ever had)."""

    tx_hash: str
    seq: int
    kind: AttemptKind
    raw_tx: bytes
    max_fee_per_gas_wei: int
    max_priority_fee_per_gas_wei: int
    created_at: float
    broadcast_at: float | None = None


@dataclass(frozen=True)
class RequestRef:
    """The owner-signed request a record relays (an EIP-712 close or set-trigger): who signed it, its
    per-owner vault nonce, and the deadline after which the relayer frees the record's nonce with a no-op.
    The journal keeps at most one live record per (owner, nonce)."""

    owner: str
    nonce: int
    deadline: int


@dataclass(frozen=True)
class Mined:
    """Where and how a record's transaction was mined."""

    tx_hash: str
    block_number: int
    block_hash: str
    gas_used: int
    effective_gas_price_wei: int
    success: bool
    events: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class RelayRecord:
    """One relayed request: what was sent, from whom at which nonce, where it stands, and every hash."""

    id: str
    kind: RecordKind
    status: TxStatus
    request_hash: str
    sender: str
    nonce: int
    chain_id: int
    to: str
    data: bytes
    value_wei: int
    gas_limit: int
    created_at: float
    updated_at: float
    idempotency_key: str | None = None
    request: RequestRef | None = None
    """The signed request relayed (None: a call of the relayer's own, or a raw transaction)."""
    account: str | None = None
    """The account the record acts for: the signed request's owner, the API-key holder's account, the
    position owner for a keeper execution, the sender of a raw transaction; None in records journaled before
    schema 4."""
    noop_outcome: TxStatus | None = None
    error: dict[str, Any] | None = None
    mined: Mined | None = None
    attempts: tuple[Attempt, ...] = ()

    @property
    def latest(self) -> Attempt:
        """The most recent attempt (the one with the highest fees)."""
        return self.attempts[-1]

    @property
    def hashes(self) -> list[str]:
        return [attempt.tx_hash for attempt in self.attempts]

    def to_dict(self) -> dict[str, Any]:
        """The record as `GET /api/transactions/{id}` serves it: big integers as strings, no key material."""
        view: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind.value,
            "status": self.status.value,
            "from": self.sender,
            "account": self.account,
            "to": self.to,
            "nonce": self.nonce,
            "chainId": self.chain_id,
            "data": "0x" + self.data.hex(),
            "value": str(self.value_wei),
            "gasLimit": self.gas_limit,
            "transactionHash": self.mined.tx_hash
            if self.mined
            else (self.latest.tx_hash if self.attempts else None),
            "hashes": [
                {
                    "hash": a.tx_hash,
                    "kind": a.kind.value,
                    "maxFeePerGas": str(a.max_fee_per_gas_wei),
                    "maxPriorityFeePerGas": str(a.max_priority_fee_per_gas_wei),
                    "broadcast": a.broadcast_at is not None,
                }
                for a in self.attempts
            ],
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
            "error": self.error,
        }
        if self.request is not None:
            view["request"] = {
                "owner": self.request.owner,
                "nonce": str(self.request.nonce),
                "deadline": self.request.deadline,
            }
        if self.mined is not None:
            fee_wei = self.mined.gas_used * self.mined.effective_gas_price_wei
            view["receipt"] = {
                "transactionHash": self.mined.tx_hash,
                "blockNumber": self.mined.block_number,
                "blockHash": self.mined.block_hash,
                "gasUsed": self.mined.gas_used,
                "effectiveGasPrice": str(self.mined.effective_gas_price_wei),
                "fee": format_fixed(fee_wei, ETH_DECIMALS),
                "success": self.mined.success,
                "events": self.mined.events,
            }
        return view


@dataclass(frozen=True)
class CallPlan:
    """A checked, simulated vault call waiting for a nonce and a signature."""

    kind: RecordKind
    to: str
    data: bytes
    gas_limit: int
    fees: Fees
    request_hash: str
    idempotency_key: str | None = None
    account: str | None = None
    """The account the call acts for (kept on the record)."""
    request: RequestRef | None = None
    charge: Charge | None = None
    """What the sponsorship policy reserves for it when it is signed (None: not charged)."""


@dataclass(frozen=True)
class Intent:
    """A call journaled by an instance that does not hold its signer's lease: the holder numbers, signs and
    sends it as the record of the same id (`state` "waiting"), or refuses it (`state` "failed", with the
    error a client gets)."""

    id: str
    chain_id: int
    signer: str
    plan: CallPlan
    created_at: float
    state: str = "waiting"
    error: dict[str, Any] | None = None

    WAITING: ClassVar[str] = "waiting"
    FAILED: ClassVar[str] = "failed"


@dataclass(frozen=True)
class Lease:
    """The right to act for a signer (`signer:<address>`), on raw transactions (`raw`) or as the keeper
    (`keeper`) on one chain, held by one instance until `expires_at` (unix seconds, the database's clock).
    `epoch` grows at every takeover: the fencing token a write checks in its own transaction."""

    chain_id: int
    name: str
    holder: str
    epoch: int
    expires_at: float
    acquired_at: float
