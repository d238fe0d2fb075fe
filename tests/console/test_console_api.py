"""`GET /api/console`, the operator console's data, over plain HTTP: only an `admin` key reads it (401 without
a valid key, 403 without the scope), it carries every section the page shows with the same values the chain
and the journal hold, and no secret (API keys, signer keys, calldata). The page itself is public and sent
with a strict CSP. Real app (relay, keeper, trading) on both chains and both stores.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient
from web3.types import TxReceipt

from relayer.chain.connect import Chain
from relayer.chain.deploy import Deployment
from relayer.constants import RELAYER_RIGHTS
from relayer.domain import apikeys, calldata
from relayer.domain.notices import Cursor
from relayer.faces.api.app import create_app
from relayer.faces.cli import keys as keys_cli
from relayer.services.relay.signers import Signer
from relayer.stores.keys import SqliteKeyStore
from relayer.stores.location import StoreLocation
from tests.conftest import usd
from tests.trading.conftest import Trading, trading_settings


@dataclass
class Operated:
    """The app after two API-key partial closes and a keeper pass, with a key of each kind."""

    app: Trading
    admin: str
    read: str
    trade: str
    relayers: list[LocalAccount]
    fills: list[dict[str, str]]
    position: bytes


@pytest.fixture
def operated(
    chain: Chain,
    deployment: Deployment,
    accounts: list[LocalAccount],
    store: StoreLocation,
    transact: Callable[[LocalAccount, bytes], TxReceipt],
    open_position: Callable[..., bytes],
) -> Iterator[Operated]:
    trader, relayers = accounts[1], accounts[5:7]
    for relayer in relayers:
        transact(trader, calldata.set_operator_rights(relayer.address, RELAYER_RIGHTS, 0))
    position = open_position(owner=trader, size="1")
    transact(trader, calldata.set_stop_loss(position, usd("50000"), 10_000))
    settings = trading_settings(chain, deployment, store.journal_path, database_url=store.database_url)
    app = create_app(settings, chain=chain, signers=[Signer(a) for a in relayers])
    with TestClient(app) as client:
        trading = Trading(app, client, chain, [Signer(a) for a in relayers], accounts[1:4])
        trade = trading.key(trader, "read,trade")
        fills = []
        for pct in (25, 50):
            answer = trading.post("/api/partialclose", {"symbol": "BTCUSDT", "exit_pct": pct}, trade)
            assert answer.status_code in {200, 202}, answer.text
            fills.append(answer.json())
        trading.settle()
        trading.keeper.tick()
        yield Operated(
            trading,
            trading.key(accounts[0], "read,admin"),
            trading.key(trader, "read"),
            trade,
            relayers,
            fills,
            position,
        )


def test_only_an_admin_key_reads_the_console(operated: Operated) -> None:
    app = operated.app
    for key, status, code in (
        (None, 401, "unauthenticated"),
        ("vrk_not-a-key", 401, "unauthenticated"),
        (operated.read, 403, "insufficient_scope"),
        (operated.trade, 403, "insufficient_scope"),
    ):
        refused = app.get("/api/console", key)
        assert refused.status_code == status, refused.text
        assert refused.json()["error"]["code"] == code

    answer = app.get("/api/console", operated.admin)

    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    assert answer.headers["x-content-type-options"] == "nosniff"


def test_the_console_shows_signers_queue_transactions_orders_and_spend(operated: Operated) -> None:
    app, chain = operated.app, operated.app.chain
    body = app.get("/api/console", operated.admin).json()

    assert body["chainId"] == chain.w3.eth.chain_id
    assert Cursor.parse(body["cursor"]) is not None
    signers = {s["address"]: s for s in body["signers"]}
    assert set(signers) == {relayer.address for relayer in operated.relayers}
    used = signers[body["transactions"][0]["signer"]]
    for address, signer in signers.items():
        balance = chain.w3.eth.get_balance(address)
        assert signer["balanceWei"] == str(balance)
        whole, _, fraction = signer["balanceEther"].partition(".")
        assert int(whole + fraction.ljust(18, "0")) == balance
        assert signer["lowBalance"] is False
        assert signer["inFlight"] == 0
        assert signer["lease"]["epoch"] >= 1
        assert signer["lease"]["holder"] == body["instance"]
    assert used["journalNextNonce"] >= 1
    assert body["queue"] == {
        "queued": 0,
        "submitted": 0,
        "mined": 0,
        "confirmed": 2,
        "failed": 0,
        "replaced": 0,
        "expired": 0,
    }
    assert body["unfinished"] == 0

    newest_first = list(reversed(operated.fills))
    assert [t["id"] for t in body["transactions"]] == [f["transactionId"] for f in newest_first]
    for row, fill in zip(body["transactions"], newest_first, strict=True):
        assert (row["kind"], row["status"], row["error"]) == ("close", "confirmed", None)
        assert row["account"].lower() == operated.app.traders[0].address.lower()
        assert row["transactionHash"] == fill["transactionHash"]
        (decoded,) = row["fills"]
        for field in ("closed_qty", "remaining_qty", "exit_price", "realized_pnl_usd"):
            assert decoded[field] == fill[field]

    keeper = body["keeper"]
    assert keeper["configured"] is True
    assert keeper["lease"]["holder"] == body["instance"]
    assert keeper["orders"] == [
        {
            "positionId": "0x" + operated.position.hex(),
            "order": "stop_loss",
            "orderId": 4,
            "triggerPrice": "50000",
            "shareBps": keeper["orders"][0]["shareBps"],
            "trailBps": 0,
            "setAtBlock": keeper["orders"][0]["setAtBlock"],
            "logIndex": 0,
        }
    ]
    assert keeper["ordersTotal"] == 1

    today = body["spend"]["today"]
    assert today["requests"] == 2
    assert int(today["spentWei"]) > 0
    assert today["dailyCapWei"] == str(10**19)
    assert today["dailyCapEther"] == "10"
    assert body["spend"]["policy"]["who"] == "anyone"


def test_the_console_reads_the_journal_off_the_event_loop(
    operated: Operated, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A console open on a large journal counts it on every debounced notice: on the loop, that count would
    # stall every stream and trade the process serves meanwhile.
    journal = operated.app.runtime.require_relay().journal
    on_loop: dict[str, bool] = {}

    def spy(name: str) -> Callable[..., Any]:
        real = getattr(journal, name)

        def read(*args: Any, **kwargs: Any) -> Any:
            try:
                asyncio.get_running_loop()
                on_loop[name] = True
            except RuntimeError:
                on_loop[name] = False
            return real(*args, **kwargs)

        return read

    reads = ("status_counts", "records", "latest_notice_cursor")  # which only the console calls here
    for name in reads:
        monkeypatch.setattr(journal, name, spy(name))
    answer = operated.app.get("/api/console", operated.admin)

    assert answer.status_code == 200
    assert on_loop == dict.fromkeys(reads, False)


def test_the_console_holds_no_secret(operated: Operated) -> None:
    text = operated.app.get("/api/console", operated.admin).text

    for key in (operated.admin, operated.read, operated.trade):
        assert key not in text
        assert apikeys.display_prefix(key) not in text  # the part `relayer keys list` shows
    for relayer in operated.relayers:
        assert relayer.key.hex().removeprefix("0x") not in text
    assert '"data"' not in text  # no calldata
    assert "idempotency" not in text.lower()
    assert 'allowlist"' not in text


def test_without_signers_the_console_answers_relay_not_configured(
    chain: Chain, deployment: Deployment, tmp_path: Path
) -> None:
    journal_path = tmp_path / "journal.sqlite3"
    store = SqliteKeyStore(journal_path)
    admin, _ = keys_cli.create_key(store, account="0x" + "11" * 20, scopes="read,admin")
    store.close()
    with TestClient(create_app(trading_settings(chain, deployment, journal_path), chain=chain)) as client:
        answer = client.get("/api/console", headers={"Authorization": f"Bearer {admin}"})
        page = client.get("/console")
        script = client.get("/console/console.js")

    assert answer.status_code == 503, answer.text
    assert answer.json()["error"]["code"] == "relay_not_configured"
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert "script-src 'self'" in csp
    assert page.headers["referrer-policy"] == "no-referrer"
    assert script.headers["content-type"].startswith("text/javascript")
    assert script.headers["x-content-type-options"] == "nosniff"
    # No inline script and nothing from another origin: every src/href is a path on this server.
    assert re.findall(r"<script(?![^>]*\ssrc=)", page.text) == []
    assert all(ref.startswith("/console/") for ref in re.findall(r'(?:src|href)="([^"]+)"', page.text))
    assert "innerHTML" not in script.text
