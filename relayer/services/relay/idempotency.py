"""The idempotency rule of the relay: a key names one request; a repeat gets its record, never a second one.

A key is scoped per caller (`values.scoped_key`) and compared with the request's fingerprint
(`values.request_hash`: what the request asks of the vault, not its JSON spelling). Copies of one keyed
request sent at once all miss the key at first; the losers then meet the winner's effects (its live request,
its used nonce, the position it closed) or a uniqueness rule of the journal, and must answer the winner's
record.
"""

from __future__ import annotations

from relayer.errors import DuplicateRequestError, IdempotencyConflictError, RelayerError
from relayer.services.relay.values import Submission
from relayer.stores.journal_port import Journal, JournalConflict


def earlier(journal: Journal, key: str | None, fingerprint: str) -> Submission | None:
    """The record an earlier request with this (scoped) key made (None: a new key, or no key).

    Raises:
        IdempotencyConflictError: the key was used with a different request.
    """
    if key is None:
        return None
    existing = journal.by_idempotency_key(key)
    if existing is None:
        return None
    if existing.request_hash != fingerprint:
        raise IdempotencyConflictError(
            "this Idempotency-Key was used with a different request", idempotencyKey=key, id=existing.id
        )
    return Submission(existing, False)


def answer_of_key(journal: Journal, key: str | None, fingerprint: str, error: RelayerError) -> Submission:
    """The record a concurrent copy of this request made under the same key, if one did; else `error`.

    Raises:
        IdempotencyConflictError: the key was taken by another request meanwhile.
        RelayerError: `error`, when no record has the key.
    """
    again = earlier(journal, key, fingerprint)
    if again is None:
        raise error
    return again


def after_conflict(
    journal: Journal,
    conflict: JournalConflict,
    key: str | None,
    fingerprint: str,
    *,
    raw_hash: str | None = None,
) -> Submission:
    """A uniqueness rule refused the insert. The key is looked at first, whichever rule the store named:
    SQLite reports one of several that a concurrent copy of the request breaks at once.

    Raises:
        DuplicateRequestError: the same signed request is in flight under no key or another one.
        JournalConflict: a rule no earlier record explains (a bug).
    """
    if key is not None:
        again = earlier(journal, key, fingerprint)
        if again is not None:
            return again
    if conflict.constraint == "request_owner":
        raise DuplicateRequestError("this signed request is already being relayed (same owner and nonce)")
    if conflict.constraint == "tx_hash" and raw_hash is not None:
        known = journal.by_hash(raw_hash)
        if known is not None:
            return Submission(known, False)
    raise conflict
