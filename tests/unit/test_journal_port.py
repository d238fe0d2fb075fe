"""The journal port: the status rule is the port's, checked before any store is asked."""

from __future__ import annotations

from pathlib import Path

import pytest

from relayer.domain.status import TxStatus
from relayer.stores.journal import SqliteJournal
from relayer.stores.journal_port import Journal, StatusChange
from tests.relay.records import queued_record


class CountingJournal(SqliteJournal):
    """The SQLite adapter, counting how often the store's own compare-and-set is reached."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.store_calls = 0

    def _compare_and_set(self, record_id: str, change: StatusChange) -> bool:
        self.store_calls += 1
        return super()._compare_and_set(record_id, change)


def test_the_port_cannot_be_built_without_a_store() -> None:
    with pytest.raises(TypeError, match="abstract"):
        Journal()  # type: ignore[abstract]


def test_an_illegal_change_is_refused_before_the_store_is_asked(tmp_path: Path) -> None:
    journal = CountingJournal(tmp_path / "journal.sqlite3")
    with journal.write() as writer:
        writer.insert(queued_record("a", 0))
    assert isinstance(journal, Journal)
    with pytest.raises(ValueError, match="illegal relay status change"):
        journal.transition("a", TxStatus.QUEUED, TxStatus.CONFIRMED, now=1.0)
    assert journal.store_calls == 0
    assert journal.transition("a", TxStatus.QUEUED, TxStatus.SUBMITTED, now=2.0)
    assert not journal.transition("a", TxStatus.QUEUED, TxStatus.SUBMITTED, now=3.0)  # moved on: a no-op
    assert journal.store_calls == 2
    record = journal.get("a")
    assert record is not None
    assert record.status is TxStatus.SUBMITTED
    journal.close()
