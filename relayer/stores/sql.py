"""The SQL database port every store adapter runs on, so one journal and one key store serve both databases.

`Database` is what the stores need of a database and nothing more: statements with `?` parameters, run
one at a time (`session`) or together in one transaction (`transaction`), rows read by column name, the
uniqueness rule an insert broke (`UniqueViolation`), and the few spellings that differ (`Dialect`). Two
adapters implement it: `relayer.stores.sqlite.SqliteDatabase` (one file, the embedded default) and
`relayer.stores.postgres.PostgresDatabase` (psycopg 3 and its pool, for several instances on one database).
The schema and its versions are `relayer.stores.migrations`, the same versions for both.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

Row = Mapping[str, Any]
"""A result row, read by column name (`row["nonce"]`)."""


class UniqueViolation(Exception):  # noqa: N818 - a signal to the store, not an error a client sees
    """An insert or update broke a uniqueness rule; `constraint` names it in the schema's words
    (`records_signer_nonce`, `records_live_request`, ...: `relayer.stores.migrations`)."""

    def __init__(self, constraint: str) -> None:
        super().__init__(constraint)
        self.constraint = constraint


class Session(Protocol):
    """Statements on one connection: inside `Database.transaction()` they commit together."""

    def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        """Run a statement; the number of rows it changed.

        Raises:
            UniqueViolation: it broke a uniqueness rule.
        """
        ...

    def rows(self, sql: str, args: Sequence[Any] = ()) -> list[Row]: ...

    def row(self, sql: str, args: Sequence[Any] = ()) -> Row | None:
        """The first row (None: none)."""
        ...


@dataclass(frozen=True)
class Dialect:
    """What the two databases spell differently, as SQL fragments the stores splice in."""

    name: str
    now_s: str
    """The database's own clock in unix seconds (a float): leases compare times on one clock, whichever
    instance asks."""
    skip_locked: str
    """Appended to a `SELECT` that claims rows (`FOR UPDATE SKIP LOCKED`; empty where one writer at a time
    holds the whole database, as in SQLite)."""
    shared_by_processes: bool
    """Several processes may work through the database at once (PostgreSQL); SQLite's relay lock admits
    one."""
    settled_txn: str
    """Notices (`relayer.domain.notices.Cursor`) whose `txn` is below this are final: no transaction that
    could still commit one is running (PostgreSQL: the oldest running transaction; SQLite: 1, above the 0
    every notice carries)."""


class Database(ABC):
    """One database: connections, transactions and its dialect. Safe to share between threads."""

    dialect: Dialect
    where: str
    """The database as messages name it (a file path, or a URL without its password)."""

    @abstractmethod
    def session(self) -> AbstractContextManager[Session]:
        """A connection for statements that each commit on their own."""

    @abstractmethod
    def transaction(self) -> AbstractContextManager[Session]:
        """One write transaction: everything run through the session commits together, or nothing does."""

    @abstractmethod
    def close(self) -> None: ...

    @property
    @abstractmethod
    def schema_version(self) -> int:
        """The schema version the database is at (`relayer.stores.migrations`)."""

    def rows(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        with self.session() as session:
            return session.rows(sql, args)

    def row(self, sql: str, args: Sequence[Any] = ()) -> Row | None:
        with self.session() as session:
            return session.row(sql, args)

    def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        with self.session() as session:
            return session.execute(sql, args)


def marks(count: int) -> str:
    """`?,?,...` for an `IN (...)` of `count` values."""
    return ",".join("?" * count)
