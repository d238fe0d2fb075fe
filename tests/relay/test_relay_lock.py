"""One relaying process per journal: the journal's relay lock (`lock_for_relaying`).

Each process's signer locks are its own, so two processes relaying through one journal would number the same
nonces and resend each other's records. The lock is an OS `flock` on `<journal>.lock`: a second process is
refused with `configuration_error` naming the file; readers take nothing; the OS drops it when its holder
ends, however it ends. Other processes here are real subprocesses: `flock` is per open file, so only another
process shows what another process sees.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from relayer.errors import ConfigurationError
from relayer.stores.journal import SqliteJournal, open_journal
from relayer.stores.relay_lock import lock_for_relaying
from tests.conftest import ROOT
from tests.relay.records import queued_record
from tests.relay.test_journal_binding import REAL

HOLD = """
import sys
from relayer.stores.journal import SqliteJournal
journal = SqliteJournal(sys.argv[1], relaying=True)
print("holding", flush=True)
sys.stdin.read()  # until the test closes stdin (or kills this process)
journal.close()
"""

TRY = """
import sys
from relayer.errors import ConfigurationError
from relayer.stores.relay_lock import lock_for_relaying
try:
    lock_for_relaying(sys.argv[1]).release()
except ConfigurationError as error:
    print(error.code, error.message)
    sys.exit(1)
print("took it")
"""


@contextmanager
def held_elsewhere(path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process relaying through the journal at `path` until the block ends."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "holding"
        yield process
    finally:
        if process.poll() is None:
            assert process.stdin is not None
            process.stdin.close()
            process.wait(timeout=30)


def another_process_takes_it(path: Path) -> bool:
    result = subprocess.run(
        [sys.executable, "-c", TRY, str(path)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    return result.returncode == 0


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "journal.sqlite3"


def test_a_second_relaying_process_is_refused_and_readers_still_read(path: Path) -> None:
    journal = SqliteJournal(path, relaying=True)
    journal.bind_to_chain(REAL, now=1)
    with journal.write() as writer:
        writer.insert(queued_record("a1", 0))
    journal.close()

    with held_elsewhere(path) as holder:
        with pytest.raises(ConfigurationError) as refused:
            SqliteJournal(path, relaying=True)
        reader = open_journal(path, create=False)  # `relayer relay list` and `keys list` read on
        assert [record.id for record in reader.all()] == ["a1"]
        reader.close()

    error = refused.value
    assert error.code == "configuration_error"
    assert f"is relaying through the journal {path}" in error.message
    assert f"another process (pid {holder.pid})" in error.message
    assert error.details["lockFile"] == f"{path}.lock"
    assert "--journal" in error.message


def test_the_lock_is_released_on_close_and_when_its_process_dies(path: Path) -> None:
    journal = SqliteJournal(path, relaying=True)
    assert not another_process_takes_it(path)
    journal.close()
    assert another_process_takes_it(path)

    with held_elsewhere(path) as holder:
        holder.kill()  # kill -9: no clean-up runs, the OS drops the lock with the process
        holder.wait(timeout=30)
        SqliteJournal(path, relaying=True).close()


def test_one_process_shares_its_lock_until_the_last_holder_lets_go(path: Path) -> None:
    """`relayer serve` holds it from its checks through its app's lifespan, and tests restart an app in
    process on the same file: within a process the lock is shared, and counted."""
    first = SqliteJournal(path, relaying=True)
    second = SqliteJournal(path, relaying=True)
    command_hold = lock_for_relaying(path)

    first.close()
    second.close()
    assert not another_process_takes_it(path)
    command_hold.release()
    command_hold.release()  # a second release of the same share is a no-op, not someone else's share
    assert another_process_takes_it(path)


def test_a_failed_open_lets_go_of_the_lock(tmp_path: Path) -> None:
    not_sqlite = tmp_path / "notes.sqlite3"
    not_sqlite.write_text("not a database, clearly" * 100)

    with pytest.raises(ConfigurationError, match="cannot open the relay journal"):
        SqliteJournal(not_sqlite, relaying=True)

    assert another_process_takes_it(not_sqlite)


def test_an_in_memory_journal_has_no_lock_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    SqliteJournal(":memory:", relaying=True).close()
    assert list(tmp_path.iterdir()) == []
