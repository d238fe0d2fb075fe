"""The API-key store: the `KeyStore` port's contract, run on every adapter, then what the SQLite one adds.

The contract tests take a `store` fixture and nothing else, so a further adapter (PostgreSQL) runs them by
joining `ADAPTERS`; the in-memory stand-in other unit tests use runs them too. The SQLite adapter shares the
journal's file and schema, keeps the file private, keeps the keys of an older journal, never takes the
journal's relay lock, and, opened without `create` on a file that does not exist yet, makes none and takes
the first key made once it does.
"""

from __future__ import annotations

import sqlite3
import stat
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import pytest

from relayer.domain import apikeys
from relayer.domain.apikeys import Scope
from relayer.errors import ConfigurationError
from relayer.faces.cli.main import main
from relayer.stores.journal import SqliteJournal
from relayer.stores.keys import KeyStore, SqliteKeyStore
from relayer.stores.relay_lock import RELAY_LOCK_SUFFIX
from relayer.stores.sqlite import MIGRATIONS, SCHEMA_VERSION
from tests.relay.test_relay_lock import held_elsewhere
from tests.unit.test_create_key import MemoryStore

ACCOUNT = "0xABaBaBaBABabABabAbAbABAbABabababaBaBABaB"

ADAPTERS: dict[str, Callable[[Path], KeyStore]] = {
    "sqlite": lambda folder: SqliteKeyStore(folder / "journal.sqlite3"),
    "memory": lambda folder: MemoryStore(),
}
"""Each `KeyStore` implementation, made empty in a test's own folder."""


@pytest.fixture(params=sorted(ADAPTERS))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KeyStore]:
    made = ADAPTERS[request.param](tmp_path)
    try:
        yield made
    finally:
        made.close()


def make(
    store: KeyStore, scopes: str = "read,trade", label: str = "", now: int = 1
) -> tuple[str, apikeys.ApiKey]:
    return apikeys.create_key(store, account=ACCOUNT, scopes=scopes, label=label, now=now)


# --- the port's contract ------------------------------------------------------------------------------------


def test_an_empty_store_knows_no_key(store: KeyStore) -> None:
    assert store.api_keys() == []
    assert store.api_key_by_hash(apikeys.hash_key("vrk_anything")) is None


def test_a_key_is_found_by_its_hash_and_by_nothing_else(store: KeyStore) -> None:
    key, record = make(store, label="bot", now=7)

    assert store.api_key_by_hash(apikeys.hash_key(key)) == record
    assert (record.label, record.account, record.created_at) == ("bot", ACCOUNT, 7)
    assert record.scopes == {Scope.READ, Scope.TRADE}
    assert (record.last_used_at, record.revoked_at) == (None, None)
    assert record.key_hash == apikeys.hash_key(key)
    assert record.prefix == key[: apikeys.DISPLAY_PREFIX_CHARS]
    assert store.api_key_by_hash(key) is None  # the key itself is not what is stored
    assert store.api_key_by_hash(apikeys.hash_key(key + "x")) is None


def test_ids_count_up_and_keys_are_listed_by_id(store: KeyStore) -> None:
    records = [make(store, scopes, label=scopes)[1] for scopes in ("read", "trade", "read,trade")]

    assert [record.key_id for record in records] == sorted({record.key_id for record in records})
    assert records[0].key_id > 0
    assert store.api_keys() == records
    assert [record.scopes for record in records] == [{Scope.READ}, {Scope.TRADE}, {Scope.READ, Scope.TRADE}]


def test_touch_notes_the_last_use_of_that_key_only(store: KeyStore) -> None:
    key, record = make(store)
    other, _ = make(store)

    store.touch_api_key(record.key_id, 100)
    store.touch_api_key(record.key_id, 160)

    found = store.api_key_by_hash(apikeys.hash_key(key))
    assert found is not None
    assert found.last_used_at == 160
    untouched = store.api_key_by_hash(apikeys.hash_key(other))
    assert untouched is not None
    assert untouched.last_used_at is None


def test_a_key_is_revoked_once_and_still_found_as_revoked(store: KeyStore) -> None:
    key, record = make(store)

    assert store.revoke_api_key(record.key_id, 5) is True
    assert store.revoke_api_key(record.key_id, 6) is False
    assert store.revoke_api_key(record.key_id + 1, 6) is False  # no such key

    found = store.api_key_by_hash(apikeys.hash_key(key))
    assert found is not None
    assert (found.revoked_at, found.active) == (5, False)
    assert [k.revoked_at for k in store.api_keys()] == [5]


def test_revoke_by_label_retires_only_active_keys_with_those_labels(store: KeyStore) -> None:
    records = [
        make(store, label=label)[1]
        for label in ("embedded-demo", "embedded-demo-read", "bot", "embedded-demo")
    ]
    store.revoke_api_key(records[3].key_id, 2)

    assert store.revoke_api_keys_labelled(["embedded-demo", "embedded-demo-read"], 3) == 2
    assert store.revoke_api_keys_labelled([], 3) == 0

    revoked_at = [key.revoked_at for key in store.api_keys()]
    assert revoked_at == [3, 3, None, 2]  # the last keeps its first revocation


# --- the SQLite adapter -------------------------------------------------------------------------------------


def test_keys_live_in_the_journal_file_and_its_one_schema(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    with closing(SqliteKeyStore(path)) as keys:
        key, record = make(keys)

    journal = SqliteJournal(path)
    assert journal.schema_version == SCHEMA_VERSION
    assert journal.all() == []
    journal.close()
    with closing(SqliteKeyStore(path)) as again:  # another connection: what was written is there
        assert again.api_key_by_hash(apikeys.hash_key(key)) == record


def test_a_new_file_is_private_and_no_relay_lock_is_taken(tmp_path: Path) -> None:
    path = tmp_path / ".relayer" / "journal.sqlite3"

    with closing(SqliteKeyStore(path)) as keys:
        make(keys)
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            assert stat.S_IMODE(file.stat().st_mode) == 0o600, file

    assert not path.with_name(path.name + RELAY_LOCK_SUFFIX).exists()


def test_a_version_2_journal_keeps_its_keys(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        for version, statements in MIGRATIONS:
            if version <= 2:
                for statement in statements:
                    conn.execute(statement)
        conn.execute("PRAGMA user_version = 2")
        conn.execute(
            "INSERT INTO api_keys (key_hash, prefix, label, account, scopes, created_at)"
            " VALUES (?, 'vrk_old', 'old', ?, 'read', 1)",
            (apikeys.hash_key("vrk_old"), ACCOUNT),
        )

    with closing(SqliteKeyStore(path)) as keys:
        found = keys.api_key_by_hash(apikeys.hash_key("vrk_old"))

    assert found is not None
    assert found.label == "old"
    assert found.scopes == {Scope.READ}
    journal = SqliteJournal(path)
    assert journal.schema_version == SCHEMA_VERSION
    journal.close()


def test_keys_are_made_and_read_while_another_process_relays_through_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "journal.sqlite3"
    SqliteJournal(path).close()

    with held_elsewhere(path):
        with pytest.raises(ConfigurationError, match="is relaying through the journal"):
            SqliteJournal(path, relaying=True)  # the lock is really held
        assert main(["keys", "create", "--account", ACCOUNT, "--scopes", "read", "--journal", str(path)]) == 0
        key = capsys.readouterr().out.splitlines()[0]
        with closing(SqliteKeyStore(path)) as keys:
            (record,) = keys.api_keys()
            keys.touch_api_key(record.key_id, 9)
        assert main(["keys", "revoke", str(record.key_id), "--journal", str(path)]) == 0

    with closing(SqliteKeyStore(path)) as keys:
        found = keys.api_key_by_hash(apikeys.hash_key(key))
    assert found is not None
    assert (found.last_used_at, found.active) == (9, False)


def test_a_store_opened_before_its_file_exists_makes_none_and_takes_the_first_key(tmp_path: Path) -> None:
    path = tmp_path / ".relayer" / "journal.sqlite3"
    server = SqliteKeyStore(path, create=False)

    assert server.api_keys() == []
    assert server.api_key_by_hash(apikeys.hash_key("vrk_x")) is None
    with pytest.raises(ConfigurationError, match="no relay journal at"):
        server.revoke_api_key(1, 2)
    assert not path.parent.exists()

    with closing(SqliteKeyStore(path)) as cli:  # `relayer keys create` makes the file
        key, record = make(cli)

    assert server.api_key_by_hash(apikeys.hash_key(key)) == record
    server.close()


def test_a_file_that_cannot_be_opened_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot open the API-key store"):
        SqliteKeyStore(tmp_path)  # a directory
    with pytest.raises(ConfigurationError, match="cannot open the API-key store"):
        SqliteKeyStore(tmp_path, create=False)  # it exists, so it is opened at once
