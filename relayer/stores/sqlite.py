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
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from relayer.errors import ConfigurationError
from relayer.stores import migrations
from relayer.stores.sql import Database, Dialect, Row, UniqueViolation

SCHEMA_VERSION = migrations.SCHEMA_VERSION
"""Stored in SQLite's `PRAGMA user_version`."""

MEMORY = ":memory:"
"""SQLite's private, throwaway in-memory database: every connection to it is a database of its own."""

PRIVATE_DIR_MODE = 0o700
"""A journal folder the relayer creates (`.relayer/`): only its owner may list or enter it."""

PRIVATE_FILE_MODE = 0o600
"""A journal file the relayer creates: only its owner may read it (SQLite gives its -wal and -shm files the
same mode)."""

MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = tuple(
    (migration.version, migration.sqlite) for migration in migrations.MIGRATIONS
)
"""(version, statements) in SQLite's spelling (`relayer.stores.migrations`), in order."""


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
        migrate(conn, path)  # foreign keys still off: a migration may rebuild a table others reference
    except BaseException:
        conn.close()
        raise
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def migrate(conn: sqlite3.Connection, where: str = MEMORY) -> None:
    """Run every migration past the file's `user_version`, all in one write transaction.

    `BEGIN IMMEDIATE` first: two connections opening a new file at once (a journal and a key store, or two
    processes) migrate one after the other, and the second finds nothing left to do.

    Raises:
        ConfigurationError: the file is at a newer version than this relayer knows (nothing is changed).
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        current = schema_version(conn)
        migrations.check_version(current, where)
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


SQLITE = Dialect(
    name="sqlite",
    now_s="((julianday('now') - 2440587.5) * 86400.0)",
    skip_locked="",
    shared_by_processes=False,
    settled_txn="1",
)


class SqliteDatabase(Database):
    """`Database` on one SQLite file (`connect`): one connection, shared by this process's threads under a
    lock; write transactions are `BEGIN IMMEDIATE`, so two processes' writers take turns."""

    dialect = SQLITE

    def __init__(self, path: str, *, what: str) -> None:
        """Open (creating when missing, 0600) and migrate the file at `path`.

        Raises:
            ConfigurationError: per `connect`, or the file is at a newer schema than this relayer knows.
        """
        self.path = path
        self.where = path
        self._lock = threading.RLock()
        self._conn = connect(path, what=what)

    @contextmanager
    def session(self) -> Iterator[_SqliteSession]:
        with self._lock:
            yield _SqliteSession(self._conn)

    @contextmanager
    def transaction(self) -> Iterator[_SqliteSession]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield _SqliteSession(self._conn)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @property
    def schema_version(self) -> int:
        with self._lock:
            return schema_version(self._conn)


class _SqliteSession:
    """`relayer.stores.sql.Session` on the file's connection (its caller holds the database's lock)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        try:
            return self._conn.execute(sql, args).rowcount
        except sqlite3.IntegrityError as exc:
            if "UNIQUE" not in str(exc):
                raise
            # SQLite names the columns ("UNIQUE constraint failed: records.chain_id, records.sender, ...")
            raise UniqueViolation(str(exc)) from None

    def rows(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        return self._conn.execute(sql, args).fetchall()

    def row(self, sql: str, args: Sequence[Any] = ()) -> Row | None:
        found: Row | None = self._conn.execute(sql, args).fetchone()
        return found
