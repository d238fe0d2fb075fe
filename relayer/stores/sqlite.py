"""The SQLite file every SQLite adapter shares: how it is opened, and its one versioned schema.

One file holds the relay journal (records, attempts, chains) and the API keys, so a newcomer has one file
(`.relayer/journal.sqlite3` by default) and `relayer keys create` adds keys a running `relayer serve` reads at
once. Each adapter (`relayer.stores.journal.Journal`, `relayer.stores.keys.SqliteKeyStore`) opens its own
connection with `connect`: WAL mode (readers never block the writer), `synchronous=FULL`, and the schema
brought up to `SCHEMA_VERSION` by `MIGRATIONS`, whichever adapter opens the file first. The schema has one
version for the whole file: a table belongs to one adapter, its migrations to this one sequence.

The file holds API-key hashes and signed transactions: a file created here is mode 0600, in a folder created
0700. Nothing here takes the journal's relay lock (`relayer.stores.relay_lock.lock_for_relaying`): only a
relaying journal does.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from relayer.errors import ConfigurationError

SCHEMA_VERSION = 4
"""Bumped by every migration; stored in SQLite's `PRAGMA user_version`."""

MEMORY = ":memory:"
"""SQLite's private, throwaway in-memory database: every connection to it is a database of its own."""

PRIVATE_DIR_MODE = 0o700
"""A journal folder the relayer creates (`.relayer/`): only its owner may list or enter it."""

PRIVATE_FILE_MODE = 0o600
"""A journal file the relayer creates: only its owner may read it (SQLite gives its -wal and -shm files the
same mode)."""

_V3_RECORD_COLUMNS = (
    "id, kind, status, idempotency_key, request_hash, sender, nonce, chain_id, to_address, data, value_wei,"
    " gas_limit, request_owner, request_nonce, deadline, noop_outcome, error, mined, created_at, updated_at"
)
"""The columns `records` had up to version 3: migration 3 copies exactly these, whatever came later."""

_RECORD_COLUMNS = _V3_RECORD_COLUMNS + ", account"
"""Every column of `records` at `SCHEMA_VERSION`."""

_RECORDS_V1_COLUMNS = """
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, status TEXT NOT NULL, idempotency_key TEXT,
    request_hash TEXT NOT NULL, sender TEXT NOT NULL, nonce INTEGER NOT NULL, chain_id INTEGER NOT NULL,
    to_address TEXT NOT NULL, data BLOB NOT NULL, value_wei TEXT NOT NULL, gas_limit INTEGER NOT NULL,
    request_owner TEXT, request_nonce TEXT, deadline INTEGER, noop_outcome TEXT, error TEXT, mined TEXT,
    created_at REAL NOT NULL, updated_at REAL NOT NULL"""
"""The columns of `records` from version 1 to 3, frozen with the migrations that create them (1, and 3's
rebuild, which only moves the idempotency key's uniqueness from the file to the chain)."""

MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (
        1,
        (
            f"CREATE TABLE records ({_RECORDS_V1_COLUMNS}, UNIQUE (idempotency_key))",
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
            # API keys (`SqliteKeyStore`): only a key's SHA-256 is stored; `prefix` is its first characters,
            # for `keys list`.
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
    (
        3,
        (
            # Records of several chains share a file: a signer's nonce, a live signed request and an
            # idempotency key are unique per chain. SQLite cannot relax a column's UNIQUE in place, so the
            # table is rebuilt (foreign keys are off while migrations run) and its indexes made again.
            f"CREATE TABLE records_v3 ({_RECORDS_V1_COLUMNS}, UNIQUE (chain_id, idempotency_key))",
            f"INSERT INTO records_v3 ({_V3_RECORD_COLUMNS}) SELECT {_V3_RECORD_COLUMNS} FROM records",  # noqa: S608
            "DROP TABLE records",
            "ALTER TABLE records_v3 RENAME TO records",
            """CREATE UNIQUE INDEX records_signer_nonce ON records (chain_id, sender, nonce)
               WHERE kind != 'raw'""",
            """CREATE UNIQUE INDEX records_live_request ON records (chain_id, request_owner, request_nonce)
               WHERE request_owner IS NOT NULL AND status NOT IN ('failed', 'expired', 'replaced')""",
            "CREATE INDEX records_status ON records (chain_id, status, sender, nonce)",
            # One row per chain id a relay started on: a real chain's genesis block hash, or the run id of an
            # embedded chain (`ChainBinding`). `bind_to_chain` compares a start with the row of its own id.
            """CREATE TABLE chains (
                chain_id INTEGER PRIMARY KEY,
                genesis_hash TEXT NOT NULL,
                embedded_run TEXT,
                bound_at INTEGER NOT NULL
            )""",
        ),
    ),
    (
        4,
        (
            # The account a record acts for (`RelayRecord.account`): a signed request's owner, an API-key
            # holder's account, a keeper execution's position owner, a raw transaction's sender. Records
            # journaled before keep NULL: nothing then said whom they were for.
            "ALTER TABLE records ADD COLUMN account TEXT",
        ),
    ),
)
"""(version, statements) in order; a file at `user_version` v runs every later entry, in one transaction."""


def connect(path: str, *, what: str) -> sqlite3.Connection:
    """A connection to the file at `path` (created 0600 when missing), its schema migrated to the latest.

    Safe to share between the threads of one process when the caller serializes its use (both adapters hold
    a lock around every statement). `what` names the file in errors ("the relay journal").

    Raises:
        ConfigurationError: the file or its folder cannot be created or opened (permissions, a directory,
            not an SQLite file).
    """
    try:
        if path != MEMORY:
            create_private_file(Path(path))
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        if path != MEMORY:
            conn.execute("PRAGMA journal_mode=WAL")
    except (OSError, sqlite3.DatabaseError) as exc:  # unwritable folder, a directory, not SQLite
        raise ConfigurationError(f"cannot open {what} {path}: {exc}", journal=path) from None
    conn.row_factory = sqlite3.Row
    # FULL: a write reported as done survives a power cut, not only a process crash.
    conn.execute("PRAGMA synchronous=FULL")
    try:
        migrate(conn)  # foreign keys still off: a migration may rebuild a table others reference
    except BaseException:
        conn.close()
        raise
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def migrate(conn: sqlite3.Connection) -> None:
    """Run every migration past the file's `user_version`, all in one write transaction.

    `BEGIN IMMEDIATE` first: two connections opening a new file at once (a journal and a key store, or two
    processes) migrate one after the other, and the second finds nothing left to do.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        current = schema_version(conn)
        for version, statements in MIGRATIONS:
            if version <= current:
                continue
            for statement in statements:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {int(version)}")
        if conn.execute("PRAGMA foreign_key_check").fetchone() is not None:
            raise sqlite3.IntegrityError("a migration left an attempt without its record")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def named_journal(path: Path, *, create: bool) -> Path:
    """The journal file an operator command names (`relayer.config.journal_path`). Only a command that writes
    something new (`create=True`, e.g. `keys create`) may start a new file; a reader refuses a missing one, so
    a typo never shows an empty, freshly made journal.

    Raises:
        ConfigurationError: no journal at the path and `create` is False.
    """
    if not create and not path.exists():
        raise ConfigurationError(f"no relay journal at {path} (set --journal or RELAYER_RELAY_JOURNAL_PATH)")
    return path


def create_private_folder(folder: Path) -> None:
    """Create a missing folder 0700 (an existing one keeps the mode its owner gave it)."""
    if not folder.exists():
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, PRIVATE_DIR_MODE)  # mkdir's mode is filtered by the umask; chmod is exact


def create_private_file(path: Path) -> None:
    """Create a missing journal file 0600 (and a missing folder 0700) before SQLite opens it.

    SQLite would create the file with the umask's mode (often world-readable); the file holds signed
    transactions and API-key hashes. An existing file or folder keeps the mode its owner gave it.
    """
    create_private_folder(path.parent)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, PRIVATE_FILE_MODE)
    except FileExistsError:
        return
    os.close(fd)
    os.chmod(path, PRIVATE_FILE_MODE)
