"""Fixtures of the operator console suite: the real app on uvicorn (relay, keeper, trading) over a fresh
embedded chain, real API keys, and Debian's Chromium driven by Playwright.

Chromium is the system's (`/usr/bin/chromium`, installed by scripts/setup.sh from Debian's package);
Playwright never downloads a browser. A missing Chromium is a skip locally and a failure in CI, like a
missing PostgreSQL or anvil (`tests.conftest.require_tool`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from relayer.chain.connect import embedded_chain
from relayer.chain.transact import send
from relayer.domain import calldata
from relayer.faces.api.app import create_app
from relayer.faces.api.edge import server_config
from relayer.faces.cli import keys as keys_cli
from relayer.services.relay.signers import Signer
from relayer.stores.keys import SqliteKeyStore
from tests.conftest import _free_port, require_tool, usd
from tests.serving import long_with_relayers, serving
from tests.trading.conftest import trading_settings

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",  # the tests run as root in CI
    "--disable-gpu",
    "--no-first-run",
    # The machine has no network but loopback: Chromium's own background traffic would only be refused.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]
TAKE_PROFIT_USD = "120000"
"""The open position's take-profit: far above the price, so the keeper tracks it and never executes it."""


@dataclass
class Console:
    """The served app and what a console test needs around it."""

    app: FastAPI
    url: str
    admin_key: str
    trade_key: str
    read_key: str
    signers: list[str]
    position_id: str
    server: uvicorn.Server

    def api(self, method: str, path: str, key: str | None, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
        return httpx.request(method, self.url + path, headers=headers, timeout=30, **kwargs)

    def partial_close(self, exit_pct: int) -> dict[str, Any]:
        """A partial close by the trader's API key, through the API; the answer once it is mined."""
        answer = self.api(
            "POST", "/api/partialclose", self.trade_key, json={"symbol": "BTCUSDT", "exit_pct": exit_pct}
        )
        assert answer.status_code in {200, 202}, answer.text
        body: dict[str, Any] = answer.json()
        assert body["success"] is True, body
        return body

    def wait_final(self, record_id: str, timeout_s: float = 20.0) -> dict[str, Any]:
        """The record once the relay loop has made it final."""
        deadline = time.monotonic() + timeout_s
        while True:
            record: dict[str, Any] = self.api("GET", f"/api/transactions/{record_id}", None).json()
            if record["status"] in {"confirmed", "failed", "expired", "replaced"}:
                return record
            if time.monotonic() > deadline:
                pytest.fail(f"record {record_id} still {record['status']}")
            time.sleep(0.05)

    @property
    def streams(self) -> bool:
        """Whether this build serves `GET /api/stream` (the console is live through it; else it polls)."""
        return "/api/stream" in self.app.openapi()["paths"]


@pytest.fixture
def console(tmp_path: Path) -> Iterator[Console]:
    """The real app on uvicorn on a free loopback port: a fresh embedded chain, the vault, trader 1's BTC long
    (0.42) with a take-profit, relayer signers accounts[5] and [6] approved by the trader, the keeper running,
    and three keys: admin (`read,admin`), the trader's `read,trade`, and a `read` one."""
    chain = embedded_chain()
    accounts = chain.test_accounts()
    deployer, signers = accounts[0], accounts[5:7]
    deployment, trader, position_id = long_with_relayers(chain, signers)
    send(
        chain.w3,
        trader,
        deployment.address,
        calldata.set_take_profit(position_id, usd(TAKE_PROFIT_USD), 5000),
    )
    journal_path = tmp_path / "journal.sqlite3"
    store = SqliteKeyStore(journal_path)
    admin_key, _ = keys_cli.create_key(store, account=deployer.address, scopes="read,admin", label="ops")
    trade_key, _ = keys_cli.create_key(store, account=trader.address, scopes="read,trade")
    read_key, _ = keys_cli.create_key(store, account=trader.address, scopes="read")
    store.close()
    port = _free_port()
    settings = trading_settings(
        chain, deployment, journal_path, host="127.0.0.1", port=port, keeper_interval_s=0.2
    )
    app = create_app(settings, chain=chain, signers=[Signer(s) for s in signers])
    # The server `relayer serve` runs (its edge bounds; at shutdown it closes open streams).
    with serving(server_config(app, settings)) as server:
        yield Console(
            app,
            f"http://127.0.0.1:{port}",
            admin_key,
            trade_key,
            read_key,
            [s.address for s in signers],
            "0x" + position_id.hex(),
            server,
        )


@pytest.fixture(scope="session")
def chromium_path() -> str:
    return require_tool(CHROMIUM, "Chromium (Debian package chromium)")
