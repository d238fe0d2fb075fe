"""`relayer keys create|list|revoke`: the key is printed once, only its hash is kept, errors exit non-zero."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount

from relayer.domain import apikeys
from relayer.faces.cli.main import main
from relayer.stores.journal import SqliteJournal
from relayer.stores.keys import SqliteKeyStore
from tests.api.test_serve import clean_env
from tests.conftest import ROOT
from tests.trading.conftest import Trading

ACCOUNT = "0x" + "ab" * 20


def _create(journal: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    code = main(
        ["keys", "create", "--account", ACCOUNT, "--scopes", "read,trade", "--journal", str(journal), *extra]
    )
    assert code == 0
    out = capsys.readouterr().out
    keys = re.findall(r"vrk_[A-Za-z0-9_-]{32}", out)
    assert len(keys) == 1, out  # printed once
    assert out.splitlines()[0] == keys[0]
    return str(keys[0])


def test_create_list_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    journal = tmp_path / "keys.sqlite3"
    key = _create(journal, capsys, "--label", "my-agent")
    other = _create(journal, capsys)
    assert key != other

    assert main(["keys", "list", "--journal", str(journal)]) == 0
    listing = capsys.readouterr().out
    lines = listing.splitlines()
    assert len(lines) == 2
    assert key not in listing
    assert other not in listing
    assert key[:12] + "..." in lines[0]
    assert "my-agent" in lines[0]
    assert "read,trade" in lines[0]
    assert "0xABaBaBaBABabABabAbAbABAbABabababaBaBABaB" in lines[0]  # checksummed
    assert "last used -" in lines[0]
    assert lines[0].endswith("active")

    assert main(["keys", "revoke", "1", "--journal", str(journal)]) == 0
    assert "revoked" in capsys.readouterr().out
    main(["keys", "list", "--journal", str(journal)])
    first, second = capsys.readouterr().out.splitlines()
    assert "revoked" in first
    assert second.endswith("active")

    stored = SqliteKeyStore(journal)
    try:
        record = stored.api_key_by_hash(apikeys.hash_key(key))
        assert record is not None
        assert record.revoked_at is not None
        assert record.scopes == frozenset({apikeys.Scope.READ, apikeys.Scope.TRADE})
    finally:
        stored.close()
    data = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert key.encode() not in data
    assert other.encode() not in data


@pytest.mark.parametrize("scopes", ["owner", "read,write", "", " , "])
def test_bad_scopes_exit_2_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], scopes: str
) -> None:
    journal = tmp_path / "keys.sqlite3"

    code = main(["keys", "create", "--account", ACCOUNT, "--scopes", scopes, "--journal", str(journal)])

    assert code == 2
    captured = capsys.readouterr()
    assert "vrk_" not in captured.out
    assert "scopes" in captured.err
    assert "read, trade" in captured.err


def test_bad_account_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["keys", "create", "--account", "alice", "--scopes", "read", "--journal", str(tmp_path / "j")]
    )

    assert code == 2
    assert "account" in capsys.readouterr().err


def test_revoke_unknown_or_revoked_id_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    journal = tmp_path / "keys.sqlite3"
    _create(journal, capsys)

    assert main(["keys", "revoke", "7", "--journal", str(journal)]) != 0
    assert "no active API key with id 7" in capsys.readouterr().err
    assert main(["keys", "revoke", "1", "--journal", str(journal)]) == 0
    assert main(["keys", "revoke", "1", "--journal", str(journal)]) != 0


def test_list_without_a_journal_fails_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere.sqlite3"

    assert main(["keys", "list", "--journal", str(missing)]) != 0
    assert "no relay journal" in capsys.readouterr().err
    assert not missing.exists()


def test_list_when_empty(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    journal = tmp_path / "keys.sqlite3"
    SqliteJournal(journal).close()

    assert main(["keys", "list", "--journal", str(journal)]) == 0
    assert capsys.readouterr().out.strip() == "no API keys"


def test_a_key_made_by_another_process_works_at_once_on_a_relaying_server(
    trading: Trading, open_position: Callable[..., bytes], accounts: list[LocalAccount]
) -> None:
    """`relayer keys create` in its own process on the file the server relays through: the server holds the
    journal's relay lock, which the key store never takes, and reads the new key on its next request."""
    position_id = open_position(owner=accounts[1])
    assert trading.relay.journal.relaying
    journal = str(trading.runtime.settings.relay.journal_path)

    command = ["keys", "create", "--account", accounts[1].address, "--scopes", "read", "--journal", journal]
    database_url = trading.runtime.settings.database_url
    if database_url is not None:  # the server's store: its PostgreSQL database
        command += ["--database-url", database_url.get_secret_value()]
    made = subprocess.run(
        [sys.executable, "-m", "relayer.faces.cli.main", *command],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert made.returncode == 0, made.stderr
    key = made.stdout.splitlines()[0]
    response = trading.get("/api/trade/positions", key)
    assert response.status_code == 200, response.text
    assert [p["positionId"] for p in response.json()["positions"]] == ["0x" + position_id.hex()]
