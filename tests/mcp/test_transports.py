"""The MCP server over its real transports: streamable HTTP mounted in the app, and `relayer mcp` on stdio."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import uvicorn
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client

from relayer import __version__
from relayer.chain.connect import embedded_chain
from relayer.faces.api.app import create_app
from relayer.faces.cli import keys as keys_cli
from relayer.services.relay.signers import Signer
from relayer.stores.keys import SqliteKeyStore
from tests.conftest import ROOT, _free_port, require_tool
from tests.serving import long_with_relayers, serving
from tests.trading.conftest import tool_error, tool_json, trading_settings

DEMO_KEY = re.compile(r"demo API keys? of (0x[0-9a-fA-F]{40})[^\n]*\n[^\n]*?(vrk_[A-Za-z0-9_-]+)")
"""The banner's demo account and the first key listed under it (scopes read,trade)."""


@pytest.fixture
def served_app(tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """The real app on uvicorn, on a free loopback port, over a fresh embedded chain with one open position.

    Yields (MCP URL, API key, position id).
    """
    chain = embedded_chain()
    signers = chain.test_accounts()[5:7]
    deployment, trader, position = long_with_relayers(chain, signers)
    position_id = "0x" + position.hex()
    journal_path = tmp_path / "journal.sqlite3"
    store = SqliteKeyStore(journal_path)
    key, _ = keys_cli.create_key(store, account=trader.address, scopes="read")
    store.close()
    port = _free_port()
    app = create_app(
        trading_settings(chain, deployment, journal_path, host="127.0.0.1", port=port),
        chain=chain,
        signers=[Signer(s) for s in signers],
    )
    with serving(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")):
        yield f"http://127.0.0.1:{port}/mcp/", key, position_id


def test_get_positions_over_streamable_http(served_app: tuple[str, str, str]) -> None:
    url, key, position_id = served_app

    async def call() -> tuple[Any, Any, Any, Any]:
        async with Client(url) as client:
            tools = await client.list_tools()
            ok = await client.call_tool("get_positions", {"api_key": key})
            refused = await client.call_tool("partial_close", {"symbol": "BTCUSDT", "api_key": key})
            unknown = await client.call_tool("get_positions", {"api_key": key, "market": "BTCUSDT"})
            return tools, ok, refused, unknown

    tools, ok, refused, unknown = anyio.run(call)

    assert len(tools.tools) == 12
    assert all(tool.input_schema["additionalProperties"] is False for tool in tools.tools)
    assert tool_error(unknown)["details"] == {"field": "market"}
    (position,) = tool_json(ok)["positions"]
    assert (position["positionId"], position["size"], position["side"]) == (position_id, "0.42", "long")
    assert refused.is_error
    assert '"insufficient_scope"' in refused.content[0].text


def test_relayer_mcp_on_stdio_with_the_demo_key(tmp_path: Path) -> None:
    relayer = require_tool(ROOT / ".venv" / "bin" / "relayer", "the relayer console script")
    # Its own journal: an embedded start revokes the demo keys of any other run on the same file.
    journal = str(tmp_path / "journal.sqlite3")
    params = StdioServerParameters(command=relayer, args=["mcp", "--journal", journal], cwd=str(ROOT))

    async def call(errlog: Any) -> tuple[str, Any, Any, Any]:
        async with Client(stdio_client(params, errlog=errlog)) as client:
            errlog.flush()
            banner = Path(errlog.name).read_text()
            match = DEMO_KEY.search(banner)
            assert match is not None, banner
            ok = await client.call_tool("get_positions", {"api_key": match.group(2)})
            bad = await client.call_tool("get_positions", {"api_key": "vrk_nope"})
            return match.group(1), ok, bad, client.server_info

    with tempfile.NamedTemporaryFile("w+", suffix=".log") as errlog:
        account, ok, bad, server_info = anyio.run(call, errlog)

    assert server_info is not None
    assert server_info.version == __version__

    answer = tool_json(ok)
    assert answer["account"] == account
    shown = {(p["market"], p["side"], p["size"]) for p in answer["positions"]}
    assert shown == {("BTCUSDT", "long", "0.5"), ("ETHUSDT", "short", "4")}  # the demo world's trader 1
    assert bad.is_error
    assert '"unauthenticated"' in bad.content[0].text
