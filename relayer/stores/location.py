"""Where the relayer keeps its data, and the stores opened there: the one place that picks the database.

`RELAYER_DATABASE_URL` (a `postgresql://` URL) selects PostgreSQL, shared by any number of instances; without
it, the SQLite file at `RELAYER_RELAY_JOURNAL_PATH` (`.relayer/journal.sqlite3` by default) is the embedded
default and a newcomer needs nothing else. Both hold the same schema (`relayer.stores.migrations`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from relayer.stores import sqlite as store_file
from relayer.stores.journal import SqliteJournal, SqlJournal
from relayer.stores.keys import KeyStore, SqliteKeyStore, SqlKeyStore


@dataclass(frozen=True)
class StoreLocation:
    """The database (`database_url`, PostgreSQL) or else the SQLite file (`journal_path`)."""

    journal_path: Path
    database_url: str | None = None

    @property
    def shared(self) -> bool:
        """Several instances may share it (PostgreSQL)."""
        return self.database_url is not None

    def describe(self) -> str:
        if self.database_url is None:
            return str(self.journal_path)
        from relayer.stores.postgres import display_url

        return display_url(self.database_url)


def open_journal(location: StoreLocation, *, relaying: bool = False, create: bool = True) -> SqlJournal:
    """The relay journal at `location`. SQLite: `relaying` holds the file's relay lock, and a reader
    (`create=False`) refuses a missing file rather than make an empty one. PostgreSQL: migrated on open;
    instances coordinate through leases, not a lock.

    Raises:
        ConfigurationError: it cannot be opened, is at a newer schema than this relayer knows, or (SQLite,
            `relaying`) another process relays through the file.
    """
    if location.database_url is None:
        path = (
            location.journal_path if create else store_file.named_journal(location.journal_path, create=False)
        )
        return SqliteJournal(path, relaying=relaying)
    from relayer.stores.postgres import PostgresDatabase

    return SqlJournal(PostgresDatabase(location.database_url, what="the relay database"))


def open_key_store(location: StoreLocation, *, create: bool) -> KeyStore:
    """The API-key store at `location`. SQLite: without `create`, a missing file is not made (the store opens
    it once it appears); PostgreSQL: the database's `api_keys` table.

    Raises:
        ConfigurationError: it cannot be opened.
    """
    if location.database_url is None:
        return SqliteKeyStore(location.journal_path, create=create)
    from relayer.stores.postgres import PostgresDatabase

    return SqlKeyStore(
        PostgresDatabase(location.database_url, max_connections=4, what="the API-key database")
    )
