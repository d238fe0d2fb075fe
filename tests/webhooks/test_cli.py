"""`relayer webhooks add|list|remove|test|deliveries` on both databases, with a real receiver."""

from __future__ import annotations

from pathlib import Path

import pytest

from relayer.faces.cli.main import main
from relayer.stores.journal_chains import ChainBinding
from relayer.stores.location import StoreLocation, open_journal
from tests.webhooks.conftest import Receiver

ACCOUNT = "0x2B5AD5c4795c026514f8317c7a215E218DcCD6cF"


def _where(store: StoreLocation) -> list[str]:
    if store.database_url is not None:
        return ["--database-url", store.database_url]
    return ["--journal", str(store.journal_path)]


def _bound(store: StoreLocation, *chains: int) -> None:
    journal = open_journal(store, relaying=True)
    try:
        for chain_id in chains:
            journal.bind_to_chain(ChainBinding(chain_id, "0x" + f"{chain_id:02x}" * 32), now=1)
    finally:
        journal.close()


def test_add_list_test_and_remove(
    store: StoreLocation,
    receiver: Receiver,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _bound(store, 31337)
    where = _where(store)
    url = receiver.url("/cli")
    # A private URL is refused (usage: exit 2) unless the environment allows it.
    assert main(["webhooks", "add", "--account", ACCOUNT, "--url", url, *where]) == 2
    assert "webhook_url_refused" in capsys.readouterr().err
    monkeypatch.setenv("RELAYER_WEBHOOKS_ALLOW_PRIVATE_URLS", "true")

    assert (
        main(["webhooks", "add", "--account", ACCOUNT, "--url", url, "--types", "position.decreased", *where])
        == 0
    )
    webhook_id, secret = capsys.readouterr().out.splitlines()[0].split()
    assert main(["webhooks", "add", "--global", "--url", receiver.url("/ops"), *where]) == 0
    capsys.readouterr()

    assert main(["webhooks", "list", *where]) == 0
    listing = capsys.readouterr().out
    assert webhook_id in listing
    assert ACCOUNT.lower() in listing
    assert "global" in listing
    assert secret not in listing
    assert main(["webhooks", "list", "--account", ACCOUNT, *where]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1

    assert main(["webhooks", "test", webhook_id, *where]) == 0
    assert capsys.readouterr().out.startswith("status 200: delivered")
    (got,) = receiver.at("/cli")
    assert got.verified(secret)["type"] == "webhook.test"
    receiver.script("/cli", 500)
    assert main(["webhooks", "test", webhook_id, *where]) == 1
    assert "status 500" in capsys.readouterr().out

    assert main(["webhooks", "deliveries", webhook_id, *where]) == 0
    assert capsys.readouterr().out.strip() == "no deliveries"  # tests are not deliveries
    assert main(["webhooks", "remove", webhook_id, *where]) == 0
    capsys.readouterr()
    assert main(["webhooks", "remove", webhook_id, *where]) == 1
    assert "webhook_not_found" in capsys.readouterr().err
    assert main(["webhooks", "add", "--account", "0x1234", "--url", url, *where]) == 2  # not an address


def test_the_chain_must_be_known_and_named_when_there_are_several(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = StoreLocation(tmp_path / "j.sqlite3")
    where = _where(store)
    _bound(store)
    assert main(["webhooks", "add", "--global", "--url", "https://hooks.example.com/", *where]) == 1
    assert "no relay has started" in capsys.readouterr().err
    _bound(store, 1, 31337)
    assert main(["webhooks", "add", "--global", "--url", "https://hooks.example.com/", *where]) == 1
    assert "--chain-id" in capsys.readouterr().err
    args = ["webhooks", "add", "--global", "--url", "https://hooks.example.com/", "--chain-id", "1", *where]
    assert main(args) == 0
    capsys.readouterr()
    assert main(["webhooks", "list", "--chain-id", "31337", *where]) == 0
    assert capsys.readouterr().out.strip() == "no webhooks"
