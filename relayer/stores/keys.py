"""The API-key store: the port the services use (`KeyStore`) and its adapter on either database.

A store keeps what `relayer.domain.apikeys` hands it (a key's SHA-256, never the key) and answers by hash;
every rule about keys (making, hashing, the constant-time check, scopes, how often `last_used_at` is written)
stays in the core. `SqlKeyStore` runs the same SQL on SQLite or PostgreSQL (`relayer.stores.sql`).

The SQLite adapter owns the `api_keys` table of the journal file (`relayer.stores.sqlite`) through its own
connection, beside the relay journal but never through it: keys are read and made without a relayer signer,
without the relay, and without the journal's relay lock, so `relayer keys create` works while `relayer serve`
relays through the same file, and the server sees the new key at once.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from relayer.domain.apikeys import ApiKey, Scope
from relayer.errors import ConfigurationError
from relayer.stores.sql import Database, Row, marks
from relayer.stores.sqlite import MEMORY, SqliteDatabase, named_journal

_WHAT = "the API-key store"
"""How errors name the file when the key store opens it."""


class KeyStore(Protocol):
    """Where API keys are kept: what `apikeys.create_key`, `TradingService.authenticate`, `relayer keys` and
    the embedded demo need, and nothing else.

    Ids are positive integers in creation order. Times are unix seconds given by the caller (`now`), so the
    store never reads a clock.
    """

    def insert_api_key(
        self,
        *,
        key_hash: str,
        prefix: str,
        label: str,
        account: str,
        scopes: frozenset[Scope],
        now: int,
        expires_at: int | None = None,
        markets: frozenset[str] | None = None,
        daily_spend_wei: int | None = None,
    ) -> ApiKey:
        """Store a new key's hash (never the key) and its limits, already checked by `apikeys.create_key`
        (None: no expiry, every market, the policy's per-key budget), and return the stored record."""
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


class SqlKeyStore:
    """`KeyStore` on the `api_keys` table of a `Database` (either adapter); safe to share between threads."""

    def __init__(self, database: Database | None) -> None:
        self._db = database

    def _database(self) -> Database | None:
        """The database, if there is one yet (None: a SQLite file that does not exist yet)."""
        return self._db

    def _writer(self) -> Database:
        database = self._database()
        if database is None:
            raise ConfigurationError("no relay journal yet: create a key with `relayer keys create` first")
        return database

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def insert_api_key(
        self,
        *,
        key_hash: str,
        prefix: str,
        label: str,
        account: str,
        scopes: frozenset[Scope],
        now: int,
        expires_at: int | None = None,
        markets: frozenset[str] | None = None,
        daily_spend_wei: int | None = None,
    ) -> ApiKey:
        database = self._writer()
        with database.transaction() as session:
            session.execute(
                "INSERT INTO api_keys (key_hash, prefix, label, account, scopes, created_at, expires_at,"
                " markets, daily_spend_wei) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key_hash,
                    prefix,
                    label,
                    account,
                    ",".join(sorted(scopes)),
                    now,
                    expires_at,
                    None if markets is None else ",".join(sorted(markets)),
                    None if daily_spend_wei is None else str(daily_spend_wei),
                ),
            )
            row = session.row("SELECT * FROM api_keys WHERE key_hash = ?", (key_hash,))
        assert row is not None
        return _api_key(row)

    def api_key_by_hash(self, key_hash: str) -> ApiKey | None:
        database = self._database()
        row = (
            None
            if database is None
            else database.row("SELECT * FROM api_keys WHERE key_hash = ?", (key_hash,))
        )
        return None if row is None else _api_key(row)

    def api_keys(self) -> list[ApiKey]:
        database = self._database()
        rows = [] if database is None else database.rows("SELECT * FROM api_keys ORDER BY id")
        return [_api_key(row) for row in rows]

    def touch_api_key(self, key_id: int, now: int) -> None:
        self._writer().execute("UPDATE api_keys SET last_used_at = ? WHERE id = ?", (now, key_id))

    def revoke_api_key(self, key_id: int, now: int) -> bool:
        changed = self._writer().execute(
            "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (now, key_id)
        )
        return changed == 1

    def revoke_api_keys_labelled(self, labels: Iterable[str], now: int) -> int:
        names = list(labels)
        if not names:
            return 0
        return self._writer().execute(
            f"UPDATE api_keys SET revoked_at = ? WHERE revoked_at IS NULL AND label IN ({marks(len(names))})",  # noqa: S608
            [now, *names],
        )


class SqliteKeyStore(SqlKeyStore):
    """`KeyStore` on the `api_keys` table of a journal file.

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
        self._closed = False
        opened = create or self.path == MEMORY or Path(self.path).exists()
        super().__init__(SqliteDatabase(self.path, what=_WHAT) if opened else None)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            super().close()

    def _database(self) -> Database | None:
        with self._lock:
            if self._closed:
                raise ValueError(f"the API-key store on {self.path} is closed")
            if self._db is None and Path(self.path).exists():
                self._db = SqliteDatabase(self.path, what=_WHAT)
            return self._db

    def _writer(self) -> Database:
        database = self._database()
        if database is None:
            raise ConfigurationError(
                f"no relay journal at {self.path}: create a key with `relayer keys create` first",
                journal=self.path,
            )
        return database


def open_key_store(path: Path, *, create: bool) -> SqliteKeyStore:
    """The key store of the journal an operator command names (`relayer keys`; `relayer.config.journal_path`).
    Only `create=True` (`keys create`) may start a new file.

    Raises:
        ConfigurationError: no journal at the path and `create` is False, or it cannot be opened.
    """
    return SqliteKeyStore(named_journal(path, create=create))


def _api_key(row: Row) -> ApiKey:
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
        expires_at=None if row["expires_at"] is None else int(row["expires_at"]),
        # NULL is every market; a stored empty list (never written by `create_key`) is none, failing closed.
        markets=None if row["markets"] is None else frozenset(m for m in row["markets"].split(",") if m),
        daily_spend_wei=None if row["daily_spend_wei"] is None else int(row["daily_spend_wei"]),
    )
