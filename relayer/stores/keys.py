"""The API-key store: the port the services use (`KeyStore`) and its SQLite adapter (`SqliteKeyStore`).

A store keeps what `relayer.domain.apikeys` hands it (a key's SHA-256, never the key) and answers by hash;
every rule about keys (making, hashing, the constant-time check, scopes, how often `last_used_at` is written)
stays in the core, so a second adapter (PostgreSQL) only translates these operations into its SQL.

The SQLite adapter owns the `api_keys` table of the journal file (`relayer.stores.sqlite`) through its own
connection, beside the relay journal but never through it: keys are read and made without a relayer signer,
without the relay, and without the journal's relay lock, so `relayer keys create` works while `relayer serve`
relays through the same file, and the server sees the new key at once.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from relayer.domain.apikeys import ApiKey, Scope
from relayer.errors import ConfigurationError
from relayer.stores.sqlite import MEMORY, connect, named_journal

_WHAT = "the API-key store"
"""How errors name the file when the key store opens it."""


class KeyStore(Protocol):
    """Where API keys are kept: what `apikeys.create_key`, `TradingService.authenticate`, `relayer keys` and
    the embedded demo need, and nothing else.

    Ids are positive integers in creation order. Times are unix seconds given by the caller (`now`), so the
    store never reads a clock.
    """

    def insert_api_key(
        self, *, key_hash: str, prefix: str, label: str, account: str, scopes: frozenset[Scope], now: int
    ) -> ApiKey:
        """Store a new key's hash (never the key) and return the stored record."""
        ...

    def api_key_by_hash(self, key_hash: str) -> ApiKey | None:
        """The key stored under this SHA-256 hex, revoked or not (None: no such key)."""
        ...

    def api_keys(self) -> list[ApiKey]:
        """Every key, revoked ones included, by id."""
        ...

    def touch_api_key(self, key_id: int, now: int) -> None:
        """Note that the key was used at `now` (the caller decides how often: `LAST_USED_RESOLUTION_S`)."""
        ...

    def revoke_api_key(self, key_id: int, now: int) -> bool:
        """Revoke a key; False when there is no such key or it was already revoked."""
        ...

    def revoke_api_keys_labelled(self, labels: Iterable[str], now: int) -> int:
        """Revoke every active key with one of `labels`; returns how many (`relayer serve` retires the
        previous run's demo keys, whose labels it reserves, before printing new ones)."""
        ...

    def close(self) -> None:
        """Let go of the store's connection; the store is not used afterwards."""
        ...


class SqliteKeyStore:
    """`KeyStore` on the `api_keys` table of a journal file; safe to share between threads of one process.

    Opening the file creates it when `create` (0600 in a folder made 0700, schema migrated, the same file a
    relay journal would make). Without `create` a missing file is not made: until it appears (`relayer keys
    create` or a relaying start makes it), the store holds no keys and refuses writes; it opens the file on
    the first use after that. So a server without relayer signers never writes a file of its own, and still
    takes the first key made while it runs.
    """

    def __init__(self, path: Path | str, *, create: bool = True) -> None:
        """Open the store on the file at `path`.

        Raises:
            ConfigurationError: the file or its folder cannot be created or opened.
        """
        self.path = str(path)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        if create or self.path == MEMORY or Path(self.path).exists():
            self._conn = connect(self.path, what=_WHAT)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _connection(self) -> sqlite3.Connection | None:
        """The open connection, opening a file that appeared since (None: still no file). Under `_lock`."""
        if self._closed:
            raise ValueError(f"the API-key store on {self.path} is closed")
        if self._conn is None and Path(self.path).exists():
            self._conn = connect(self.path, what=_WHAT)
        return self._conn

    def _writer(self) -> sqlite3.Connection:
        conn = self._connection()
        if conn is None:
            raise ConfigurationError(
                f"no relay journal at {self.path}: create a key with `relayer keys create` first",
                journal=self.path,
            )
        return conn

    def insert_api_key(
        self, *, key_hash: str, prefix: str, label: str, account: str, scopes: frozenset[Scope], now: int
    ) -> ApiKey:
        with self._lock:
            conn = self._writer()
            cursor = conn.execute(
                "INSERT INTO api_keys (key_hash, prefix, label, account, scopes, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (key_hash, prefix, label, account, ",".join(sorted(scopes)), now),
            )
            row = conn.execute("SELECT * FROM api_keys WHERE id = ?", (cursor.lastrowid,)).fetchone()
        return _api_key(row)

    def api_key_by_hash(self, key_hash: str) -> ApiKey | None:
        with self._lock:
            conn = self._connection()
            row = (
                None
                if conn is None
                else conn.execute("SELECT * FROM api_keys WHERE key_hash = ?", (key_hash,)).fetchone()
            )
        return None if row is None else _api_key(row)

    def api_keys(self) -> list[ApiKey]:
        with self._lock:
            conn = self._connection()
            rows = [] if conn is None else conn.execute("SELECT * FROM api_keys ORDER BY id").fetchall()
        return [_api_key(row) for row in rows]

    def touch_api_key(self, key_id: int, now: int) -> None:
        with self._lock:
            self._writer().execute("UPDATE api_keys SET last_used_at = ? WHERE id = ?", (now, key_id))

    def revoke_api_key(self, key_id: int, now: int) -> bool:
        with self._lock:
            cursor = self._writer().execute(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (now, key_id)
            )
            return cursor.rowcount == 1

    def revoke_api_keys_labelled(self, labels: Iterable[str], now: int) -> int:
        names = list(labels)
        if not names:
            return 0
        marks = ",".join("?" * len(names))
        with self._lock:
            cursor = self._writer().execute(
                f"UPDATE api_keys SET revoked_at = ? WHERE revoked_at IS NULL AND label IN ({marks})",  # noqa: S608
                [now, *names],
            )
            return cursor.rowcount


def open_key_store(path: Path, *, create: bool) -> SqliteKeyStore:
    """The key store of the journal an operator command names (`relayer keys`; `relayer.config.journal_path`).
    Only `create=True` (`keys create`) may start a new file.

    Raises:
        ConfigurationError: no journal at the path and `create` is False, or it cannot be opened.
    """
    return SqliteKeyStore(named_journal(path, create=create))


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
