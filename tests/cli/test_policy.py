"""`relayer policy show`: the policy the environment configures and today's spend per chain, read from the
journal (the same rows the relay reserves in)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from relayer.domain.sponsorship import Charge, Policy, Sponsored, windows_for
from relayer.faces.cli.main import main
from relayer.stores.journal import SqliteJournal
from relayer.stores.journal_chains import ChainBinding

OWNER = "0x" + "ab" * 20


@pytest.fixture(autouse=True)
def _no_relayer_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in [name for name in os.environ if name.startswith("RELAYER_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_policy_show_prints_the_policy_and_todays_spend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "journal.sqlite3"
    journal = SqliteJournal(path, relaying=True)
    journal.bind_to_chain(ChainBinding(31337, "0x" + "00" * 32), now=int(time.time()))
    charge = Charge(7 * 10**15, windows_for(Policy(), Sponsored(OWNER), int(time.time())))
    with journal.write() as writer:
        writer.reserve(31337, charge, int(time.time()))
    journal.close()
    monkeypatch.setenv("RELAYER_SPONSOR_WHO", "allowlist")
    monkeypatch.setenv("RELAYER_SPONSOR_ALLOWLIST", OWNER)
    monkeypatch.setenv("RELAYER_SPONSOR_DAILY_CAP_WEI", str(10**16))

    assert main(["policy", "show", "--journal", str(path)]) == 0

    shown = json.loads(capsys.readouterr().out)
    assert shown["policy"]["who"] == "allowlist"
    assert shown["policy"]["allowlist"] == [OWNER]
    assert shown["policy"]["dailyCapWei"] == str(10**16)
    (today,) = shown["today"]
    assert (today["chainId"], today["requests"], today["spentWei"]) == (31337, 1, str(7 * 10**15))
    assert today["capReached"] is False


def test_a_bad_policy_variable_is_a_message_and_an_exit_code(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RELAYER_SPONSOR_WHO", "everyone")
    assert main(["policy", "show"]) != 0
    err = capsys.readouterr().err
    assert "who" in err
    assert "Traceback" not in err
