"""Every relay record keeps the account it acted for: written and read back by the journal, served by
`to_dict`, and NULL (None) in records a journal from before schema 4 already held, which migrate in place."""

from __future__ import annotations

import dataclasses
import sqlite3
from contextlib import closing
from pathlib import Path

from relayer.stores.journal import SqliteJournal
from relayer.stores.sqlite import MIGRATIONS, SCHEMA_VERSION
from tests.relay.records import queued_record

ACCOUNT = "0x" + "ac" * 20
PREVIOUS_VERSION = 3  # the version before `records.account`


def test_the_schema_versions_run_in_order_to_the_latest() -> None:
    assert SCHEMA_VERSION == 8
    assert [version for version, _ in MIGRATIONS] == [1, 2, 3, 4, 5, 6, 7, 8]


def test_a_record_keeps_its_account(tmp_path: Path) -> None:
    journal = SqliteJournal(tmp_path / "journal.sqlite3")
    try:
        with journal.write() as writer:
            writer.insert(dataclasses.replace(queued_record("a1", 0, owner=ACCOUNT), account=ACCOUNT))
            writer.insert(queued_record("a2", 1))

        found = journal.get("a1")
        assert found is not None
        assert found.account == ACCOUNT
        assert found.to_dict()["account"] == ACCOUNT
        unset = journal.get("a2")
        assert unset is not None
        assert unset.account is None
        assert unset.to_dict()["account"] is None
        assert {record.id: record.account for record in journal.all()} == {"a1": ACCOUNT, "a2": None}
    finally:
        journal.close()


def test_a_journal_of_the_previous_version_migrates_in_place_and_keeps_its_records(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        for version, statements in MIGRATIONS:
            if version <= PREVIOUS_VERSION:
                for statement in statements:
                    conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {PREVIOUS_VERSION}")
        conn.execute(
            "INSERT INTO records (id, kind, status, idempotency_key, request_hash, sender, nonce, chain_id,"
            " to_address, data, value_wei, gas_limit, request_owner, request_nonce, deadline, created_at,"
            " updated_at) VALUES ('old', 'close', 'queued', 'k', 'h', ?, 0, 31337, ?, x'01', '0', 100000,"
            " ?, '7', 2000000000, 1.0, 1.0)",
            ("0x" + "5a" * 20, "0x" + "5a" * 20, ACCOUNT),
        )
        conn.execute(
            "INSERT INTO attempts (tx_hash, record_id, seq, kind, raw_tx, max_fee_per_gas_wei,"
            " max_priority_fee_per_gas_wei, created_at) VALUES ('0xold', 'old', 0, 'original', x'00', '10',"
            " '1', 1.0)"
        )
        columns = [row[1] for row in conn.execute("PRAGMA table_info(records)")]
        assert "account" not in columns

    journal = SqliteJournal(path)
    try:
        assert journal.schema_version == SCHEMA_VERSION
        old = journal.get("old")
        assert old is not None
        assert old.account is None
        assert old.to_dict()["account"] is None
        assert old.request is not None
        assert (old.request.owner, old.request.nonce) == (ACCOUNT, 7)
        assert old.idempotency_key == "k"
        assert old.hashes == ["0xold"]
        assert journal.by_hash("0xold") == old

        with journal.write() as writer:  # the migrated table takes new records with an account
            writer.insert(dataclasses.replace(queued_record("new", 1), account=ACCOUNT))
        new = journal.get("new")
        assert new is not None
        assert new.account == ACCOUNT
    finally:
        journal.close()

    with closing(sqlite3.connect(path)) as conn:  # migrated once: reopening has nothing left to do
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
