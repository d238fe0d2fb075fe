"""How the journal's records, attempts and intents map to and from their rows (either database).

Pure conversions over rows (`relayer.stores.sql.Row`) and domain records (`relayer.domain.records`): no
queries here.
`Journal` and `JournalWriter` in `relayer.stores.journal` run the SQL and use these to read and write rows.
"""

from __future__ import annotations

import json

from relayer.domain.fees import Fees
from relayer.domain.records import Attempt, CallPlan, Intent, Lease, Mined, RelayRecord, RequestRef
from relayer.domain.sponsorship import Charge
from relayer.domain.status import AttemptKind, RecordKind, TxStatus
from relayer.stores.sql import Row

_CONFLICTS = (
    ("idempotency_key", "idempotency_key"),
    ("request_owner", "request_owner"),
    ("records_live_request", "request_owner"),
    ("attempts.tx_hash", "tx_hash"),
    ("attempts_pkey", "tx_hash"),
    ("records.sender", "signer_nonce"),
    ("records_signer_nonce", "signer_nonce"),
)
"""What a uniqueness rule is called in SQLite's message (its columns) or by PostgreSQL (its name), and the
name `JournalConflict` gives it."""


def conflict_constraint(constraint: str) -> str:
    """`JournalConflict`'s name for the rule an insert broke (`relayer.stores.sql.UniqueViolation`)."""
    return next((name for found, name in _CONFLICTS if found in constraint), constraint)


def mined_json(mined: Mined) -> str:
    return json.dumps(
        {
            "tx_hash": mined.tx_hash,
            "block_number": mined.block_number,
            "block_hash": mined.block_hash,
            "gas_used": mined.gas_used,
            "effective_gas_price_wei": str(mined.effective_gas_price_wei),
            "success": mined.success,
            "events": mined.events,
        },
        sort_keys=True,
    )


def attempt_from_row(row: Row) -> Attempt:
    return Attempt(
        tx_hash=row["tx_hash"],
        seq=int(row["seq"]),
        kind=AttemptKind(row["kind"]),
        raw_tx=bytes(row["raw_tx"]),
        max_fee_per_gas_wei=int(row["max_fee_per_gas_wei"]),
        max_priority_fee_per_gas_wei=int(row["max_priority_fee_per_gas_wei"]),
        created_at=row["created_at"],  # REAL / DOUBLE PRECISION: both drivers return Python floats (seconds)
        broadcast_at=row["broadcast_at"],
    )


def _request(row: Row) -> RequestRef | None:
    """The three request columns, written together (`insert`), as one value."""
    if row["request_owner"] is None:
        return None
    return RequestRef(row["request_owner"], int(row["request_nonce"]), int(row["deadline"]))


def record_from_row(row: Row, attempts: list[Attempt]) -> RelayRecord:
    mined = None
    if row["mined"] is not None:
        raw = json.loads(row["mined"])
        mined = Mined(
            tx_hash=raw["tx_hash"],
            block_number=int(raw["block_number"]),
            block_hash=raw["block_hash"],
            gas_used=int(raw["gas_used"]),
            effective_gas_price_wei=int(raw["effective_gas_price_wei"]),
            success=bool(raw["success"]),
            events=list(raw["events"]),
        )
    return RelayRecord(
        id=row["id"],
        kind=RecordKind(row["kind"]),
        status=TxStatus(row["status"]),
        request_hash=row["request_hash"],
        sender=row["sender"],
        nonce=int(row["nonce"]),
        chain_id=int(row["chain_id"]),
        to=row["to_address"],
        data=bytes(row["data"]),
        value_wei=int(row["value_wei"]),
        gas_limit=int(row["gas_limit"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        idempotency_key=row["idempotency_key"],
        request=_request(row),
        account=row["account"],
        noop_outcome=None if row["noop_outcome"] is None else TxStatus(row["noop_outcome"]),
        error=None if row["error"] is None else json.loads(row["error"]),
        mined=mined,
        attempts=tuple(attempts),
    )


def fees_json(fees: Fees) -> str:
    return json.dumps(
        {
            "max_fee_per_gas_wei": str(fees.max_fee_per_gas_wei),
            "max_priority_fee_per_gas_wei": str(fees.max_priority_fee_per_gas_wei),
            "gas_price_wei": None if fees.gas_price_wei is None else str(fees.gas_price_wei),
        },
        sort_keys=True,
    )


def _fees(text: str) -> Fees:
    raw = json.loads(text)
    price = raw["gas_price_wei"]
    return Fees(
        int(raw["max_fee_per_gas_wei"]),
        int(raw["max_priority_fee_per_gas_wei"]),
        None if price is None else int(price),
    )


def intent_from_row(row: Row) -> Intent:
    plan = CallPlan(
        kind=RecordKind(row["kind"]),
        to=row["to_address"],
        data=bytes(row["data"]),
        gas_limit=int(row["gas_limit"]),
        fees=_fees(row["fees"]),
        request_hash=row["request_hash"],
        idempotency_key=row["idempotency_key"],
        account=row["account"],
        request=_request(row),
        charge=None if row["charge"] is None else Charge.from_json(row["charge"]),
    )
    return Intent(
        id=row["id"],
        chain_id=int(row["chain_id"]),
        signer=row["signer"],
        plan=plan,
        created_at=row["created_at"],
        state=row["state"],
        error=None if row["error"] is None else json.loads(row["error"]),
    )


def lease_from_row(row: Row) -> Lease:
    return Lease(
        chain_id=int(row["chain_id"]),
        name=row["name"],
        holder=row["holder"],
        epoch=int(row["epoch"]),
        expires_at=row["expires_at"],
        acquired_at=row["acquired_at"],
    )
