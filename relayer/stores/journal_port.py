"""The journal port: what the relay keeps durably, as one interface with the rules that hold for every store.

The relay's services talk to a `Journal`; `relayer.stores.journal.SqliteJournal` is today's adapter (one
SQLite file), and a PostgreSQL adapter is a second subclass, not a fork of the logic. What is the same for
every store lives here, once: the status machine's rule (`transition` refuses a change the table in
`relayer.domain.status` does not allow, before any store is asked), and the shape of the nonce-with-record
transaction (`write()` yields a `JournalWriter`; the sender allocates the nonce from `max_nonce`, signs and
`insert`s inside it, so the nonce can never advance without its record). What differs lives in the adapter:
SQL, locking, the compare-and-set itself (`UPDATE ... WHERE id = ? AND status = ?`, true when it matched).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from relayer.domain.notices import Cursor, NoticeType, StoredNotice
from relayer.domain.records import Attempt, Intent, Lease, Mined, RelayRecord
from relayer.domain.sponsorship import Charge, Settlement, Usage, Window
from relayer.domain.status import TxStatus, can_transition
from relayer.stores.journal_chains import ChainBinding


class JournalConflict(Exception):  # noqa: N818 - a signal to the sender, not an error a client sees
    """An insert hit a uniqueness rule (idempotency key, live request, signer nonce or transaction hash)."""

    def __init__(self, constraint: str) -> None:
        super().__init__(constraint)
        self.constraint = constraint


class LeaseLost(Exception):  # noqa: N818 - a signal to the sender, not an error a client sees
    """The lease a write was fenced on expired or was taken over: nothing of the write is kept."""

    def __init__(self, lease: Lease) -> None:
        super().__init__(f"lease {lease.name} epoch {lease.epoch} of {lease.holder} is no longer held")
        self.lease = lease


class JournalWriter(Protocol):
    """What the sender may do inside one `Journal.write()` transaction (on the journal's bound chain)."""

    def fence(self, lease: Lease) -> None:
        """Go on only while `lease` is still held at its epoch (by the database's clock), and keep it held
        until this transaction ends: a takeover waits for it, and sees what it wrote.

        Raises:
            LeaseLost: expired or taken over; the transaction must end without effect.
        """
        ...

    def next_intent(self, signer: str) -> Intent | None:
        """The oldest waiting intent of `signer`, locked for this transaction (others skip it)."""
        ...

    def settle_intent(self, intent_id: str, error: dict[str, Any] | None, now: float) -> None:
        """Delete an intent now journaled as its record (`error` None), or mark it failed with `error`."""
        ...

    def max_nonce(self, sender: str) -> int | None:
        """The highest nonce journaled for a relayer signer on the bound chain (None: none yet)."""
        ...

    def record_of(self, record_id: str) -> tuple[TxStatus, int] | None:
        """(status, last attempt seq) of a record, read inside the transaction for a compare-and-set."""
        ...

    def reserve(self, chain_id: int, charge: Charge, now_s: int) -> None:
        """Add `charge` to its spend windows unless one would pass its limit (`relayer.domain.sponsorship`),
        the windows' rows held until the transaction ends.

        Raises: QuotaExceededError for the first window it would pass (the transaction must end without
        effect).
        """
        ...

    def unmined_raw_locked(self, chain_id: int, sender: str) -> int:
        """Raw records of `sender` not yet mined, counted under that sender's lock (held to the commit)."""
        ...

    def raise_charge(self, record_id: str, chain_id: int, worst_wei: int) -> None:
        """Grow a record's charge to `worst_wei` in its windows (a fee bump; never refused)."""
        ...

    def insert(self, record: RelayRecord, *, charge: Charge | None = None) -> None:
        """Insert a record and its attempts (keeping the `charge` reserved for it), and end the claim on its
        idempotency key.

        Raises: JournalConflict naming the uniqueness rule that refused it (nothing of it kept).
        """
        ...

    def add_attempts(self, record_id: str, attempts: Iterable[Attempt]) -> None: ...

    def set_noop_outcome(
        self, record_id: str, outcome: TxStatus, error: dict[str, Any], now: float
    ) -> None: ...


@dataclass(frozen=True)
class StatusChange:
    """One checked status change, as `Journal.transition` hands it to a store's compare-and-set."""

    expected: TxStatus
    new: TxStatus
    now: float
    error: dict[str, Any] | None
    """A note to keep with the move (None: keep the note there is, or clear it with `clear_error`)."""
    clear_error: bool
    mined: Mined | None
    clear_mined: bool
    expected_seq: int | None
    """The record's last attempt the caller decided on (None: any)."""


class Journal(ABC):
    """The relay journal: records, their attempts and nonces, and the chains they belong to."""

    chain_id: int | None
    """The chain `bind_to_chain` bound this journal to (None: unbound, every chain's records)."""

    # --- the rules, once for every store ------------------------------------------------------------------

    def transition(
        self,
        record_id: str,
        expected: TxStatus,
        new: TxStatus,
        *,
        now: float,
        error: dict[str, Any] | None = None,
        mined: Mined | None = None,
        clear_mined: bool = False,
        expected_seq: int | None = None,
    ) -> bool:
        """Move a record from `expected` to `new`; False (and no change) when it is no longer `expected` (nor,
        with `expected_seq`, still at that last attempt: a decision taken on its hashes holds only for them).

        A note (`error`) is kept with the move; a move to a succeeded status without one clears the note of
        the wait that is over. `mined` records the receipt; `clear_mined` forgets it (a reorg).

        Raises:
            ValueError: when `expected -> new` is not in the transition table (a bug in the caller).
        """
        if not can_transition(expected, new):
            raise ValueError(f"illegal relay status change {expected} -> {new}")
        change = StatusChange(
            expected, new, now, error, error is None and new.is_succeeded, mined, clear_mined, expected_seq
        )
        return self._compare_and_set(record_id, change)

    # --- what each store implements -----------------------------------------------------------------------

    @abstractmethod
    def _compare_and_set(self, record_id: str, change: StatusChange) -> bool:
        """Apply `change` only where the record is still `change.expected` (and its last attempt still
        `change.expected_seq`, when given); True when it was."""

    @abstractmethod
    def close(self) -> None:
        """Let go of the store (and of the relay lock, if this journal holds it)."""

    @property
    @abstractmethod
    def relaying(self) -> bool:
        """Whether this journal holds the relay lock (one relaying process per journal)."""

    @abstractmethod
    def write(self) -> AbstractContextManager[JournalWriter]:
        """One write transaction: everything done through the writer commits together or not at all."""

    @abstractmethod
    def known_chains(self) -> list[ChainBinding]:
        """Every chain a relay started on with this journal, by chain id."""

    @abstractmethod
    def bind_to_chain(self, chain: ChainBinding, *, now: int) -> int:
        """Start relaying on `chain` (`relayer.stores.journal_chains`' rule); returns the records dropped.

        Raises:
            ConfigurationError: the journal's records of this chain id belong to another chain.
        """

    @abstractmethod
    def get(self, record_id: str) -> RelayRecord | None: ...

    @abstractmethod
    def get_many(self, record_ids: list[str]) -> list[RelayRecord]:
        """The records of these ids that exist, in one query (any order)."""

    @abstractmethod
    def by_idempotency_key(self, key: str) -> RelayRecord | None: ...

    @abstractmethod
    def by_hash(self, tx_hash: str) -> RelayRecord | None: ...

    @abstractmethod
    def records(
        self,
        status: TxStatus | None = None,
        *,
        limit: int = 100,
        offset: int = 0,
        account: str | None = None,
    ) -> list[RelayRecord]:
        """Newest first; `account`: only the records acting for it (`RelayRecord.account`, any case)."""

    @abstractmethod
    def pending(self) -> list[RelayRecord]:
        """Unfinished records, oldest nonce first per signer."""

    @abstractmethod
    def all(self) -> list[RelayRecord]: ...

    @abstractmethod
    def unmined_raw(self, sender: str) -> int:
        """How many raw records of `sender` are still `queued` or `submitted` (not mined, not settled)."""

    @abstractmethod
    def nonce_summary(self) -> dict[str, tuple[int, int]]:
        """Per signer: (highest journaled nonce, records in flight)."""

    @abstractmethod
    def status_counts(self) -> dict[TxStatus, int]:
        """How many records of the bound chain stand in each status (a status with none is left out)."""

    @abstractmethod
    def set_error(self, record_id: str, expected: TxStatus, error: dict[str, Any], *, now: float) -> bool:
        """Note why a pending record is stuck without changing its status (compare-and-set on `expected`)."""

    @abstractmethod
    def mark_broadcast(self, tx_hash: str, *, now: float) -> None:
        """Note that a node accepted (or already had) this attempt."""

    # --- several instances: leases, idempotency claims and intents ----------------------------------------

    @property
    @abstractmethod
    def shared(self) -> bool:
        """Several processes may work through this journal at once (PostgreSQL)."""

    @abstractmethod
    def acquire_lease(self, name: str, holder: str, ttl_s: float, *, force: bool = False) -> Lease | None:
        """Take the lease `name` on the bound chain when it is free or expired (`force`: whoever holds it,
        for a store only one process can open for relaying), at the next epoch; None when someone holds it."""

    @abstractmethod
    def renew_lease(self, lease: Lease, ttl_s: float) -> Lease | None:
        """Extend a lease still held at its epoch and not yet expired; None when it was lost."""

    @abstractmethod
    def release_lease(self, lease: Lease) -> None:
        """Let a held lease go now (a clean stop), so another instance takes it without waiting."""

    @abstractmethod
    def leases(self) -> list[Lease]:
        """Every lease of the bound chain, by name."""

    @abstractmethod
    def database_time(self) -> float:
        """The database's clock, unix seconds: what lease expiries are compared with."""

    @abstractmethod
    def claim_key(self, key: str, request_hash: str, holder: str, *, stale_after_s: float) -> str | None:
        """Claim an idempotency key before working on its request: None when this caller has it now; else
        the request hash of the live claim another request holds (a claim older than `stale_after_s`, left
        by an instance that died, is taken over)."""

    @abstractmethod
    def renew_key(self, key: str, holder: str) -> bool:
        """Keep this holder's claim live (its request is still being worked on); False when it is gone."""

    @abstractmethod
    def release_key(self, key: str, holder: str) -> None:
        """End this holder's claim on a key whose request ended without a record."""

    @abstractmethod
    def add_intent(self, intent: Intent) -> None:
        """Journal a call for its signer's lease holder to send, and wake it.

        Raises:
            JournalConflict: the idempotency key or the signed request is taken.
        """

    @abstractmethod
    def cancel_intent(self, intent_id: str) -> bool:
        """Withdraw an intent no holder claimed yet; False when one did (it waits for that claim to commit:
        the record then exists) or it failed."""

    @abstractmethod
    def intent(self, intent_id: str) -> Intent | None:
        """An intent still waiting or failed (None: none, e.g. it became its record)."""

    @abstractmethod
    def waiting_signers(self) -> set[str]:
        """Signers with intents waiting on the bound chain."""

    @abstractmethod
    def intent_by_key(self, key: str) -> Intent | None: ...

    @abstractmethod
    def listen_intents(self, wake: Callable[[], None]) -> Callable[[], None]:
        """Call `wake` (from another thread) whenever an intent is journaled, by any instance; returns the
        function that stops listening. A store of one process has nothing to listen to (a no-op)."""

    # --- notices (`relayer.domain.notices`) ---------------------------------------------------------------

    notices_enabled: bool
    """A notice is journaled with every status change (off only to measure their cost)."""
    on_notices: Callable[[], None] | None
    """Called after a transaction of this journal committed notices (on the writing thread; cheap, never
    raising): this process's readers look at once rather than at their next poll."""

    @abstractmethod
    def notices_after(
        self,
        after: Cursor,
        *,
        account: str | None = None,
        types: Sequence[NoticeType] | None = None,
        limit: int = 100,
        newest: bool = False,
    ) -> list[StoredNotice]:
        """Notices after `after` that no running transaction can still precede, in cursor order (on the bound
        chain; `account`: only that account's, any case; `types`: only those; `newest`: the last `limit` of
        them rather than the first, still in cursor order)."""

    @abstractmethod
    def latest_notice_cursor(self) -> Cursor:
        """The cursor of the newest settled notice (`START` when none): where a reader that wants only what
        happens from now on starts."""

    # --- sponsorship spend (`relayer.domain.sponsorship`) ---------------------------------------------------

    @abstractmethod
    def spend_usage(self, chain_id: int, windows: Iterable[Window]) -> dict[tuple[str, int, int], Usage]:
        """What each window holds on chain `chain_id` (requests and wei; an unused window: zero)."""

    @abstractmethod
    def unsettled_charges(self, limit: int = 200) -> list[tuple[RelayRecord, Charge]]:
        """Final records whose charge is not settled yet, oldest first, with that charge."""

    @abstractmethod
    def settle_charges(self, settlements: Sequence[Settlement]) -> int:
        """Replace each final record's reservation by what it cost (`Settlement.settled`, per window) in its
        windows, once, all in one transaction: records settled already (by any instance) are skipped. Returns
        how many were settled here."""
