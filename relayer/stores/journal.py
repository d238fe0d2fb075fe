"""The durable relay journal: relay records, their attempts and nonces, on the shared SQLite file.

WAL mode (readers such as `relayer relay list` never block the relayer), the file's one versioned schema
(`relayer.stores.sqlite`), compare-and-set status updates (`UPDATE ... WHERE id=? AND status=?`), and a write
transaction (`BEGIN IMMEDIATE`) in which the sender allocates a nonce, signs and inserts the record and its
first attempt together: the nonce can never advance without the record that uses it being saved.

One file may hold the records of several chains: every command defaults to `.relayer/journal.sqlite3`, so a
node's server and an embedded demo started in the same folder share it. Every record carries its chain id;
a relay start binds its journal to its chain (`bind_to_chain`), and from then on that journal reads,
resumes and numbers nonces only from records of that chain id. Only one process relays through a journal at
a time (`lock_for_relaying`). The same file holds the API keys, behind their own store and connection
(`relayer.stores.keys`), which never takes the relay lock. The file is created mode 0600 in a folder created
0700 (`.relayer/` by default).

What lives where: `relayer.stores.journal_port` holds the port (`Journal`, `JournalWriter`, `JournalConflict`)
with the status rule; this module holds the SQLite adapter, `SqliteJournal` and its `SqliteJournalWriter`;
`relayer.stores.journal_chains` holds `ChainBinding` and the binding rule; and `relayer.stores.relay_lock`
holds the relay lock (`lock_for_relaying`, `RelayLock`).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from relayer.domain.records import Attempt, RelayRecord
from relayer.domain.status import PENDING, TxStatus
from relayer.stores import journal_chains, journal_rows
from relayer.stores import sqlite as store_file
from relayer.stores.journal_chains import ChainBinding
from relayer.stores.journal_port import Journal, JournalConflict, JournalWriter, StatusChange
from relayer.stores.relay_lock import lock_for_relaying

_PENDING = tuple(sorted(status.value for status in PENDING))
"""`PENDING` as SQL parameters (`status IN (?, ...)`)."""


class SqliteJournal(Journal):
    """The relay journal (`relayer.stores.journal_port.Journal`) on one SQLite file; safe to share between
    threads of one process.

    Several processes may open the same file: WAL lets readers run beside the one writer, and every write
    transaction is `BEGIN IMMEDIATE`, so two writers serialize instead of interleaving. Only one of them may
    relay (`relaying=True`, see `lock_for_relaying`).

    Until `bind_to_chain`, record reads see every chain's records (what `relayer relay list` shows); after
    it, `pending`, `all`, `records`, `nonce_summary`, `by_idempotency_key`, `by_hash` and the writer's
    `max_nonce` see only the bound chain's, and the writer refuses a record of another chain. `get(id)`
    answers any record: an id names one record wherever it belongs.
    """

    def __init__(self, path: Path | str, *, relaying: bool = False) -> None:
        """Open (creating when missing, 0600) and migrate the journal file at `path` (`store_file.connect`).

        `relaying`: this process relays through the journal: hold its relay lock until `close()`.

        Raises:
            ConfigurationError: the file or its folder cannot be created or opened (permissions, a
                directory), or (`relaying`) another process relays through it.
        """
        self.path = str(path)
        self.chain_id: int | None = None
        """The chain `bind_to_chain` bound this journal to (None: unbound, every chain's records)."""
        self._lock = threading.RLock()
        self._relay_lock = lock_for_relaying(self.path) if relaying else None
        try:
            self._conn = store_file.connect(self.path, what="the relay journal")
        except BaseException:
            if self._relay_lock is not None:
                self._relay_lock.release()
            raise

    def close(self) -> None:
        """Close the file and let go of the relay lock (if this journal holds it)."""
        with self._lock:
            self._conn.close()
        if self._relay_lock is not None:
            self._relay_lock.release()

    @property
    def relaying(self) -> bool:
        return self._relay_lock is not None

    @property
    def schema_version(self) -> int:
        with self._lock:
            return store_file.schema_version(self._conn)

    @contextmanager
    def write(self) -> Iterator[JournalWriter]:
        """One write transaction (`BEGIN IMMEDIATE`): everything done through the writer commits together or
        not at all."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield SqliteJournalWriter(self._conn, self.chain_id)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    # --- the chains the records belong to -----------------------------------------------------------------

    def known_chains(self) -> list[ChainBinding]:
        """Every chain a relay started on with this journal, by chain id (one row per id)."""
        with self._lock:
            return journal_chains.known_chains(self._conn)

    def bind_to_chain(self, chain: ChainBinding, *, now: int) -> int:
        """Start relaying on `chain`, before anything is resumed; returns how many records were dropped.

        The rule (which records of `chain.chain_id` are resumed, refused or, for a dead embedded run,
        dropped) is `journal_chains.bind`. Dropping is safe only because no other process relays through
        the journal meanwhile, so binding needs a journal opened with `relaying=True` (the relay lock).

        Raises:
            ConfigurationError: the records of this chain id belong to another chain.
            ValueError: the journal was not opened for relaying (a bug in the caller).
        """
        if not self.relaying:
            raise ValueError("bind_to_chain needs a journal opened with relaying=True (the relay lock)")
        with self.write():
            dropped = journal_chains.bind(self._conn, self.path, chain, now=now)
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

    # --- reads --------------------------------------------------------------------------------------------

    def get(self, record_id: str) -> RelayRecord | None:
        with self._lock:
            row = self._conn.execute("SELECT * FROM records WHERE id = ?", (record_id,)).fetchone()
            if row is None:
                return None
            return journal_rows.record_from_row(row, self._attempts([record_id])[record_id])

    def by_idempotency_key(self, key: str) -> RelayRecord | None:
        where, args = self._on_chain("idempotency_key = ?")
        with self._lock:
            row = self._conn.execute(f"SELECT id FROM records {where}", [key, *args]).fetchone()  # noqa: S608
        return None if row is None else self.get(row["id"])

    def by_hash(self, tx_hash: str) -> RelayRecord | None:
        where, args = self._on_chain("a.tx_hash = ?")
        sql = f"SELECT a.record_id FROM attempts a JOIN records r ON r.id = a.record_id {where}"  # noqa: S608
        with self._lock:
            row = self._conn.execute(sql, [tx_hash, *args]).fetchone()
        return None if row is None else self.get(row["record_id"])

    def records(
        self, status: TxStatus | None = None, *, limit: int = 100, offset: int = 0
    ) -> list[RelayRecord]:
        """Records, newest first, optionally of one status."""
        where, args = self._on_chain("" if status is None else "status = ?")
        if status is not None:
            args.insert(0, status.value)
        sql = f"SELECT * FROM records {where} ORDER BY created_at DESC, rowid DESC LIMIT ? OFFSET ?"  # noqa: S608
        return self._query(sql, [*args, limit, offset])

    def pending(self) -> list[RelayRecord]:
        """Every record that still needs work, oldest nonce first per sender (the order to broadcast in)."""
        where, args = self._on_chain(f"status IN ({','.join('?' * len(_PENDING))})")
        sql = f"SELECT * FROM records {where} ORDER BY sender, nonce, rowid"  # noqa: S608
        return self._query(sql, [*_PENDING, *args])

    def all(self) -> list[RelayRecord]:
        where, args = self._on_chain()
        return self._query(f"SELECT * FROM records {where} ORDER BY sender, nonce, rowid", args)  # noqa: S608

    def nonce_summary(self) -> dict[str, tuple[int, int]]:
        """Per relayer signer: (highest nonce journaled, count of records still pending)."""
        marks = ",".join("?" * len(_PENDING))
        where, args = self._on_chain("kind != 'raw'")
        sql = (
            "SELECT sender, MAX(nonce) AS top, SUM(CASE WHEN status IN ("  # noqa: S608
            + marks
            + f") THEN 1 ELSE 0 END) AS live FROM records {where} GROUP BY sender"
        )
        with self._lock:
            rows = self._conn.execute(sql, [*_PENDING, *args]).fetchall()
        return {row["sender"]: (int(row["top"]), int(row["live"] or 0)) for row in rows}

    def _query(self, sql: str, args: list[Any]) -> list[RelayRecord]:
        with self._lock:
            rows = self._conn.execute(sql, args).fetchall()
            attempts = self._attempts([row["id"] for row in rows])
        return [journal_rows.record_from_row(row, attempts[row["id"]]) for row in rows]

    def _attempts(self, record_ids: list[str]) -> dict[str, list[Attempt]]:
        found: dict[str, list[Attempt]] = {record_id: [] for record_id in record_ids}
        for start in range(0, len(record_ids), 500):
            chunk = record_ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._conn.execute(
                f"SELECT * FROM attempts WHERE record_id IN ({marks}) ORDER BY record_id, seq",  # noqa: S608
                chunk,
            ).fetchall()
            for row in rows:
                found[row["record_id"]].append(journal_rows.attempt_from_row(row))
        return found

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
        with self._lock:
            cursor = self._conn.execute(
                f"UPDATE records SET {', '.join(sets)} WHERE {where}",  # noqa: S608
                [*args, *guards],
            )
            return cursor.rowcount == 1

    def set_error(self, record_id: str, expected: TxStatus, error: dict[str, Any], *, now: float) -> bool:
        """Note why a pending record is stuck (e.g. out of funds) without changing its status."""
        with self._lock:
            cursor = self._conn.execute(
                "UPDATE records SET error = ?, updated_at = ? WHERE id = ? AND status = ?",
                (json.dumps(error, sort_keys=True), now, record_id, expected.value),
            )
            return cursor.rowcount == 1

    def mark_broadcast(self, tx_hash: str, *, now: float) -> None:
        """Note that a node accepted (or already had) this attempt."""
        with self._lock:
            self._conn.execute(
                "UPDATE attempts SET broadcast_at = ? WHERE tx_hash = ? AND broadcast_at IS NULL",
                (now, tx_hash),
            )


class SqliteJournalWriter:
    """`JournalWriter` inside one `SqliteJournal.write()` transaction (on the journal's bound chain)."""

    def __init__(self, conn: sqlite3.Connection, chain_id: int | None = None) -> None:
        self._conn = conn
        self._chain_id = chain_id

    def max_nonce(self, sender: str) -> int | None:
        """The highest nonce journaled for a relayer signer on the bound chain (None when it has none yet).

        Per chain: the same key may sign on two chains whose records share the file, and a nonce numbered
        from the other chain's records would leave a gap no transaction fills.
        """
        sql = "SELECT MAX(nonce) AS top FROM records WHERE sender = ? AND kind != 'raw'"
        args: list[Any] = [sender]
        if self._chain_id is not None:
            sql += " AND chain_id = ?"
            args.append(self._chain_id)
        row = self._conn.execute(sql, args).fetchone()
        return None if row["top"] is None else int(row["top"])

    def record_of(self, record_id: str) -> tuple[TxStatus, int] | None:
        """(status, last attempt seq) of a record, read inside the transaction for a compare-and-set."""
        row = self._conn.execute(
            "SELECT r.status, MAX(a.seq) AS seq FROM records r LEFT JOIN attempts a ON a.record_id = r.id "
            "WHERE r.id = ? GROUP BY r.id",
            (record_id,),
        ).fetchone()
        return (
            None
            if row is None
            else (TxStatus(row["status"]), int(row["seq"] if row["seq"] is not None else -1))
        )

    def insert(self, record: RelayRecord) -> None:
        """Insert a record and its attempts.

        Raises:
            JournalConflict: naming the uniqueness rule that refused it; nothing of this write is kept.
            ValueError: a record of another chain than the journal's bound one (a bug in the caller).
        """
        if self._chain_id is not None and record.chain_id != self._chain_id:
            raise ValueError(f"a record of chain {record.chain_id} in a journal bound to {self._chain_id}")
        try:
            self._conn.execute(
                "INSERT INTO records (id, kind, status, idempotency_key, request_hash, sender, nonce,"
                " chain_id, to_address, data, value_wei, gas_limit, request_owner, request_nonce, deadline,"
                " noop_outcome, error, mined, created_at, updated_at, account)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
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
                ),
            )
            self.add_attempts(record.id, record.attempts)
        except sqlite3.IntegrityError as exc:
            raise JournalConflict(journal_rows.conflict_constraint(exc)) from None

    def add_attempts(self, record_id: str, attempts: Iterable[Attempt]) -> None:
        for attempt in attempts:
            self._conn.execute(
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
        self._conn.execute(
            "UPDATE records SET noop_outcome = ?, error = ?, updated_at = ? WHERE id = ?",
            (outcome.value, json.dumps(error, sort_keys=True), now, record_id),
        )


def open_journal(path: Path, *, create: bool) -> SqliteJournal:
    """The journal an operator command names (`relayer relay list|status`; `relayer.config.journal_path`); a
    reader (`create=False`) refuses a missing file rather than make an empty one.

    Raises:
        ConfigurationError: no journal at the path and `create` is False, or it cannot be opened.
    """
    return SqliteJournal(store_file.named_journal(path, create=create))
