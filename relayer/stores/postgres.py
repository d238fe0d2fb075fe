"""The PostgreSQL adapter of the database port (`relayer.stores.sql.Database`): psycopg 3 and its pool.

Chosen with `RELAYER_DATABASE_URL=postgresql://...`, so that several relayer instances share one journal,
one set of API keys and one set of leases. Every statement runs on a pooled connection in autocommit, or
inside `transaction()` on one connection; the schema is `relayer.stores.migrations`, migrated at open
under a transaction-scoped advisory lock so instances starting together migrate once.

A database that stops answering must not hang an instance: connections time out on connect, the pool on
checkout, and the kernel gives up on unacknowledged data after `tcp_user_timeout`; every such failure
becomes `StoreUnavailableError` (503, retryable), and a statement that failed wrote nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import psycopg
import psycopg.errors
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from relayer.errors import ConfigurationError, StoreUnavailableError
from relayer.stores import migrations
from relayer.stores.sql import Database, Dialect, Row, UniqueViolation

POSTGRES = Dialect(
    name="postgres",
    now_s="EXTRACT(EPOCH FROM clock_timestamp())::float8",
    skip_locked=" FOR UPDATE SKIP LOCKED",
    shared_by_processes=True,
    settled_txn="pg_snapshot_xmin(pg_current_snapshot())::text::bigint",
)

_MIGRATION_LOCK = 0x7661756C74  # "vault": the advisory lock id migrations take, one process at a time

CONNECT_TIMEOUT_S = 5
POOL_TIMEOUT_S = 3.0
"""How long a statement waits for a pooled connection before the database counts as unavailable."""
TCP_USER_TIMEOUT_MS = 3_000
"""A connection whose sent data goes unacknowledged this long (a network cut) fails instead of hanging."""
BREAKER_S = 2.0
"""After a statement found the database away, the next ones fail at once for this long instead of each
waiting out the timeouts (the store is called on the event loop: one wait stalls every request)."""


def display_url(url: str) -> str:
    """The URL without its password (it is a secret, like the node URL)."""
    parts = urlsplit(url)
    user = f"{parts.username}@" if parts.username else ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{user}{parts.hostname or ''}{port}{parts.path}"


@lru_cache(maxsize=512)
def _placeholders(sql: str) -> str:
    """The port's `?` parameters in psycopg's spelling (`%s`; a literal `%` doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")


class PostgresDatabase(Database):
    """`Database` on a PostgreSQL database, through a connection pool; safe to share between threads."""

    dialect = POSTGRES

    def __init__(self, url: str, *, max_connections: int = 8, what: str = "the database") -> None:
        """Connect (waiting up to the connect timeout) and migrate.

        Raises:
            ConfigurationError: the URL is not PostgreSQL's, the database cannot be reached or refuses the
                login, or it is at a newer schema than this relayer knows.
        """
        if urlsplit(url).scheme not in {"postgresql", "postgres"}:
            raise ConfigurationError("the database URL must start with postgresql://")
        self.where = display_url(url)
        self._url = url
        self._down_until = 0.0
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=max_connections,
            kwargs={
                "autocommit": True,
                "row_factory": dict_row,
                "connect_timeout": CONNECT_TIMEOUT_S,
                "tcp_user_timeout": TCP_USER_TIMEOUT_MS,
                "keepalives": 1,
                "keepalives_idle": 5,
                "keepalives_interval": 2,
                "keepalives_count": 2,
                "application_name": "vault-relayer",
            },
            check=ConnectionPool.check_connection,
            timeout=POOL_TIMEOUT_S,
            open=False,
            name="relayer",
        )
        try:
            # One plain connection first: a wrong URL, password or host fails at once and says why, where the
            # pool would retry in the background until its timeout.
            psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S).close()
            self._pool.open(wait=True, timeout=CONNECT_TIMEOUT_S * 2)
            self._migrate()
        except (psycopg.Error, PoolTimeout) as exc:
            self._pool.close()
            raise ConfigurationError(
                f"cannot open {what} {self.where}: {type(exc).__name__}: {str(exc).strip()[:300]}",
                database=self.where,
            ) from None
        except BaseException:
            self._pool.close()
            raise

    def _migrate(self) -> None:
        with self._pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            conn.execute("CREATE TABLE IF NOT EXISTS relayer_schema (version BIGINT NOT NULL)")
            found: Any = conn.execute("SELECT version FROM relayer_schema").fetchone()
            current = 0 if found is None else int(found["version"])
            migrations.check_version(current, self.where)
            for migration in migrations.MIGRATIONS:
                if migration.version <= current:
                    continue
                for statement in migration.postgres:
                    conn.execute(statement)
            if found is None:
                conn.execute("INSERT INTO relayer_schema (version) VALUES (%s)", (migrations.SCHEMA_VERSION,))
            elif current < migrations.SCHEMA_VERSION:
                conn.execute("UPDATE relayer_schema SET version = %s", (migrations.SCHEMA_VERSION,))

    @property
    def schema_version(self) -> int:
        found = self.row("SELECT version FROM relayer_schema")
        return 0 if found is None else int(found["version"])

    @contextmanager
    def session(self) -> Iterator[_PostgresSession]:
        with self._available(), self._pool.connection() as conn:
            yield _PostgresSession(conn)

    @contextmanager
    def transaction(self) -> Iterator[_PostgresSession]:
        with self._available(), self._pool.connection() as conn, conn.transaction():
            yield _PostgresSession(conn)

    @contextmanager
    def _available(self) -> Iterator[None]:
        """Fail at once while the breaker is open (`BREAKER_S` after the database was last found away);
        else run the statements, opening the breaker when they find the database away."""
        if time.monotonic() < self._down_until:
            raise _unavailable(self.where, "the database was away moments ago; not asked again yet")
        try:
            with _unavailable_as_error(self.where):
                yield
        except StoreUnavailableError:
            self._down_until = time.monotonic() + BREAKER_S
            raise

    def close(self) -> None:
        self._pool.close()

    def listen(self, channel: str) -> psycopg.Connection[Any]:
        """A connection of its own (outside the pool) that LISTENs on `channel`; the caller reads its
        `notifies()` (in a thread: it blocks) and closes it."""
        conn = psycopg.connect(
            self._url,
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT_S,
            tcp_user_timeout=TCP_USER_TIMEOUT_MS,
            keepalives=1,
            keepalives_idle=5,
            keepalives_interval=2,
            keepalives_count=2,
        )
        conn.execute(f"LISTEN {channel}")
        return conn


@contextmanager
def _unavailable_as_error(where: str) -> Iterator[None]:
    try:
        yield
    except (psycopg.OperationalError, PoolTimeout) as exc:
        if isinstance(exc, psycopg.errors.QueryCanceled | psycopg.errors.LockNotAvailable):
            raise
        raise _unavailable(where, f"{type(exc).__name__}: {str(exc).strip()[:200]}") from None


def _unavailable(where: str, reason: str) -> StoreUnavailableError:
    return StoreUnavailableError(
        "the database did not answer: send the request again with the same Idempotency-Key (a write whose"
        " acknowledgement was lost is then found by its key, never made twice)",
        database=where,
        reason=reason,
    )


class _PostgresSession:
    """`relayer.stores.sql.Session` on one pooled connection."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        try:
            return self._conn.execute(_placeholders(sql), args).rowcount
        except psycopg.errors.UniqueViolation as exc:
            raise UniqueViolation(exc.diag.constraint_name or str(exc)) from None

    def rows(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        return self._conn.execute(_placeholders(sql), args).fetchall()

    def row(self, sql: str, args: Sequence[Any] = ()) -> Row | None:
        found: Row | None = self._conn.execute(_placeholders(sql), args).fetchone()
        return found
