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
        return self in FINAL

    @property
    def is_pending(self) -> bool:
        """Still needs the relayer's attention (broadcast, receipt, replacement or confirmations)."""
        return self not in FINAL


FINAL: frozenset[TxStatus] = frozenset(
    {TxStatus.CONFIRMED, TxStatus.FAILED, TxStatus.REPLACED, TxStatus.EXPIRED}
)

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

    @property
    def is_ours(self) -> bool:
        """Whether the relayer signs this record's transactions (and so owns, bumps and fills its nonce)."""
        return self is not RecordKind.RAW
