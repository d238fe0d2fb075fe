"""The relay record's status machine: one enum and the one table of allowed transitions.

Every status change in the journal is a compare-and-set against the status the caller last saw, checked
against `ALLOWED`; a handler that finds the record has moved on does nothing, so retries and restarts are
harmless.
"""

from __future__ import annotations

from enum import StrEnum


class TxStatus(StrEnum):
    """Where a relay record stands.

    - `queued`: signed and journaled (nonce taken), not yet accepted by a node.
    - `submitted`: a node accepted at least one of its transactions; waiting for a receipt.
    - `mined`: one of its transactions is in a block and succeeded; waiting for confirmations.
    - `confirmed`: mined and buried under the configured number of blocks; final.
    - `failed`: reverted on chain (reason decoded) or refused for good before mining; its nonce was filled.
    - `replaced`: its nonce was consumed by a transaction that is not one of ours (e.g. the owner of a raw
      transaction sent another one with the same nonce).
    - `expired`: the signed request's deadline passed before it was mined; its nonce was freed with a no-op.
    """

    QUEUED = "queued"
    SUBMITTED = "submitted"
    MINED = "mined"
    CONFIRMED = "confirmed"
    FAILED = "failed"
    REPLACED = "replaced"
    EXPIRED = "expired"

    @property
    def is_final(self) -> bool:
        """Nothing will change it any more (`FINAL`).

        >>> TxStatus.CONFIRMED.is_final, TxStatus.MINED.is_final
        (True, False)
        """
        return self in FINAL

    @property
    def is_pending(self) -> bool:
        """Still needs the relayer's attention (broadcast, receipt, replacement or confirmations):
        `PENDING`."""
        return self in PENDING

    @property
    def is_succeeded(self) -> bool:
        """One of its transactions is in a block and did what it was sent for (`SUCCEEDED`): the fill, or
        the orders, can be read from it. A `mined` record may still go back to `submitted` on a reorg.

        >>> TxStatus.MINED.is_succeeded, TxStatus.FAILED.is_succeeded
        (True, False)
        """
        return self in SUCCEEDED

    @property
    def is_unsuccessful(self) -> bool:
        """Ended without its effect, for good (`UNSUCCESSFUL`): reverted or refused, replaced, or expired.
        The request it carried is spent: the same request may be sent again as a new record.

        >>> sorted(status.value for status in TxStatus if status.is_unsuccessful)
        ['expired', 'failed', 'replaced']
        """
        return self in UNSUCCESSFUL

    @property
    def is_settled(self) -> bool:
        """Has an outcome a caller can answer with (`SETTLED`): succeeded or unsuccessful. What a trading call
        waits for; only `queued` and `submitted` have none yet.

        >>> [status.value for status in TxStatus if not status.is_settled]
        ['queued', 'submitted']
        """
        return self in SETTLED


SUCCEEDED: frozenset[TxStatus] = frozenset({TxStatus.MINED, TxStatus.CONFIRMED})
"""Mined and successful (`mined` waits for confirmations, `confirmed` is final)."""

UNSUCCESSFUL: frozenset[TxStatus] = frozenset({TxStatus.FAILED, TxStatus.REPLACED, TxStatus.EXPIRED})
"""Final without the request's effect. The journal's `records_live_request` index (migrations in
`relayer.stores.sqlite`, which are history and keep their SQL literal) treats every other status as live; a
test checks that literal against this set."""

SETTLED: frozenset[TxStatus] = SUCCEEDED | UNSUCCESSFUL
"""Every status with an outcome: all but `queued` and `submitted`."""

FINAL: frozenset[TxStatus] = UNSUCCESSFUL | {TxStatus.CONFIRMED}
"""Terminal: no transition leaves these (`ALLOWED`)."""

PENDING: frozenset[TxStatus] = frozenset(TxStatus) - FINAL
"""Everything the relay loop still works on: queued, submitted, and mined (waiting for confirmations)."""

ALLOWED: dict[TxStatus, frozenset[TxStatus]] = {
    TxStatus.QUEUED: frozenset(
        {TxStatus.SUBMITTED, TxStatus.MINED, TxStatus.FAILED, TxStatus.REPLACED, TxStatus.EXPIRED}
    ),
    TxStatus.SUBMITTED: frozenset({TxStatus.MINED, TxStatus.FAILED, TxStatus.REPLACED, TxStatus.EXPIRED}),
    # A reorg can drop the block a transaction was mined in: it goes back to waiting for a receipt.
    TxStatus.MINED: frozenset({TxStatus.CONFIRMED, TxStatus.SUBMITTED}),
    TxStatus.CONFIRMED: frozenset(),
    TxStatus.FAILED: frozenset(),
    TxStatus.REPLACED: frozenset(),
    TxStatus.EXPIRED: frozenset(),
}
"""The only status changes the journal accepts (from -> {to})."""


def can_transition(current: TxStatus, new: TxStatus) -> bool:
    """Whether `current -> new` is a legal move.

    >>> can_transition(TxStatus.QUEUED, TxStatus.SUBMITTED)
    True
    >>> can_transition(TxStatus.CONFIRMED, TxStatus.QUEUED)
    False
    """
    return new in ALLOWED[current]


class AttemptKind(StrEnum):
    """What one signed transaction of a record is: the original, a fee bump of it, or a no-op at its nonce."""

    ORIGINAL = "original"
    BUMP = "bump"
    NOOP = "noop"


class RecordKind(StrEnum):
    """What a record relays (its `kind`; the journal keeps the value as text: a new kind needs no migration).

    The relayer signs and pays for every kind but `raw`:

    - `close`: closes size (`closePosition`, or a signed `closePositionWithSig`).
    - `trigger`: sets or cancels a take-profit / stop-loss (`setTakeProfit`, `setStopLoss`, or a signed
      `setTriggerWithSig`).
    - `execute`: executes a crossed order (`executeTrigger`, the keeper's calls).
    - `open`: opens a position (`openPosition`).
    - `operator`: grants or revokes an operator's rights (a signed `setOperatorWithSig`, the owner's own
      request: never a raw transaction or a relayer call, see `relayer.domain.policy`).
    - `multicall`: one `multicall` of calls of different kinds (e.g. a partial close that also sets orders); a
      multicall whose calls are all of one kind is of that kind.
    - `raw`: a transaction the user signed; the relayer only broadcasts and tracks it.
    """

    CLOSE = "close"
    TRIGGER = "trigger"
    EXECUTE = "execute"
    OPEN = "open"
    MULTICALL = "multicall"
    RAW = "raw"
    OPERATOR = "operator"

    @property
    def is_ours(self) -> bool:
        """Whether the relayer signs this record's transactions (and so owns, bumps and fills its nonce)."""
        return self is not RecordKind.RAW
