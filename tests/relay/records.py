"""A factory for relay records in journal tests: one unfinished record with one attempt, nothing else."""

from __future__ import annotations

from relayer.domain.records import Attempt, RelayRecord, RequestRef
from relayer.domain.status import AttemptKind, RecordKind, TxStatus

SENDER = "0x" + "5a" * 20
"""The relayer signer the records are sent from (a journal test never signs)."""


def queued_record(
    record_id: str,
    nonce: int,
    *,
    chain_id: int = 31337,
    idempotency_key: str | None = None,
    owner: str | None = None,
) -> RelayRecord:
    """A minimal `queued` close of `SENDER` at `nonce`, its one attempt's hash derived from the id; with
    `owner`, a signed request of that owner (nonce 0), which the live-request uniqueness rule covers."""
    attempt = Attempt(f"0x{record_id}", 0, AttemptKind.ORIGINAL, b"raw", 10, 1, 1.0)
    return RelayRecord(
        id=record_id,
        kind=RecordKind.CLOSE,
        status=TxStatus.QUEUED,
        request_hash="h",
        sender=SENDER,
        nonce=nonce,
        chain_id=chain_id,
        to=SENDER,
        data=b"\x01",
        value_wei=0,
        gas_limit=100_000,
        created_at=1.0,
        updated_at=1.0,
        idempotency_key=idempotency_key,
        request=RequestRef(owner, 0, 2_000_000_000) if owner else None,
        attempts=(attempt,),
    )
