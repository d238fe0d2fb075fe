"""Every journal-using command resolves the journal the same way: `--journal`, else
`RELAYER_RELAY_JOURNAL_PATH`, else `.relayer/journal.sqlite3` in the current directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from relayer.config import DEFAULT_JOURNAL_PATH, RelaySettings
from relayer.faces.cli.main import build_parser, main
from relayer.faces.cli.serve import _load_settings


@pytest.fixture(autouse=True)
def _no_relayer_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in [name for name in os.environ if name.startswith("RELAYER_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_the_default_is_one_place_and_relative_to_the_current_directory() -> None:
    assert RelaySettings().journal_path == DEFAULT_JOURNAL_PATH == Path(".relayer/journal.sqlite3")
    assert not DEFAULT_JOURNAL_PATH.is_absolute()


@pytest.mark.parametrize("command", ["serve", "mcp", "keeper"])
def test_flag_then_env_then_default(command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Keep pytest's logging as it is.
    monkeypatch.setattr("relayer.faces.cli.serve.logs.configure", lambda level: None)

    def journal_of(*argv: str) -> Path:
        return _load_settings(build_parser().parse_args([command, *argv])).relay.journal_path

    assert journal_of() == DEFAULT_JOURNAL_PATH
    monkeypatch.setenv("RELAYER_RELAY_JOURNAL_PATH", "/srv/relayer/env.sqlite3")
    assert journal_of() == Path("/srv/relayer/env.sqlite3")
    assert journal_of("--journal", "flag.sqlite3") == Path("flag.sqlite3")


def test_keys_and_relay_commands_share_the_default_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    account = "0x" + "ab" * 20

    assert main(["keys", "create", "--account", account, "--scopes", "read"]) == 0
    assert main(["keys", "list"]) == 0
    assert main(["relay", "list"]) == 0

    out = capsys.readouterr().out
    assert "0xABaBaBaBABabABabAbAbABAbABabababaBaBABaB" in out  # listed from the same file
    assert "no relayed transactions" in out
    assert (tmp_path / ".relayer" / "journal.sqlite3").is_file()


def test_keys_create_follows_the_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "elsewhere" / "keys.sqlite3"
    monkeypatch.setenv("RELAYER_RELAY_JOURNAL_PATH", str(target))

    assert main(["keys", "create", "--account", "0x" + "ab" * 20, "--scopes", "read"]) == 0

    assert target.is_file()
    assert not (tmp_path / ".relayer").exists()
