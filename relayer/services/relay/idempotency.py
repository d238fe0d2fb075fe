"""The idempotency rule of the relay: a key names one request; a repeat gets its record, never a second one.

A key is scoped per caller (`values.scoped_key`) and compared with the request's fingerprint
(`values.request_hash`: what the request asks of the vault, not its JSON spelling). Copies of one keyed
request sent at once all miss the key at first; the losers then meet the winner's effects (its live request,
its used nonce, the position it closed) or a uniqueness rule of the journal, and must answer the winner's
record.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from relayer.domain.records import Intent
from relayer.errors import (
    DuplicateRequestError,
    IdempotencyConflictError,
    RelayerError,
    RequestInProgressError,
    StoreUnavailableError,
    restore_error,
)
from relayer.services.relay.values import Submission
from relayer.stores.journal_port import Journal, JournalConflict

CLAIM_STALE_S = 10.0
"""A claim not renewed for this long was left by a process that died mid-request: another request takes it
over. The request working on a key renews its claim every third of this (`_keep_renewing`)."""
CLAIM_POLL_S = 0.02
"""How often a copy waiting for the first request's answer looks again."""


@asynccontextmanager
async def claimed(
    journal: Journal, key: str | None, fingerprint: str, *, wait_s: float
) -> AsyncIterator[Submission | None]:
    """Work on a keyed request only once: yields the earlier answer of this key (a record), or None once this
    request holds the key's claim in the database, which it keeps until its record is journaled (the insert
    ends the claim) or it ends without one (released here). Copies sent at once, to this instance or another,
    wait for the first one's record instead of racing it; past `wait_s` they get `request_in_progress`.

    Raises:
        IdempotencyConflictError: the key was used with a different request.
        RequestInProgressError: the first request with this key is still being worked on after `wait_s`.
        RelayerError: the error the first request's intent was refused with (its answer).
    """
    if key is None:
        yield None
        return
    holder = uuid.uuid4().hex
    deadline = time.monotonic() + wait_s
    while True:
        found = earlier(journal, key, fingerprint)
        if found is not None:
            yield found
            return
        intent = journal.intent_by_key(key)
        if intent is not None:  # journaled for another instance's signer: its record is coming
            if intent.plan.request_hash != fingerprint:
                raise IdempotencyConflictError(
                    "this Idempotency-Key was used with a different request", idempotencyKey=key, id=intent.id
                )
            if intent.state == Intent.FAILED and intent.error is not None:
                raise restore_error(intent.error)
        else:
            other = journal.claim_key(key, fingerprint, holder, stale_after_s=CLAIM_STALE_S)
            if other is None:
                break
            if other != fingerprint:
                raise IdempotencyConflictError(
                    "this Idempotency-Key was used with a different request", idempotencyKey=key
                )
        if time.monotonic() >= deadline:
            raise RequestInProgressError(
                "a request with this Idempotency-Key and body is still being worked on; send it again"
                " shortly for its answer",
                idempotencyKey=key,
            )
        await asyncio.sleep(CLAIM_POLL_S)
    renewing = asyncio.get_running_loop().create_task(_keep_renewing(journal, key, holder))
    try:
        yield None
    finally:
        renewing.cancel()
        # A database that does not answer now must not turn the request's answer into an error: the claim
        # then lapses on its own (`CLAIM_STALE_S`), or the record's insert already ended it.
        with contextlib.suppress(StoreUnavailableError):
            journal.release_key(key, holder)


async def _keep_renewing(journal: Journal, key: str, holder: str) -> None:
    """Renew a held claim every third of `CLAIM_STALE_S` while its request is worked on (a call waiting for
    another instance to send it may take longer than that); stops once the claim is gone (its record made)."""
    while True:
        await asyncio.sleep(CLAIM_STALE_S / 3)
        try:
            if not journal.renew_key(key, holder):
                return
        except RelayerError:  # the database is away: the claim may lapse, as its request may
            continue


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
