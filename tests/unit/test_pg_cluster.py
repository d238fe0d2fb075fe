"""The PostgreSQL test harness: each test gets a fresh, empty database on a cluster of the run's own."""

from __future__ import annotations

import psycopg
import pytest

from tests.pg import PgCluster

USER_TABLES = "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"


@pytest.mark.parametrize("turn", ["first", "second"])
def test_each_test_gets_a_fresh_empty_database(database_url: str, turn: str) -> None:
    """Both turns create the same table: a database shared between tests, or left behind, would refuse it."""
    dbname = database_url.rsplit("/", 1)[1]
    assert dbname.startswith("test_")
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == (dbname,)
        assert conn.execute(USER_TABLES).fetchone() == (0,)
        conn.execute("CREATE TABLE notes (id integer PRIMARY KEY, turn text NOT NULL)")
        conn.execute("INSERT INTO notes VALUES (1, %s)", (turn,))
        assert conn.execute("SELECT turn FROM notes").fetchall() == [(turn,)]


def test_databases_are_separate_and_dropped_with_their_sessions(pg_cluster: PgCluster) -> None:
    first = pg_cluster.create_database("harness_first")
    second = pg_cluster.create_database("harness_second")
    try:
        with psycopg.connect(first) as conn:
            conn.execute("CREATE TABLE only_here (id integer)")
        with psycopg.connect(second) as conn:
            assert conn.execute(USER_TABLES).fetchone() == (0,)
        # A test that leaks a connection must not stall the drop: the drop ends the session instead.
        with psycopg.connect(first) as lingering:
            pg_cluster.drop_database("harness_first")
            with pytest.raises(psycopg.OperationalError):
                lingering.execute("SELECT 1")
    finally:
        pg_cluster.drop_database("harness_first")
        pg_cluster.drop_database("harness_second")
    with psycopg.connect(pg_cluster.url()) as conn:
        left = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'harness_%'").fetchall()
    assert left == []


def test_the_server_is_the_clusters_own_with_test_settings(pg_cluster: PgCluster) -> None:
    """Not the machine's `15 main`: our data directory and port, loopback only, no fsync, room enough."""
    with psycopg.connect(pg_cluster.url()) as conn:
        rows = conn.execute(
            "SELECT name, setting FROM pg_settings WHERE name IN "
            "('data_directory', 'listen_addresses', 'port', 'fsync', 'max_connections')"
        ).fetchall()
    assert dict(rows) == {
        "data_directory": str(pg_cluster.data_dir),
        "listen_addresses": "127.0.0.1",
        "port": str(pg_cluster.port),
        "fsync": "off",
        "max_connections": "200",
    }
