"""How the journal's records and attempts map to and from their SQLite rows.

Pure conversions over `sqlite3.Row` values and domain records (`relayer.domain.records`): no queries here.
`Journal` and `JournalWriter` in `relayer.stores.journal` run the SQL and use these to read and write rows.
"""

from __future__ import annotations

import json
import sqlite3

from relayer.domain.records import Attempt, Mined, RelayRecord, RequestRef
from relayer.domain.status import AttemptKind, RecordKind, TxStatus


def conflict_constraint(exc: sqlite3.IntegrityError) -> str:
    text = str(exc)
    for name in ("idempotency_key", "request_owner", "attempts.tx_hash", "records.sender"):
        if name in text:
            return {"records.sender": "signer_nonce", "attempts.tx_hash": "tx_hash"}.get(name, name)
    return text


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


def attempt_from_row(row: sqlite3.Row) -> Attempt:
    return Attempt(
        tx_hash=row["tx_hash"],
        seq=int(row["seq"]),
        kind=AttemptKind(row["kind"]),
        raw_tx=bytes(row["raw_tx"]),
        max_fee_per_gas_wei=int(row["max_fee_per_gas_wei"]),
        max_priority_fee_per_gas_wei=int(row["max_priority_fee_per_gas_wei"]),
        created_at=row["created_at"],  # REAL columns: SQLite returns them as Python floats (seconds)
        broadcast_at=row["broadcast_at"],
    )


def _request(row: sqlite3.Row) -> RequestRef | None:
    """The three request columns, written together (`insert`), as one value."""
    if row["request_owner"] is None:
        return None
    return RequestRef(row["request_owner"], int(row["request_nonce"]), int(row["deadline"]))


def record_from_row(row: sqlite3.Row, attempts: list[Attempt]) -> RelayRecord:
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
