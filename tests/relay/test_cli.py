"""`relayer relay status|list|signers` on a real journal (and, for `signers`, a real node)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount

from relayer.chain.connect import Chain
from relayer.chain.deploy import Deployment
from relayer.domain.typed_data import parse_signed_relay
from relayer.errors import RelayerError
from relayer.faces.cli.relay import add_relay_commands
from relayer.services.relay.service import RelayService
from tests.blocking import Blocking
from tests.relay.conftest import settle


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="relayer")
    add_relay_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    result: int = args.handler(args)
    return result


@pytest.mark.only_store("sqlite")  # reads the journal file
def test_relay_status_list_and_signers(
    chain: Chain,
    deployment: Deployment,
    accounts: list[LocalAccount],
    relay_accounts: list[LocalAccount],
    open_position: Callable[..., bytes],
    service: Blocking[RelayService],
    signed_body: Callable[..., dict[str, Any]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    record = service.submit_signed(
        parse_signed_relay(signed_body(accounts[1], open_position(owner=accounts[1])))
    ).record
    settle(service)
    journal = str(service.settings.journal_path)

    assert run(["relay", "status", record.id, "--journal", journal]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["id"], shown["status"]) == (record.id, "confirmed")

    assert run(["relay", "list", "--status", "confirmed", "--journal", journal]) == 0
    assert record.id in capsys.readouterr().out
    assert run(["relay", "list", "--status", "failed", "--journal", journal]) == 0
    assert "no relayed transactions with status failed" in capsys.readouterr().out

    with pytest.raises(RelayerError) as missing:
        run(["relay", "status", "nope", "--journal", journal])
    assert missing.value.code == "transaction_not_found"

    if chain.is_embedded:
        return  # `signers` talks JSON-RPC: checked against anvil
    monkeypatch.setenv("RELAYER_SIGNER_KEY", "0x" + bytes(relay_accounts[0].key).hex())
    assert (
        run(
            ["relay", "signers", "--rpc-url", chain.name, "--vault", deployment.address, "--journal", journal]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert relay_accounts[0].address in out
    assert "journal next" in out
    assert "0x" + bytes(relay_accounts[0].key).hex() not in out
