"""Files the relayer creates are its owner's alone, whatever the process's umask: the journal (with its -wal
and -shm), the API keys in it and the relay lock 0600, a folder it creates 0700. The relayer writes no
keystore (`relayer.chain.accounts` only reads them).

Not a regression test: the issue saw the journal 0644, but the code before it already made these files 0600
(the same tests pass there); they keep it so."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from relayer.faces.cli import keys as keys_cli
from relayer.stores.journal import SqliteJournal
from relayer.stores.keys import SqliteKeyStore
from relayer.stores.relay_lock import RELAY_LOCK_SUFFIX


@pytest.fixture
def open_umask() -> Iterator[None]:
    """umask 000: anything created with the default mode would be world-readable (and writable)."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("open_umask")
def test_a_relaying_journal_and_its_folder_are_private_under_any_umask(tmp_path: Path) -> None:
    path = tmp_path / "new" / ".relayer" / "journal.sqlite3"

    with closing(SqliteJournal(path, relaying=True)):
        with closing(SqliteKeyStore(path)) as keys:
            keys_cli.create_key(keys, account="0x2B5AD5c4795c026514f8317c7a215E218DcCD6cF", scopes="read")
        side_files = [path.with_name(path.name + suffix) for suffix in ("-wal", "-shm", RELAY_LOCK_SUFFIX)]
        modes = {file.name: _mode(file) for file in [path, *side_files]}

    assert modes == dict.fromkeys(modes, 0o600)
    assert len(modes) == 4
    assert _mode(path.parent) == 0o700


@pytest.mark.usefixtures("open_umask")
def test_a_key_store_creating_the_file_makes_it_private(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "journal.sqlite3"

    with closing(SqliteKeyStore(path)) as keys:
        keys_cli.create_key(keys, account="0x2B5AD5c4795c026514f8317c7a215E218DcCD6cF", scopes="read")

    assert _mode(path) == 0o600
    assert _mode(path.parent) == 0o700


def test_an_existing_folder_keeps_the_mode_its_owner_gave_it(tmp_path: Path) -> None:
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(0o750)

    with closing(SqliteJournal(folder / "journal.sqlite3")):
        pass

    assert _mode(folder) == 0o750
    assert _mode(folder / "journal.sqlite3") == 0o600
