"""`relayer keys create` with limits (`--expires-in` / `--expires-at`, `--markets`, `--daily-spend-wei` /
`--daily-spend`, the `admin` scope) and `relayer keys list` showing them; bad input exits 2 with a message
naming the flag, stores nothing and never shows a traceback (an exception would fail the test in-process).
Run on both databases (`store`: `--journal` SQLite, `--database-url` PostgreSQL)."""

from __future__ import annotations

import os
import time
from contextlib import closing
from pathlib import Path

import pytest

from relayer.domain import apikeys
from relayer.domain.apikeys import Scope
from relayer.faces.cli.main import main
from relayer.stores.location import StoreLocation, open_key_store

ACCOUNT = "0xABaBaBaBABabABabAbAbABAbABabababaBaBABaB"


@pytest.fixture(autouse=True)
def _no_relayer_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in [name for name in os.environ if name.startswith("RELAYER_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def _where(store: StoreLocation) -> list[str]:
    if store.database_url is not None:
        return ["--database-url", store.database_url]
    return ["--journal", str(store.journal_path)]


def _create(store: StoreLocation, capsys: pytest.CaptureFixture[str], *flags: str) -> apikeys.ApiKey:
    code = main(["keys", "create", "--account", ACCOUNT, *flags, *_where(store)])
    out = capsys.readouterr().out
    assert code == 0, out
    key = out.splitlines()[0]
    with closing(open_key_store(store, create=False)) as keys:
        record = keys.api_key_by_hash(apikeys.hash_key(key))
    assert record is not None
    return record


def _listing(store: StoreLocation, capsys: pytest.CaptureFixture[str]) -> list[str]:
    assert main(["keys", "list", *_where(store)]) == 0
    return capsys.readouterr().out.splitlines()


def test_create_with_every_limit_and_list_shows_them(
    store: StoreLocation, capsys: pytest.CaptureFixture[str]
) -> None:
    before = int(time.time())
    limited = _create(
        store,
        capsys,
        *("--scopes", "read,trade,admin", "--expires-in", "30d"),
        *("--markets", "btcusdt,ETHUSDT", "--daily-spend", "0.05"),
    )
    after = int(time.time())
    plain = _create(store, capsys, "--scopes", "read")

    assert limited.scopes == {Scope.READ, Scope.TRADE, Scope.ADMIN}
    assert limited.expires_at is not None
    assert before + 30 * 86_400 <= limited.expires_at <= after + 30 * 86_400
    assert limited.markets == frozenset({"BTCUSDT", "ETHUSDT"})
    assert limited.daily_spend_wei == 5 * 10**16  # exactly 0.05 ether
    assert (plain.expires_at, plain.markets, plain.daily_spend_wei) == (None, None, None)

    first, second = _listing(store, capsys)
    assert "admin,read,trade" in first
    assert f"expires {apikeys.time_text(limited.expires_at).replace('T', ' ')}" in first
    assert "markets BTCUSDT,ETHUSDT" in first
    assert "daily spend 0.05 ETH" in first
    assert first.endswith("active")
    assert "expires never  markets all  daily spend policy default" in second
    assert second.endswith("active")


@pytest.mark.parametrize(
    ("flags", "expires_at", "daily_spend_wei"),
    [
        (("--expires-at", "2100-01-01T00:00:00Z"), 4_102_444_800, None),
        (("--expires-at", "2100-01-01T01:00:00+01:00"), 4_102_444_800, None),
        (("--expires-at", "4102444800", "--daily-spend-wei", "123"), 4_102_444_800, 123),
        (("--daily-spend", "1.000000000000000001"), None, 10**18 + 1),
        (("--daily-spend-wei", str(2**256 - 1)), None, 2**256 - 1),
    ],
)
def test_expiry_and_spend_forms(
    store: StoreLocation,
    capsys: pytest.CaptureFixture[str],
    flags: tuple[str, ...],
    expires_at: int | None,
    daily_spend_wei: int | None,
) -> None:
    record = _create(store, capsys, "--scopes", "read", *flags)

    assert (record.expires_at, record.daily_spend_wei) == (expires_at, daily_spend_wei)


def test_list_says_expired(store: StoreLocation, capsys: pytest.CaptureFixture[str]) -> None:
    """A key past its expiry (made when it was still ahead: the store keeps what it is given)."""
    with closing(open_key_store(store, create=True)) as keys:
        keys.insert_api_key(
            key_hash=apikeys.hash_key("vrk_old"),
            prefix="vrk_old",
            label="old",
            account=ACCOUNT,
            scopes=frozenset({Scope.READ}),
            now=1_000,
            expires_at=2_000,
        )

    (line,) = _listing(store, capsys)

    assert "expired 1970-01-01 00:33:20Z" in line
    assert line.endswith("expired")


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (("--expires-in", "0d"), "--expires-in"),
        (("--expires-in", "30x"), "--expires-in"),
        (("--expires-in=-5s",), "--expires-in"),  # `=`: argparse would read -5s as a flag
        (("--expires-in", "999999999999d"), "--expires-in: must be before the year 10000"),
        (("--expires-at", "2020-01-01T00:00:00Z"), "--expires-at: 2020-01-01T00:00:00Z is not in the future"),
        (("--expires-at", "2100-01-01T00:00:00"), "UTC offset"),
        (("--expires-at", "tomorrow"), "--expires-at"),
        (("--markets", "BTC-USDT"), "--markets"),
        (("--markets", "BTCUSDT,"), "--markets"),
        (("--markets", ""), "--markets"),
        (("--daily-spend-wei", "0"), "--daily-spend-wei"),
        (("--daily-spend-wei", "0.05"), "--daily-spend-wei"),
        (("--daily-spend-wei", str(2**256)), "--daily-spend-wei"),
        (("--daily-spend", "0"), "--daily-spend"),
        (("--daily-spend", "-1"), "--daily-spend"),
        (("--daily-spend", "0.0000000000000000001"), "more than 18 decimal places"),
        (("--daily-spend", "1e400"), "--daily-spend"),
        (("--daily-spend", "NaN"), "--daily-spend"),
        (("--scopes", "read,root"), "read, trade, admin"),
    ],
)
def test_bad_input_exits_2_with_a_message_and_stores_nothing(
    store: StoreLocation, capsys: pytest.CaptureFixture[str], flags: tuple[str, ...], named: str
) -> None:
    scopes = () if "--scopes" in flags else ("--scopes", "read")
    with closing(open_key_store(store, create=True)) as keys:  # the store exists: nothing may be added
        assert keys.api_keys() == []

    code = main(["keys", "create", "--account", ACCOUNT, *scopes, *flags, *_where(store)])

    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.startswith("error [invalid_"), captured.err
    assert named in captured.err
    assert "vrk_" not in captured.out
    assert "Traceback" not in captured.err
    with closing(open_key_store(store, create=False)) as keys:
        assert keys.api_keys() == []


@pytest.mark.parametrize(
    "flags",
    [
        ("--expires-in", "1d", "--expires-at", "4102444800"),
        ("--daily-spend-wei", "1", "--daily-spend", "1"),
    ],
)
def test_two_forms_of_one_limit_are_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: tuple[str, ...]
) -> None:
    journal = tmp_path / "keys.sqlite3"

    with pytest.raises(SystemExit) as usage:
        main(["keys", "create", "--account", ACCOUNT, "--scopes", "read", *flags, "--journal", str(journal)])

    assert usage.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
    assert not journal.exists()


@pytest.mark.parametrize(
    "flags",
    [("--expires-in", "0s"), ("--expires-at", "1"), ("--markets", "BTC USD"), ("--daily-spend", "0")],
)
def test_a_bad_limit_makes_no_journal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: tuple[str, ...]
) -> None:
    journal = tmp_path / ".relayer" / "journal.sqlite3"

    assert (
        main(["keys", "create", "--account", ACCOUNT, "--scopes", "read", *flags, "--journal", str(journal)])
        == 2
    )

    assert flags[0] in capsys.readouterr().err
    assert not journal.parent.exists()
