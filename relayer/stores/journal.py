"""The durable relay journal: records, attempts and nonces, leases, idempotency claims and intents.

One implementation of the journal port (`relayer.stores.journal_port.Journal`), `SqlJournal`, runs on the
database port (`relayer.stores.sql.Database`), so SQLite and PostgreSQL share every query:

- `SqliteJournal(path)`: the embedded default, one file (WAL mode, so readers such as `relayer relay list`
  never block the relayer). Only one process relays through a file at a time (`lock_for_relaying`).
- `PostgresJournal(url)`: several instances on one database. A signer's nonces are numbered only by the
  holder of its lease, and every write that numbers or signs checks that lease in its own transaction.

Status changes are compare-and-set (`UPDATE ... WHERE id = ? AND status = ?`); the sender allocates a nonce,
signs and inserts the record and its first attempt in one write transaction, so the nonce can never advance
without the record that uses it being saved.

One database may hold the records of several chains (every command defaults to `.relayer/journal.sqlite3`,
so a node's server and an embedded demo started in the same folder share it). Every record carries its chain
id; a relay start binds its journal to its chain (`bind_to_chain`), and from then on that journal reads,
resumes and numbers nonces only from records of that chain id. The same database holds the API keys, behind
their own store (`relayer.stores.keys`). A SQLite file is created mode 0600 in a folder created 0700.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from relayer.domain.notices import Cursor, Notice, NoticeType, StoredNotice, status_notices
from relayer.domain.records import Attempt, Intent, Lease, RelayRecord
from relayer.domain.sponsorship import Charge, Settlement, Usage, Window, first_refusal
from relayer.domain.status import FINAL, PENDING, RecordKind, TxStatus
from relayer.stores import journal_chains, journal_rows, notice_rows
from relayer.stores import sqlite as store_file
from relayer.stores.journal_chains import ChainBinding
from relayer.stores.journal_port import (
    Journal,
    JournalConflict,
    JournalWriter,
    LeaseLost,
    StatusChange,
)
from relayer.stores.relay_lock import RelayLock, lock_for_relaying
from relayer.stores.sql import Database, Session, UniqueViolation, marks

_PENDING = tuple(sorted(status.value for status in PENDING))
"""`PENDING` as SQL parameters (`status IN (?, ...)`)."""

INTENTS_CHANNEL = "relayer_intents"
"""The PostgreSQL NOTIFY channel an intent's insert wakes its signer's lease holder on."""

_RECORD_ORDER = "ORDER BY sender, nonce, created_at, id"
"""Oldest nonce first per sender: the order to broadcast in."""


class SqlJournal(Journal):
    """The relay journal on a `Database`; safe to share between threads of one process.

    Until `bind_to_chain`, record reads see every chain's records (what `relayer relay list` shows); after
    it, `pending`, `all`, `records`, `nonce_summary`, `by_idempotency_key`, `by_hash`, the leases and the
    writer's `max_nonce` see only the bound chain's, and the writer refuses a record of another chain.
    `get(id)` answers any record: an id names one record wherever it belongs.
    """

    def __init__(self, database: Database, *, relay_lock: RelayLock | None = None) -> None:
        self.db = database
        self.where = database.where
        self.chain_id: int | None = None
        """The chain `bind_to_chain` bound this journal to (None: unbound, every chain's records)."""
        self._relay_lock = relay_lock
        self._now = database.dialect.now_s
        self.notices_enabled = True
        """Journal a notice with every status change (`relayer.domain.notices`); off only to measure what
        they cost (`RELAYER_RELAY_NOTICES=false`: webhooks and streams then have nothing to tell)."""
        self._known_database_id: str | None = None
        self.on_notices: Callable[[], None] | None = None
        """Called (on the writing thread, after the commit) when a transaction of this journal journaled
        notices: lets this process's readers (`relayer.services.notice_feed`) look at once instead of at
        their next poll. It must be cheap and must not raise."""

    def close(self) -> None:
        """Close the database and let go of the relay lock (if this journal holds it)."""
        self.db.close()
        if self._relay_lock is not None:
            self._relay_lock.release()

    @property
    def relaying(self) -> bool:
        return self._relay_lock is not None or self.shared

    @property
    def shared(self) -> bool:
        return self.db.dialect.shared_by_processes

    @property
    def schema_version(self) -> int:
        return self.db.schema_version

    @contextmanager
    def write(self) -> Iterator[JournalWriter]:
        """One write transaction: everything done through the writer commits together or not at all."""
        with self.db.transaction() as session:
            writer = SqlJournalWriter(
                session, self.chain_id, self.db.dialect.skip_locked, self._now, self.notices_enabled
            )
            yield writer
        if writer.noticed:
            self._noticed()

    def _noticed(self) -> None:
        """Tell `on_notices` that committed notices wait to be read."""
        if self.on_notices is not None:
            self.on_notices()

    # --- the chains the records belong to -----------------------------------------------------------------

    def known_chains(self) -> list[ChainBinding]:
        """Every chain a relay started on with this journal, by chain id (one row per id)."""
        with self.db.session() as session:
            return journal_chains.known_chains(session)

    def bind_to_chain(self, chain: ChainBinding, *, now: int) -> int:
        """Start relaying on `chain`, before anything is resumed; returns how many records were dropped.

        The rule (which records of `chain.chain_id` are resumed, refused or, for a dead embedded run,
        dropped) is `journal_chains.bind`. Dropping is safe only because no other process relays through
        the journal meanwhile, so binding needs a journal opened for relaying.

        Raises:
            ConfigurationError: the records of this chain id belong to another chain.
            ValueError: the journal was not opened for relaying (a bug in the caller).
        """
        if not self.relaying:
            raise ValueError("bind_to_chain needs a journal opened with relaying=True (the relay lock)")
        with self.db.transaction() as session:
            dropped = journal_chains.bind(session, self.where, chain, now=now)
            if not self.shared:  # one relaying process per file: a claim left here died with the last one
                session.execute("DELETE FROM idempotency_claims WHERE chain_id = ?", (chain.chain_id,))
        self.chain_id = chain.chain_id
        return dropped

    def _on_chain(self, where: str = "") -> tuple[str, list[Any]]:
        """`WHERE` clause (joined to `where` with AND) limiting a query to the bound chain's records."""
        clauses = [where] if where else []
        args: list[Any] = []
        if self.chain_id is not None:
            clauses.append("chain_id = ?")
            args.append(self.chain_id)
        return ("WHERE " + " AND ".join(clauses)) if clauses else "", args

    def _bound_chain(self) -> int:
        """The chain leases and claims are kept for (0 for an unbound journal: one process, tests)."""
        return 0 if self.chain_id is None else self.chain_id

    # --- reads --------------------------------------------------------------------------------------------

    def get(self, record_id: str) -> RelayRecord | None:
        with self.db.session() as session:
            row = session.row("SELECT * FROM records WHERE id = ?", (record_id,))
            if row is None:
                return None
            return journal_rows.record_from_row(row, _attempts(session, [record_id])[record_id])

    def get_many(self, record_ids: list[str]) -> list[RelayRecord]:
        found: list[RelayRecord] = []
        for start in range(0, len(record_ids), 500):
            chunk = record_ids[start : start + 500]
            sql = f"SELECT * FROM records WHERE id IN ({marks(len(chunk))})"  # noqa: S608
            found.extend(self._query(sql, chunk))
        return found

    def by_idempotency_key(self, key: str) -> RelayRecord | None:
        where, args = self._on_chain("idempotency_key = ?")
        row = self.db.row(f"SELECT id FROM records {where}", [key, *args])  # noqa: S608
        return None if row is None else self.get(row["id"])

    def by_hash(self, tx_hash: str) -> RelayRecord | None:
        where, args = self._on_chain("a.tx_hash = ?")
        sql = f"SELECT a.record_id FROM attempts a JOIN records r ON r.id = a.record_id {where}"  # noqa: S608
        row = self.db.row(sql, [tx_hash, *args])
        return None if row is None else self.get(row["record_id"])

    def records(
        self,
        status: TxStatus | None = None,
        *,
        limit: int = 100,
        offset: int = 0,
        account: str | None = None,
    ) -> list[RelayRecord]:
        """Records, newest first, optionally of one status and of one account (compared without case)."""
        clauses: list[str] = []
        filters: list[Any] = []
        if status is not None:
            clauses.append("status = ?")
            filters.append(status.value)
        if account is not None:
            clauses.append("LOWER(account) = ?")
            filters.append(account.lower())
        where, args = self._on_chain(" AND ".join(clauses))
        sql = f"SELECT * FROM records {where} ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?"  # noqa: S608
        return self._query(sql, [*filters, *args, limit, offset])

    def pending(self) -> list[RelayRecord]:
        """Every record that still needs work, oldest nonce first per sender (the order to broadcast in)."""
        where, args = self._on_chain(f"status IN ({marks(len(_PENDING))})")
        return self._query(f"SELECT * FROM records {where} {_RECORD_ORDER}", [*_PENDING, *args])  # noqa: S608

    def all(self) -> list[RelayRecord]:
        where, args = self._on_chain()
        return self._query(f"SELECT * FROM records {where} {_RECORD_ORDER}", args)  # noqa: S608

    def unmined_raw(self, sender: str) -> int:
        """Raw records of `sender` still `queued` or `submitted` (what a sender's cap counts)."""
        where, args = self._on_chain("kind = 'raw' AND sender = ? AND status IN (?, ?)")
        sql = f"SELECT COUNT(*) AS n FROM records {where}"  # noqa: S608
        row = self.db.row(sql, [sender, TxStatus.QUEUED.value, TxStatus.SUBMITTED.value, *args])
        return 0 if row is None else int(row["n"])

    def nonce_summary(self) -> dict[str, tuple[int, int]]:
        """Per relayer signer: (highest nonce journaled, count of records still pending)."""
        where, args = self._on_chain("kind != 'raw'")
        sql = (
            "SELECT sender, MAX(nonce) AS top, SUM(CASE WHEN status IN ("  # noqa: S608
            + marks(len(_PENDING))
            + f") THEN 1 ELSE 0 END) AS live FROM records {where} GROUP BY sender"
        )
        rows = self.db.rows(sql, [*_PENDING, *args])
        return {row["sender"]: (int(row["top"]), int(row["live"] or 0)) for row in rows}

    def status_counts(self) -> dict[TxStatus, int]:
        """Records per status on the bound chain (the operator console's queue)."""
        where, args = self._on_chain()
        sql = f"SELECT status, COUNT(*) AS n FROM records {where} GROUP BY status"  # noqa: S608
        return {TxStatus(row["status"]): int(row["n"]) for row in self.db.rows(sql, args)}

    def _query(self, sql: str, args: list[Any]) -> list[RelayRecord]:
        with self.db.session() as session:
            rows = session.rows(sql, args)
            attempts = _attempts(session, [row["id"] for row in rows])
        return [journal_rows.record_from_row(row, attempts[row["id"]]) for row in rows]

    # --- compare-and-set updates

    def _compare_and_set(self, record_id: str, change: StatusChange) -> bool:
        sets = ["status = ?", "updated_at = ?"]
        args: list[Any] = [change.new.value, change.now]
        if change.error is not None:
            sets.append("error = ?")
            args.append(json.dumps(change.error, sort_keys=True))
        elif change.clear_error:
            sets.append("error = NULL")
        if change.mined is not None:
            sets.append("mined = ?")
            args.append(journal_rows.mined_json(change.mined))
        elif change.clear_mined:
            sets.append("mined = NULL")
        where = "id = ? AND status = ?"
        guards: list[Any] = [record_id, change.expected.value]
        if change.expected_seq is not None:
            where += " AND (SELECT MAX(seq) FROM attempts WHERE record_id = records.id) = ?"
            guards.append(change.expected_seq)
        sql = f"UPDATE records SET {', '.join(sets)} WHERE {where}"  # noqa: S608
        if not self.notices_enabled:
            return self.db.execute(sql, [*args, *guards]) == 1
        with self.db.transaction() as session:
            rows = session.rows(f"{sql} RETURNING chain_id, kind, account", [*args, *guards])
            if len(rows) != 1:
                return False
            row = rows[0]
            notices = status_notices(
                record_id,
                RecordKind(row["kind"]),
                row["account"],
                change.expected,
                change.new,
                error=change.error,
                mined=change.mined,
            )
            write_notices(session, int(row["chain_id"]), notices, change.now)
        self._noticed()
        return True

    def set_error(self, record_id: str, expected: TxStatus, error: dict[str, Any], *, now: float) -> bool:
        """Note why a pending record is stuck (e.g. out of funds) without changing its status."""
        return (
            self.db.execute(
                "UPDATE records SET error = ?, updated_at = ? WHERE id = ? AND status = ?",
                (json.dumps(error, sort_keys=True), now, record_id, expected.value),
            )
            == 1
        )

    def mark_broadcast(self, tx_hash: str, *, now: float) -> None:
        """Note that a node accepted (or already had) this attempt."""
        self.db.execute(
            "UPDATE attempts SET broadcast_at = ? WHERE tx_hash = ? AND broadcast_at IS NULL", (now, tx_hash)
        )

    # --- leases -------------------------------------------------------------------------------------------

    # --- notices (`relayer.domain.notices`) ---------------------------------------------------------------

    def notices_after(
        self,
        after: Cursor,
        *,
        account: str | None = None,
        types: Sequence[NoticeType] | None = None,
        limit: int = 100,
        newest: bool = False,
    ) -> list[StoredNotice]:
        where, args = notice_rows.after(self.db.dialect, after)
        if self.chain_id is not None:
            where += " AND chain_id = ?"
            args.append(self.chain_id)
        if account is not None:
            where += " AND account = ?"
            args.append(account.lower())
        if types is not None:
            where += f" AND type IN ({marks(len(types))})"
            args.extend(t.value for t in types)
        order = "txn DESC, id DESC" if newest else "txn, id"
        with self.db.session() as session:
            rows = session.rows(
                f"SELECT * FROM notices WHERE {where} ORDER BY {order} LIMIT ?",  # noqa: S608
                [*args, limit],
            )
            database_id = self._database_id(session)
        notices = [notice_rows.stored_notice(row, database_id) for row in rows]
        return notices[::-1] if newest else notices

    def latest_notice_cursor(self) -> Cursor:
        with self.db.session() as session:
            return notice_rows.latest(session, self.db.dialect, self.chain_id)

    def _database_id(self, session: Session) -> str | None:
        """The database's id (read once; it never changes)."""
        if self._known_database_id is None:
            self._known_database_id = notice_rows.database_id(session)
        return self._known_database_id

    def acquire_lease(self, name: str, holder: str, ttl_s: float, *, force: bool = False) -> Lease | None:
        chain_id = self._bound_chain()
        now = self._now
        # Free, expired, or this holder's own (then extended at its epoch: a holder that lost track of its
        # lease must not keep trusting an expiry it did not renew); `force` takes it from anyone.
        taken = "" if force else f" WHERE leases.expires_at < {now} OR leases.holder = excluded.holder"
        with self.db.transaction() as session:
            session.execute(
                "INSERT INTO leases (chain_id, name, holder, epoch, expires_at, acquired_at)"  # noqa: S608
                f" VALUES (?, ?, ?, 1, {now} + ?, {now})"
                " ON CONFLICT (chain_id, name) DO UPDATE SET holder = excluded.holder,"
                " epoch = CASE WHEN leases.holder = excluded.holder"
                " AND leases.expires_at >= excluded.acquired_at THEN leases.epoch ELSE leases.epoch + 1 END,"
                " expires_at = excluded.expires_at,"
                f" acquired_at = excluded.acquired_at{taken}",
                (chain_id, name, holder, ttl_s),
            )
            row = session.row("SELECT * FROM leases WHERE chain_id = ? AND name = ?", (chain_id, name))
        if row is None or row["holder"] != holder:
            return None
        return journal_rows.lease_from_row(row)

    def renew_lease(self, lease: Lease, ttl_s: float) -> Lease | None:
        now = self._now
        with self.db.transaction() as session:
            changed = session.execute(
                f"UPDATE leases SET expires_at = {now} + ? WHERE chain_id = ? AND name = ?"  # noqa: S608
                f" AND holder = ? AND epoch = ? AND expires_at > {now}",
                (ttl_s, lease.chain_id, lease.name, lease.holder, lease.epoch),
            )
            if changed != 1:
                return None
            row = session.row(
                "SELECT * FROM leases WHERE chain_id = ? AND name = ?", (lease.chain_id, lease.name)
            )
        return None if row is None else journal_rows.lease_from_row(row)

    def release_lease(self, lease: Lease) -> None:
        self.db.execute(
            f"UPDATE leases SET expires_at = {self._now} - 1 WHERE chain_id = ? AND name = ?"  # noqa: S608
            " AND holder = ? AND epoch = ?",
            (lease.chain_id, lease.name, lease.holder, lease.epoch),
        )

    def leases(self) -> list[Lease]:
        rows = self.db.rows("SELECT * FROM leases WHERE chain_id = ? ORDER BY name", (self._bound_chain(),))
        return [journal_rows.lease_from_row(row) for row in rows]

    def database_time(self) -> float:
        row = self.db.row(f"SELECT {self._now} AS now")
        assert row is not None
        now: float = row["now"]  # the dialect's clock expression is a float in both databases
        return now

    # --- idempotency claims -------------------------------------------------------------------------------

    def claim_key(self, key: str, request_hash: str, holder: str, *, stale_after_s: float) -> str | None:
        chain_id = self._bound_chain()
        now = self._now
        with self.db.transaction() as session:
            session.execute(
                "INSERT INTO idempotency_claims (chain_id, idempotency_key, request_hash, holder, claimed_at)"  # noqa: S608
                f" VALUES (?, ?, ?, ?, {now}) ON CONFLICT (chain_id, idempotency_key) DO UPDATE SET"
                " request_hash = excluded.request_hash, holder = excluded.holder,"
                f" claimed_at = excluded.claimed_at WHERE idempotency_claims.claimed_at < {now} - ?",
                (chain_id, key, request_hash, holder, stale_after_s),
            )
            row = session.row(
                "SELECT holder, request_hash FROM idempotency_claims"
                " WHERE chain_id = ? AND idempotency_key = ?",
                (chain_id, key),
            )
        if row is None or row["holder"] == holder:
            return None
        return str(row["request_hash"])

    def renew_key(self, key: str, holder: str) -> bool:
        changed = self.db.execute(
            f"UPDATE idempotency_claims SET claimed_at = {self._now}"  # noqa: S608
            " WHERE chain_id = ? AND idempotency_key = ? AND holder = ?",
            (self._bound_chain(), key, holder),
        )
        return changed == 1

    def release_key(self, key: str, holder: str) -> None:
        self.db.execute(
            "DELETE FROM idempotency_claims WHERE chain_id = ? AND idempotency_key = ? AND holder = ?",
            (self._bound_chain(), key, holder),
        )

    # --- sponsorship spend --------------------------------------------------------------------------------

    def spend_usage(self, chain_id: int, windows: Iterable[Window]) -> dict[tuple[str, int, int], Usage]:
        with self.db.session() as session:
            return _usage(session, chain_id, tuple(windows))

    def unsettled_charges(self, limit: int = 200) -> list[tuple[RelayRecord, Charge]]:
        final = sorted(status.value for status in FINAL)
        where, args = self._on_chain(
            f"charge IS NOT NULL AND charged_wei IS NULL AND status IN ({marks(len(final))})"
        )
        with self.db.session() as session:
            rows = session.rows(
                f"SELECT * FROM records {where} ORDER BY updated_at, id LIMIT ?",  # noqa: S608
                [*final, *args, limit],
            )
            attempts = _attempts(session, [row["id"] for row in rows])
        return [
            (journal_rows.record_from_row(row, attempts[row["id"]]), Charge.from_json(row["charge"]))
            for row in rows
        ]

    def settle_charges(self, settlements: Sequence[Settlement]) -> int:
        if not settlements:
            return 0
        values = ", ".join(["(CAST(? AS TEXT), CAST(? AS TEXT))"] * len(settlements))
        marks_args = [
            v for item in settlements for v in (item.record_id, str(max(item.settled.values(), default=0)))
        ]
        with self.db.transaction() as session:
            marked = {
                row["id"]
                for row in session.rows(
                    f"UPDATE records SET charged_wei = v.column2 FROM (VALUES {values}) AS v"  # noqa: S608
                    " WHERE records.id = v.column1 AND records.charged_wei IS NULL RETURNING records.id",
                    marks_args,
                )
            }  # the others were settled already (by this instance or another)
            done = [item for item in settlements if item.record_id in marked]
            for chain_id in sorted({item.chain_id for item in done}):
                on_chain = [item for item in done if item.chain_id == chain_id]
                windows = list({w.key(): w for item in on_chain for w in item.charge.windows}.values())
                usages = _locked_usage(session, chain_id, windows)
                for item in on_chain:  # each replaces its reservation by what it cost
                    for window in item.charge.windows:
                        usage = usages[window.key()]
                        spent = usage.spent_wei + item.settled.get(window.key(), 0) - item.charge.wei
                        usages[window.key()] = Usage(usage.requests, max(0, spent))
                _write_usages(session, chain_id, [(w, usages[w.key()]) for w in windows])
        return len(done)

    # --- intents ------------------------------------------------------------------------------------------

    def add_intent(self, intent: Intent) -> None:
        plan = intent.plan
        request = plan.request
        try:
            with self.db.transaction() as session:
                session.execute(
                    "INSERT INTO intents (id, chain_id, signer, kind, to_address, data, gas_limit, fees,"
                    " request_hash, idempotency_key, account, request_owner, request_nonce, deadline, state,"
                    " error, created_at, updated_at, charge) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        intent.id,
                        intent.chain_id,
                        intent.signer,
                        plan.kind.value,
                        plan.to,
                        plan.data,
                        plan.gas_limit,
                        journal_rows.fees_json(plan.fees),
                        plan.request_hash,
                        plan.idempotency_key,
                        plan.account,
                        None if request is None else request.owner,
                        None if request is None else str(request.nonce),
                        None if request is None else str(request.deadline),
                        Intent.WAITING,
                        None,
                        intent.created_at,
                        intent.created_at,
                        None if plan.charge is None else plan.charge.to_json(),
                    ),
                )
                if self.shared:
                    session.execute("SELECT pg_notify(?, ?)", (INTENTS_CHANNEL, intent.signer))
        except UniqueViolation as exc:
            raise JournalConflict(journal_rows.conflict_constraint(exc.constraint)) from None

    def cancel_intent(self, intent_id: str) -> bool:
        deleted = self.db.execute(
            "DELETE FROM intents WHERE id = ? AND state = ?", (intent_id, Intent.WAITING)
        )
        return deleted == 1

    def intent(self, intent_id: str) -> Intent | None:
        row = self.db.row("SELECT * FROM intents WHERE id = ?", (intent_id,))
        return None if row is None else journal_rows.intent_from_row(row)

    def intent_by_key(self, key: str) -> Intent | None:
        where, args = self._on_chain("idempotency_key = ?")
        row = self.db.row(f"SELECT * FROM intents {where}", [key, *args])  # noqa: S608
        return None if row is None else journal_rows.intent_from_row(row)

    def waiting_signers(self) -> set[str]:
        where, args = self._on_chain("state = ?")
        rows = self.db.rows(f"SELECT DISTINCT signer FROM intents {where}", [Intent.WAITING, *args])  # noqa: S608
        return {row["signer"] for row in rows}

    def listen_intents(self, wake: Callable[[], None]) -> Callable[[], None]:
        listen = getattr(self.db, "listen", None)
        if listen is None:
            return lambda: None
        stop = threading.Event()
        thread = threading.Thread(
            target=_listen, args=(listen, stop, wake), name="relayer-intents-listener", daemon=True
        )
        thread.start()
        return stop.set


def _listen(
    listen: Callable[[str], Any], stop: threading.Event, wake: Callable[[], None]
) -> None:  # pragma: no cover - a thread; its effect is tested (intents sent at once)
    """LISTEN for intents on a connection of its own, reconnecting after a lost one, until `stop`."""
    while not stop.is_set():
        try:
            conn = listen(INTENTS_CHANNEL)
        except Exception:
            stop.wait(1.0)
            continue
        try:
            while not stop.is_set():
                for _ in conn.notifies(timeout=0.5):
                    wake()
        except Exception:
            stop.wait(0.5)
        finally:
            conn.close()


def write_notices(session: Session, chain_id: int, notices: Sequence[Notice], now: float) -> None:
    """Journal `notices` in the caller's transaction (the one that makes what they tell happen)."""
    if not notices:
        return
    values = ",".join(["(?,?,?,?,?,?)"] * len(notices))
    args: list[Any] = []
    for notice in notices:
        args.extend(
            (
                chain_id,
                notice.type.value,
                notice.account,
                notice.record_id,
                json.dumps(notice.payload, sort_keys=True),
                now,
            )
        )
    session.execute(
        f"INSERT INTO notices (chain_id, type, account, record_id, payload, created_at) VALUES {values}",  # noqa: S608
        args,
    )


def _window_keys(windows: Sequence[Window]) -> tuple[str, list[Any]]:
    """`(scope = ? AND window_s = ? AND window_start = ?) OR ...` for `windows`, and its parameters."""
    clause = " OR ".join(["(scope = ? AND window_s = ? AND window_start = ?)"] * len(windows))
    return f"({clause})", [value for window in windows for value in window.key()]


def _usage(session: Session, chain_id: int, windows: Sequence[Window]) -> dict[tuple[str, int, int], Usage]:
    """What each of `windows` holds (an absent row: nothing yet), in one statement, without locking (a
    pre-check, a report; `_locked_usage` is the one that counts)."""
    found = {window.key(): Usage() for window in windows}
    if not windows:
        return found
    where, args = _window_keys(windows)
    rows = session.rows(
        "SELECT scope, window_s, window_start, requests, spent_wei FROM spend"  # noqa: S608
        f" WHERE chain_id = ? AND {where}",
        [chain_id, *args],
    )
    for row in rows:
        key = (row["scope"], int(row["window_s"]), int(row["window_start"]))
        found[key] = Usage(int(row["requests"]), int(row["spent_wei"]))
    return found


def _locked_usage(
    session: Session, chain_id: int, windows: Sequence[Window]
) -> dict[tuple[str, int, int], Usage]:
    """What each of `windows` holds, its row made if missing and locked until the transaction ends, in one
    statement: an upsert whose no-op update locks an existing row (PostgreSQL; SQLite's writer is alone) and
    returns it. Rows are taken in one order (scope, window), so two transactions cannot deadlock on them."""
    ordered = sorted(windows, key=Window.key)
    found = {window.key(): Usage() for window in ordered}
    if not ordered:
        return found
    rows = session.rows(
        "INSERT INTO spend (chain_id, scope, window_s, window_start, requests, spent_wei) VALUES "  # noqa: S608
        + ", ".join(["(?, ?, ?, ?, 0, '0')"] * len(ordered))
        + " ON CONFLICT (chain_id, scope, window_s, window_start) DO UPDATE SET requests = spend.requests"
        " RETURNING scope, window_s, window_start, requests, spent_wei",
        [value for window in ordered for value in (chain_id, *window.key())],
    )
    for row in rows:
        key = (row["scope"], int(row["window_s"]), int(row["window_start"]))
        found[key] = Usage(int(row["requests"]), int(row["spent_wei"]))
    return found


def _write_usages(session: Session, chain_id: int, usages: Sequence[tuple[Window, Usage]]) -> None:
    """Set what each window holds, in one statement (`UPDATE ... FROM (VALUES ...)`, in both databases)."""
    if not usages:
        return
    values = ", ".join(
        ["(CAST(? AS TEXT), CAST(? AS BIGINT), CAST(? AS BIGINT), CAST(? AS BIGINT), CAST(? AS TEXT))"]
        * len(usages)
    )
    args = [
        value for window, usage in usages for value in (*window.key(), usage.requests, str(usage.spent_wei))
    ]
    session.execute(
        f"UPDATE spend SET requests = v.column4, spent_wei = v.column5 FROM (VALUES {values}) AS v"  # noqa: S608
        " WHERE spend.chain_id = ? AND spend.scope = v.column1 AND spend.window_s = v.column2"
        " AND spend.window_start = v.column3",
        [*args, chain_id],
    )


def _attempts(session: Session, record_ids: list[str]) -> dict[str, list[Attempt]]:
    found: dict[str, list[Attempt]] = {record_id: [] for record_id in record_ids}
    for start in range(0, len(record_ids), 500):
        chunk = record_ids[start : start + 500]
        rows = session.rows(
            f"SELECT * FROM attempts WHERE record_id IN ({marks(len(chunk))}) ORDER BY record_id, seq",  # noqa: S608
            chunk,
        )
        for row in rows:
            found[row["record_id"]].append(journal_rows.attempt_from_row(row))
    return found


class SqlJournalWriter:
    """`JournalWriter` inside one `SqlJournal.write()` transaction (on the journal's bound chain)."""

    def __init__(
        self, session: Session, chain_id: int | None, skip_locked: str, now_sql: str, notices: bool = True
    ) -> None:
        self._session = session
        self._notices = notices
        self.noticed = False
        """Whether this transaction journaled a notice (`SqlJournal.on_notices` is told after the commit)."""
        self._chain_id = chain_id
        self._skip_locked = skip_locked
        self._for_update = " FOR UPDATE" if skip_locked else ""  # PostgreSQL; SQLite's writer is alone
        self._now = now_sql

    def fence(self, lease: Lease) -> None:
        lock = " FOR SHARE" if self._skip_locked else ""
        row = self._session.row(
            "SELECT epoch FROM leases WHERE chain_id = ? AND name = ? AND holder = ? AND epoch = ?"  # noqa: S608
            f" AND expires_at > {self._now}{lock}",
            (lease.chain_id, lease.name, lease.holder, lease.epoch),
        )
        if row is None:
            raise LeaseLost(lease)

    def max_nonce(self, sender: str) -> int | None:
        """The highest nonce journaled for a relayer signer on the bound chain (None when it has none yet).

        Per chain: the same key may sign on two chains whose records share the database, and a nonce
        numbered from the other chain's records would leave a gap no transaction fills.
        """
        sql = "SELECT MAX(nonce) AS top FROM records WHERE sender = ? AND kind != 'raw'"
        args: list[Any] = [sender]
        if self._chain_id is not None:
            sql += " AND chain_id = ?"
            args.append(self._chain_id)
        row = self._session.row(sql, args)
        return None if row is None or row["top"] is None else int(row["top"])

    def record_of(self, record_id: str) -> tuple[TxStatus, int] | None:
        """(status, last attempt seq) of a record, read inside the transaction for a compare-and-set."""
        row = self._session.row(
            "SELECT r.status, MAX(a.seq) AS seq FROM records r LEFT JOIN attempts a ON a.record_id = r.id "
            "WHERE r.id = ? GROUP BY r.id, r.status",
            (record_id,),
        )
        return (
            None
            if row is None
            else (TxStatus(row["status"]), int(row["seq"] if row["seq"] is not None else -1))
        )

    def reserve(self, chain_id: int, charge: Charge, now_s: int) -> None:
        """Add `charge` (one request and its worst-case wei) to each of its windows, locking their rows
        until this transaction ends, unless that would pass a limit.

        Raises:
            QuotaExceededError: the first window it would pass; nothing of this write is kept.
        """
        usages = _locked_usage(self._session, chain_id, charge.windows)
        refused = first_refusal(charge, usages, now_s)
        if refused is not None:
            raise refused
        _write_usages(
            self._session,
            chain_id,
            [
                (
                    window,
                    Usage(usages[window.key()].requests + 1, usages[window.key()].spent_wei + charge.wei),
                )
                for window in charge.windows
            ],
        )

    def unmined_raw_locked(self, chain_id: int, sender: str) -> int:
        """Raw records of `sender` on `chain_id` still `queued` or `submitted`, counted after taking the
        sender's row in `spend` (scope `raw:<sender>`, which counts the raw transactions ever accepted from
        it) for the rest of this transaction: two instances accepting for one sender take turns."""
        window = Window(f"raw:{sender.lower()}", 0, 0)
        accepted = _locked_usage(self._session, chain_id, [window])[window.key()]
        _write_usages(self._session, chain_id, [(window, Usage(accepted.requests + 1, 0))])
        row = self._session.row(
            "SELECT COUNT(*) AS n FROM records WHERE chain_id = ? AND kind = 'raw' AND sender = ?"
            " AND status IN (?, ?)",
            (chain_id, sender, TxStatus.QUEUED.value, TxStatus.SUBMITTED.value),
        )
        return 0 if row is None else int(row["n"])

    def raise_charge(self, record_id: str, chain_id: int, worst_wei: int) -> None:
        """A record's new attempt may cost up to `worst_wei` (a fee bump): its charge grows to that in every
        window it was reserved in (never refused: a stuck transaction must get through), so what is in flight
        is counted at its worst until settlement. Nothing for a record without a charge, or one within it."""
        row = self._session.row(
            f"SELECT charge FROM records WHERE id = ? AND charged_wei IS NULL{self._for_update}",  # noqa: S608
            (record_id,),
        )
        if row is None or row["charge"] is None:
            return
        charge = Charge.from_json(row["charge"])
        extra = worst_wei - charge.wei
        if extra <= 0:
            return
        usages = _locked_usage(self._session, chain_id, charge.windows)
        _write_usages(
            self._session,
            chain_id,
            [(w, Usage(usages[w.key()].requests, usages[w.key()].spent_wei + extra)) for w in charge.windows],
        )
        self._session.execute(
            "UPDATE records SET charge = ? WHERE id = ?", (charge.with_wei(worst_wei).to_json(), record_id)
        )

    def insert(self, record: RelayRecord, *, charge: Charge | None = None) -> None:
        """Insert a record and its attempts (with the sponsorship `charge` reserved for it, if any), ending
        the claim on its idempotency key.

        Raises:
            JournalConflict: naming the uniqueness rule that refused it; nothing of this write is kept.
            ValueError: a record of another chain than the journal's bound one (a bug in the caller).
        """
        if self._chain_id is not None and record.chain_id != self._chain_id:
            raise ValueError(f"a record of chain {record.chain_id} in a journal bound to {self._chain_id}")
        try:
            self._session.execute(
                "INSERT INTO records (id, kind, status, idempotency_key, request_hash, sender, nonce,"
                " chain_id, to_address, data, value_wei, gas_limit, request_owner, request_nonce, deadline,"
                " noop_outcome, error, mined, created_at, updated_at, account, charge)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    record.id,
                    record.kind.value,
                    record.status.value,
                    record.idempotency_key,
                    record.request_hash,
                    record.sender,
                    record.nonce,
                    record.chain_id,
                    record.to,
                    record.data,
                    str(record.value_wei),
                    record.gas_limit,
                    None if record.request is None else record.request.owner,
                    None if record.request is None else str(record.request.nonce),
                    None if record.request is None else record.request.deadline,
                    None if record.noop_outcome is None else record.noop_outcome.value,
                    None if record.error is None else json.dumps(record.error, sort_keys=True),
                    None if record.mined is None else journal_rows.mined_json(record.mined),
                    record.created_at,
                    record.updated_at,
                    record.account,
                    None if charge is None else charge.to_json(),
                ),
            )
            self.add_attempts(record.id, record.attempts)
        except UniqueViolation as exc:
            raise JournalConflict(journal_rows.conflict_constraint(exc.constraint)) from None
        if self._notices:
            notices = status_notices(
                record.id,
                record.kind,
                record.account,
                None,
                record.status,
                error=record.error,
                mined=record.mined,
                tx_hash=record.attempts[-1].tx_hash if record.attempts else None,
            )
            write_notices(self._session, record.chain_id, notices, record.updated_at)
            self.noticed = True
        if record.idempotency_key is not None:
            self._session.execute(
                "DELETE FROM idempotency_claims WHERE chain_id IN (?, 0) AND idempotency_key = ?",
                (record.chain_id, record.idempotency_key),
            )

    def add_attempts(self, record_id: str, attempts: Iterable[Attempt]) -> None:
        for attempt in attempts:
            self._session.execute(
                "INSERT INTO attempts (tx_hash, record_id, seq, kind, raw_tx, max_fee_per_gas_wei,"
                " max_priority_fee_per_gas_wei, created_at, broadcast_at) VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    attempt.tx_hash,
                    record_id,
                    attempt.seq,
                    attempt.kind.value,
                    attempt.raw_tx,
                    str(attempt.max_fee_per_gas_wei),
                    str(attempt.max_priority_fee_per_gas_wei),
                    attempt.created_at,
                    attempt.broadcast_at,
                ),
            )

    def set_noop_outcome(self, record_id: str, outcome: TxStatus, error: dict[str, Any], now: float) -> None:
        """Record what the record becomes once its no-op mines (expired or failed) and why."""
        self._session.execute(
            "UPDATE records SET noop_outcome = ?, error = ?, updated_at = ? WHERE id = ?",
            (outcome.value, json.dumps(error, sort_keys=True), now, record_id),
        )

    def next_intent(self, signer: str) -> Intent | None:
        sql = "SELECT * FROM intents WHERE signer = ? AND state = ?"
        args: list[Any] = [signer, Intent.WAITING]
        if self._chain_id is not None:
            sql += " AND chain_id = ?"
            args.append(self._chain_id)
        row = self._session.row(f"{sql} ORDER BY created_at, id LIMIT 1{self._skip_locked}", args)
        return None if row is None else journal_rows.intent_from_row(row)

    def settle_intent(self, intent_id: str, error: dict[str, Any] | None, now: float) -> None:
        if error is None:
            self._session.execute("DELETE FROM intents WHERE id = ?", (intent_id,))
            return
        self._session.execute(
            "UPDATE intents SET state = ?, error = ?, updated_at = ? WHERE id = ?",
            (Intent.FAILED, json.dumps(error, sort_keys=True), now, intent_id),
        )
        key = self._session.row("SELECT chain_id, idempotency_key FROM intents WHERE id = ?", (intent_id,))
        if key is not None and key["idempotency_key"] is not None:
            self._session.execute(
                "DELETE FROM idempotency_claims WHERE chain_id IN (?, 0) AND idempotency_key = ?",
                (key["chain_id"], key["idempotency_key"]),
            )


class SqliteJournal(SqlJournal):
    """The journal on one SQLite file (the embedded default).

    Several processes may open the same file: WAL lets readers run beside the one writer, and every write
    transaction is `BEGIN IMMEDIATE`, so two writers serialize instead of interleaving. Only one of them may
    relay (`relaying=True`, see `lock_for_relaying`).
    """

    def __init__(self, path: Path | str, *, relaying: bool = False) -> None:
        """Open (creating when missing, 0600) and migrate the journal file at `path` (`store_file.connect`).

        `relaying`: this process relays through the journal: hold its relay lock until `close()`.

        Raises:
            ConfigurationError: the file or its folder cannot be created or opened (permissions, a
                directory), it is at a newer schema than this relayer knows, or (`relaying`) another process
                relays through it.
        """
        self.path = str(path)
        relay_lock = lock_for_relaying(self.path) if relaying else None
        try:
            database = store_file.SqliteDatabase(self.path, what="the relay journal")
        except BaseException:
            if relay_lock is not None:
                relay_lock.release()
            raise
        super().__init__(database, relay_lock=relay_lock)


def open_journal(path: Path, *, create: bool) -> SqliteJournal:
    """The journal an operator command names (`relayer relay list|status`; `relayer.config.journal_path`); a
    reader (`create=False`) refuses a missing file rather than make an empty one.

    Raises:
        ConfigurationError: no journal at the path and `create` is False, or it cannot be opened.
    """
    return SqliteJournal(store_file.named_journal(path, create=create))
