"""The durable journal: the one module that talks to SQLite (relay records and API keys).

WAL mode (readers such as `relayer relay list` never block the relayer), a versioned schema upgraded by
ordered migrations, compare-and-set status updates (`UPDATE ... WHERE id=? AND status=?`), and a write
transaction (`BEGIN IMMEDIATE`) in which the sender allocates a nonce, signs and inserts the record and its
first attempt together: the nonce can never advance without the record that uses it being saved.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from relayer.apikeys import ApiKey, Scope
from relayer.errors import ConfigurationError
from relayer.relay.config import RelaySettings
from relayer.relay.records import Attempt, Mined, RelayRecord
from relayer.relay.status import AttemptKind, RecordKind, TxStatus, can_transition

SCHEMA_VERSION = 2
"""Bumped by every migration; stored in SQLite's `PRAGMA user_version`."""

_MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (
        1,
        (
            """CREATE TABLE records (
                id TEXT PRIMARY KEY,
                kind TEXT NOT NULL,
                status TEXT NOT NULL,
                idempotency_key TEXT UNIQUE,
                request_hash TEXT NOT NULL,
                sender TEXT NOT NULL,
                nonce INTEGER NOT NULL,
                chain_id INTEGER NOT NULL,
                to_address TEXT NOT NULL,
                data BLOB NOT NULL,
                value_wei TEXT NOT NULL,
                gas_limit INTEGER NOT NULL,
                request_owner TEXT,
                request_nonce TEXT,
                deadline INTEGER,
                noop_outcome TEXT,
                error TEXT,
                mined TEXT,
                created_at REAL NOT NULL,
                updated_at REAL NOT NULL
            )""",
            # One record per nonce of each relayer signer: the database itself refuses a duplicate nonce.
            "CREATE UNIQUE INDEX records_signer_nonce ON records (sender, nonce) WHERE kind != 'raw'",
            # A signed request (owner, nonce) is relayed at most once at a time; a second copy would revert.
            """CREATE UNIQUE INDEX records_live_request ON records (request_owner, request_nonce)
               WHERE request_owner IS NOT NULL AND status NOT IN ('failed', 'expired', 'replaced')""",
            "CREATE INDEX records_status ON records (status, sender, nonce)",
            """CREATE TABLE attempts (
                tx_hash TEXT PRIMARY KEY,
                record_id TEXT NOT NULL REFERENCES records (id),
                seq INTEGER NOT NULL,
                kind TEXT NOT NULL,
                raw_tx BLOB NOT NULL,
                max_fee_per_gas_wei TEXT NOT NULL,
                max_priority_fee_per_gas_wei TEXT NOT NULL,
                created_at REAL NOT NULL,
                broadcast_at REAL,
                UNIQUE (record_id, seq)
            )""",
        ),
    ),
    (
        2,
        (
            # API keys: only a key's SHA-256 is stored; `prefix` is its first characters, for `keys list`.
            """CREATE TABLE api_keys (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                key_hash TEXT NOT NULL UNIQUE,
                prefix TEXT NOT NULL,
                label TEXT NOT NULL,
                account TEXT NOT NULL,
                scopes TEXT NOT NULL,
                created_at INTEGER NOT NULL,
                last_used_at INTEGER,
                revoked_at INTEGER
            )""",
        ),
    ),
)

_SUCCEEDED = frozenset({TxStatus.MINED, TxStatus.CONFIRMED})
_PENDING = tuple(status.value for status in TxStatus if status.is_pending)


class JournalConflict(Exception):  # noqa: N818 - a signal to the sender, not an error a client sees
    """An insert hit a uniqueness rule (idempotency key, live request, signer nonce or transaction hash)."""

    def __init__(self, constraint: str) -> None:
        super().__init__(constraint)
        self.constraint = constraint


class Journal:
    """The relay journal on one SQLite file; safe to share between threads of one process.

    Several processes may open the same file: WAL lets readers run beside the one writer, and every write
    transaction is `BEGIN IMMEDIATE`, so two writers serialize instead of interleaving.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        self._conn.row_factory = sqlite3.Row
        if self.path != ":memory:":
            self._conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a record reported as written survives a power cut, not only a process crash.
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._migrate()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @property
    def schema_version(self) -> int:
        with self._lock:
            return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                current = int(self._conn.execute("PRAGMA user_version").fetchone()[0])
                for version, statements in _MIGRATIONS:
                    if version <= current:
                        continue
                    for statement in statements:
                        self._conn.execute(statement)
                    self._conn.execute(f"PRAGMA user_version = {int(version)}")
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    @contextmanager
    def write(self) -> Iterator[JournalWriter]:
        """One write transaction: everything done through the writer commits together or not at all."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield JournalWriter(self._conn)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    # --- reads --------------------------------------------------------------------------------------------

    def get(self, record_id: str) -> RelayRecord | None:
        with self._lock:
            row = self._conn.execute("SELECT * FROM records WHERE id = ?", (record_id,)).fetchone()
            return None if row is None else _record(row, self._attempts([record_id])[record_id])

    def by_idempotency_key(self, key: str) -> RelayRecord | None:
        with self._lock:
            row = self._conn.execute("SELECT id FROM records WHERE idempotency_key = ?", (key,)).fetchone()
        return None if row is None else self.get(row["id"])

    def by_hash(self, tx_hash: str) -> RelayRecord | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT record_id FROM attempts WHERE tx_hash = ?", (tx_hash,)
            ).fetchone()
        return None if row is None else self.get(row["record_id"])

    def records(
        self, status: TxStatus | None = None, *, limit: int = 100, offset: int = 0
    ) -> list[RelayRecord]:
        """Records, newest first, optionally of one status."""
        where, args = ("WHERE status = ?", [status.value]) if status is not None else ("", [])
        sql = f"SELECT * FROM records {where} ORDER BY created_at DESC, rowid DESC LIMIT ? OFFSET ?"  # noqa: S608
        return self._query(sql, [*args, limit, offset])

    def pending(self) -> list[RelayRecord]:
        """Every record that still needs work, oldest nonce first per sender (the order to broadcast in)."""
        marks = ",".join("?" * len(_PENDING))
        sql = f"SELECT * FROM records WHERE status IN ({marks}) ORDER BY sender, nonce, rowid"  # noqa: S608
        return self._query(sql, list(_PENDING))

    def all(self) -> list[RelayRecord]:
        return self._query("SELECT * FROM records ORDER BY sender, nonce, rowid", [])

    def nonce_summary(self) -> dict[str, tuple[int, int]]:
        """Per relayer signer: (highest nonce journaled, count of records still pending)."""
        marks = ",".join("?" * len(_PENDING))
        sql = (
            "SELECT sender, MAX(nonce) AS top, SUM(CASE WHEN status IN ("  # noqa: S608
            + marks
            + ") THEN 1 ELSE 0 END) AS live FROM records WHERE kind != 'raw' GROUP BY sender"
        )
        with self._lock:
            rows = self._conn.execute(sql, list(_PENDING)).fetchall()
        return {row["sender"]: (int(row["top"]), int(row["live"] or 0)) for row in rows}

    def _query(self, sql: str, args: list[Any]) -> list[RelayRecord]:
        with self._lock:
            rows = self._conn.execute(sql, args).fetchall()
            attempts = self._attempts([row["id"] for row in rows])
        return [_record(row, attempts[row["id"]]) for row in rows]

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
                found[row["record_id"]].append(_attempt(row))
        return found

    # --- compare-and-set updates

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
    ) -> bool:
        """Move a record from `expected` to `new`; False (and no change) when it is no longer `expected`.

        Raises:
            ValueError: when `expected -> new` is not in the transition table (a bug in the caller).
        """
        if not can_transition(expected, new):
            raise ValueError(f"illegal relay status change {expected} -> {new}")
        sets = ["status = ?", "updated_at = ?"]
        args: list[Any] = [new.value, now]
        if error is not None:
            sets.append("error = ?")
            args.append(json.dumps(error, sort_keys=True))
        elif new in _SUCCEEDED:
            sets.append("error = NULL")  # a note such as chain_unavailable was about the wait, which is over
        if mined is not None:
            sets.append("mined = ?")
            args.append(_mined_json(mined))
        elif clear_mined:
            sets.append("mined = NULL")
        with self._lock:
            cursor = self._conn.execute(
                f"UPDATE records SET {', '.join(sets)} WHERE id = ? AND status = ?",  # noqa: S608
                [*args, record_id, expected.value],
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

    # --- API keys -------------------------------------------------------------------------------------------

    def insert_api_key(
        self, *, key_hash: str, prefix: str, label: str, account: str, scopes: frozenset[Scope], now: int
    ) -> ApiKey:
        """Store a new key's hash (never the key) and return the stored record."""
        with self._lock:
            cursor = self._conn.execute(
                "INSERT INTO api_keys (key_hash, prefix, label, account, scopes, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (key_hash, prefix, label, account, ",".join(sorted(scopes)), now),
            )
            key_id = int(cursor.lastrowid or 0)
        found = self.api_key(key_id)
        assert found is not None
        return found

    def api_key(self, key_id: int) -> ApiKey | None:
        with self._lock:
            row = self._conn.execute("SELECT * FROM api_keys WHERE id = ?", (key_id,)).fetchone()
        return None if row is None else _api_key(row)

    def api_key_by_hash(self, key_hash: str) -> ApiKey | None:
        with self._lock:
            row = self._conn.execute("SELECT * FROM api_keys WHERE key_hash = ?", (key_hash,)).fetchone()
        return None if row is None else _api_key(row)

    def api_keys(self) -> list[ApiKey]:
        with self._lock:
            rows = self._conn.execute("SELECT * FROM api_keys ORDER BY id").fetchall()
        return [_api_key(row) for row in rows]

    def touch_api_key(self, key_id: int, now: int) -> None:
        with self._lock:
            self._conn.execute("UPDATE api_keys SET last_used_at = ? WHERE id = ?", (now, key_id))

    def revoke_api_key(self, key_id: int, now: int) -> bool:
        """Revoke a key; False when there is no such key or it was already revoked."""
        with self._lock:
            cursor = self._conn.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (now, key_id)
            )
            return cursor.rowcount == 1

    def mark_broadcast(self, tx_hash: str, *, now: float) -> None:
        """Note that a node accepted (or already had) this attempt."""
        with self._lock:
            self._conn.execute(
                "UPDATE attempts SET broadcast_at = ? WHERE tx_hash = ? AND broadcast_at IS NULL",
                (now, tx_hash),
            )


class JournalWriter:
    """What the sender may do inside one `Journal.write()` transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def max_nonce(self, sender: str) -> int | None:
        """The highest nonce journaled for a relayer signer (None when it has no record yet)."""
        row = self._conn.execute(
            "SELECT MAX(nonce) AS top FROM records WHERE sender = ? AND kind != 'raw'", (sender,)
        ).fetchone()
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
        """
        try:
            self._conn.execute(
                "INSERT INTO records (id, kind, status, idempotency_key, request_hash, sender, nonce,"
                " chain_id, to_address, data, value_wei, gas_limit, request_owner, request_nonce, deadline,"
                " noop_outcome,"
                " error, mined, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
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
                    record.request_owner,
                    None if record.request_nonce is None else str(record.request_nonce),
                    record.deadline,
                    None if record.noop_outcome is None else record.noop_outcome.value,
                    None if record.error is None else json.dumps(record.error, sort_keys=True),
                    None if record.mined is None else _mined_json(record.mined),
                    record.created_at,
                    record.updated_at,
                ),
            )
            self.add_attempts(record.id, record.attempts)
        except sqlite3.IntegrityError as exc:
            raise JournalConflict(_constraint(exc)) from None

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


def open_journal(path_arg: str | None, *, create: bool) -> Journal:
    """The journal an operator command names: `--journal` if given, else `RELAYER_RELAY_JOURNAL_PATH` (or its
    default). Only a command that writes something new (`create=True`, e.g. `keys create`) may start a new
    file; a reader refuses a missing one, so a typo never shows an empty, freshly made journal.

    Raises:
        ConfigurationError: no journal at the path and `create` is False.
    """
    path = Path(path_arg) if path_arg else RelaySettings.from_env().journal_path
    if not create and not path.exists():
        raise ConfigurationError(f"no relay journal at {path} (set --journal or RELAYER_RELAY_JOURNAL_PATH)")
    return Journal(path)


def _constraint(exc: sqlite3.IntegrityError) -> str:
    text = str(exc)
    for name in ("idempotency_key", "request_owner", "attempts.tx_hash", "records.sender"):
        if name in text:
            return {"records.sender": "signer_nonce", "attempts.tx_hash": "tx_hash"}.get(name, name)
    return text


def _mined_json(mined: Mined) -> str:
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


def _attempt(row: sqlite3.Row) -> Attempt:
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


def _record(row: sqlite3.Row, attempts: list[Attempt]) -> RelayRecord:
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
        request_owner=row["request_owner"],
        request_nonce=None if row["request_nonce"] is None else int(row["request_nonce"]),
        deadline=None if row["deadline"] is None else int(row["deadline"]),
        noop_outcome=None if row["noop_outcome"] is None else TxStatus(row["noop_outcome"]),
        error=None if row["error"] is None else json.loads(row["error"]),
        mined=mined,
        attempts=tuple(attempts),
    )


def _api_key(row: sqlite3.Row) -> ApiKey:
    return ApiKey(
        key_id=int(row["id"]),
        prefix=row["prefix"],
        label=row["label"],
        account=row["account"],
        scopes=frozenset(Scope(name) for name in row["scopes"].split(",") if name),
        created_at=int(row["created_at"]),
        last_used_at=None if row["last_used_at"] is None else int(row["last_used_at"]),
        revoked_at=None if row["revoked_at"] is None else int(row["revoked_at"]),
        key_hash=row["key_hash"],
    )
