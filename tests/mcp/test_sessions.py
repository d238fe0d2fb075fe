"""MCP over HTTP keeps no session table an anonymous client can fill: the server is stateless, so a flood of
`initialize` calls leaves nothing behind, and a new client (the real SDK client) works right after."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from fastapi import FastAPI
from mcp import Client

from relayer.chain.connect import embedded_chain
from relayer.chain.deploy import deploy_vault
from relayer.chain.transact import send
from relayer.domain import calldata
from relayer.domain.markets import symbol_to_bytes32
from relayer.faces.api.app import create_app
from relayer.faces.api.edge import server_config
from relayer.faces.cli import keys as keys_cli
from relayer.stores.keys import SqliteKeyStore
from tests.conftest import _free_port, units
from tests.mcp.messages import INITIALIZE
from tests.serving import serving
from tests.trading.conftest import tool_json, trading_settings

FLOOD = 2_000
"""Anonymous `initialize` calls; each left a session (and its server task) behind on the old server, which
held up to 10,000 of them for 30 minutes (+420 MB) and then answered every new client 503."""

MCP_HEADERS = {
    "content-type": "application/json",
    "accept": "application/json, text/event-stream",
}


@dataclass
class Served:
    url: str
    key: str
    app: FastAPI
    loop: asyncio.AbstractEventLoop

    def tasks(self) -> int:
        """Tasks alive on the server's event loop (each stateful MCP session held one)."""

        async def count() -> int:
            return len(asyncio.all_tasks())

        return asyncio.run_coroutine_threadsafe(count(), self.loop).result(timeout=10)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """The app on uvicorn (`server_config`, as `relayer serve` runs it) over an embedded chain with one
    position and a read key for its owner."""
    chain = embedded_chain()
    deployer, trader = chain.test_accounts()[:2]
    deployment = deploy_vault(chain.w3, deployer)
    market = symbol_to_bytes32("BTCUSDT")
    send(
        chain.w3,
        trader,
        deployment.address,
        calldata.encode_call("openPosition", market, True, units("1"), 0),
    )
    journal_path = tmp_path / "journal.sqlite3"
    store = SqliteKeyStore(journal_path)
    key, _ = keys_cli.create_key(store, account=trader.address, scopes="read")
    store.close()
    port = _free_port()
    loops: list[asyncio.AbstractEventLoop] = []

    @asynccontextmanager
    async def note_loop(_: FastAPI) -> AsyncIterator[None]:
        loops.append(asyncio.get_running_loop())
        yield

    settings = trading_settings(chain, deployment, journal_path, host="127.0.0.1", port=port)
    app = create_app(settings, chain=chain, services=[note_loop])
    with serving(server_config(app, settings)):
        yield Served(f"http://127.0.0.1:{port}/mcp/", key, app, loops[0])


def test_an_initialize_flood_leaves_no_sessions_and_a_new_client_works(served: Served) -> None:
    before = served.tasks()
    ids: set[str] = set()
    statuses: set[int] = set()
    with httpx.Client(headers={**MCP_HEADERS, "host": served.url.split("/")[2]}, timeout=10) as http:
        for number in range(FLOOD):
            answer = http.post(served.url, json={**INITIALIZE, "id": number})
            statuses.add(answer.status_code)
            if "mcp-session-id" in answer.headers:
                ids.add(answer.headers["mcp-session-id"])
    time.sleep(0.5)  # let every request's server task wind down
    after = served.tasks()

    async def new_client() -> Any:
        async with Client(served.url) as client:
            return await client.call_tool("get_positions", {"api_key": served.key})

    positions = tool_json(anyio.run(new_client))

    assert statuses == {200}
    assert ids == set()  # no session handed out, so none kept
    assert after - before <= 5, (before, after)  # the old server kept a task per session: +2,000
    assert served.app.state.mcp.session_manager._server_instances == {}
    (position,) = positions["positions"]
    assert (position["market"], position["size"]) == ("BTCUSDT", "1")
