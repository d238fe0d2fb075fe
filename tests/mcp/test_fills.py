"""Fills reach the agent over MCP, through the SDK's real client: progress notifications while a close waits
for its block, `get_recent_fills` with a cursor, and the `relayer://fills/recent` resource a session
subscribes to (in process here, both ways the SDK offers; over stdio with `relayer mcp` below)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import pytest
from eth_account.signers.local import LocalAccount
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.subscriptions import ResourceUpdated
from mcp.shared.memory import create_client_server_memory_streams
from mcp.types import ResourceUpdatedNotification, TextResourceContents

from relayer.faces.mcp import build_mcp_server
from relayer.faces.mcp_fills import FILLS_URI, RecentFills
from tests.conftest import ROOT, require_tool
from tests.trading.conftest import Trading, tool_error, tool_json

WAIT_S = 20.0

FILL_FIELDS = ("closed_qty", "remaining_qty", "closed_pct", "exit_price", "realized_pnl_usd", "positionId")


@pytest.fixture
def btc_long(
    open_position: Callable[..., bytes],
    set_market_price: Callable[[str, str], None],
    accounts: list[LocalAccount],
) -> bytes:
    """Trader 1's 1 BTC long at 96,500."""
    position = open_position(market="BTCUSDT", is_long=True, size="1", owner=accounts[1])
    set_market_price("BTCUSDT", "96500")
    return position


def test_a_close_reports_progress_while_it_waits_for_its_block(
    trading: Trading, btc_long: bytes, accounts: list[LocalAccount]
) -> None:
    key = trading.key(accounts[1])
    told: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        told.append((progress, total, message))

    async def close() -> Any:
        async with Client(build_mcp_server(lambda: trading.service)) as client:
            partial = await client.call_tool(
                "partial_close", {"symbol": "BTCUSDT", "api_key": key}, progress_callback=on_progress
            )
            quiet = len(told)
            whole = await client.call_tool(
                "close_position", {"position_id": "0x" + btc_long.hex(), "api_key": key}
            )  # no progress callback: no token, nothing reported
            return partial, quiet, whole

    partial, told_by_partial, whole = trading.run(close)
    answer = tool_json(partial)
    record = trading.relay.get(answer["transactionId"])

    assert told_by_partial == 3
    assert len(told) == 3
    assert [(step, total) for step, total, _ in told] == [(1, 3), (2, 3), (3, 3)]
    messages = [message or "" for _, _, message in told]
    assert messages[0] == "simulated: closing 0.5 BTCUSDT passes the checks"
    assert messages[1].endswith(f"journaled as transaction {answer['transactionId']}")
    assert record.mined is not None
    assert messages[2] == f"mined in block {record.mined.block_number}"
    assert tool_json(whole)["remaining_qty"] == "0"


class _PipeBrokenOnProgress:
    """The server's write side of a real JSON-RPC stream whose pipe breaks once the client is gone: every
    `notifications/progress` write raises `BrokenPipeError`, as writing to a closed stdout does (the answer
    still gets through, so the test can read what the tool answered)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self.refused = 0

    async def send(self, item: Any) -> None:
        if getattr(item.message, "method", None) == "notifications/progress":
            self.refused += 1
            raise BrokenPipeError(32, "Broken pipe")
        await self._stream.send(item)

    async def __aenter__(self) -> _PipeBrokenOnProgress:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stream.aclose()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _BreakingTransport:
    """An MCP transport (the client's `Transport`) to the server in process over JSON-RPC memory streams, with
    the server's writes going through `_PipeBrokenOnProgress`."""

    def __init__(self, server: Any) -> None:
        self._server = server._lowlevel_server  # what the SDK's own InMemoryTransport runs
        self._stack: AsyncExitStack | None = None
        self.writes: _PipeBrokenOnProgress | None = None

    async def __aenter__(self) -> Any:
        stack = AsyncExitStack()
        client, (server_read, server_write) = await stack.enter_async_context(
            create_client_server_memory_streams()
        )
        self.writes = _PipeBrokenOnProgress(server_write)
        group = await stack.enter_async_context(anyio.create_task_group())
        options = self._server.create_initialization_options()
        group.start_soon(self._server.run, server_read, self.writes, options)
        stack.push_async_callback(server_write.aclose)
        stack.push_async_callback(client[1].aclose)
        self._stack = stack
        return client

    async def __aexit__(self, *exc: object) -> None:
        assert self._stack is not None
        await self._stack.aclose()


def test_a_close_answers_its_fill_when_telling_progress_fails(
    trading: Trading, btc_long: bytes, accounts: list[LocalAccount], caplog: pytest.LogCaptureFixture
) -> None:
    key = trading.key(accounts[1])
    transport = _BreakingTransport(build_mcp_server(lambda: trading.service))

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        raise AssertionError("no progress can arrive: the pipe is broken")

    async def close() -> Any:
        async with Client(transport) as client:
            return await client.call_tool(
                "partial_close", {"symbol": "BTCUSDT", "api_key": key}, progress_callback=on_progress
            )

    with caplog.at_level(logging.DEBUG, logger="relayer.faces.mcp_tools"):
        answer = tool_json(trading.run(close))
    record = trading.relay.get(answer["transactionId"])

    assert transport.writes is not None
    assert transport.writes.refused == 3  # each step tried, each failed
    assert (answer["closed_qty"], answer["remaining_qty"]) == ("0.5", "0.5")
    assert record.mined is not None  # the transaction went out although no progress could be told
    told = [r for r in caplog.records if r.name == "relayer.faces.mcp_tools"]
    assert [r.levelno for r in told] == [logging.DEBUG] * 3


def test_get_recent_fills_answers_the_account_s_fills_with_a_cursor(
    trading: Trading, btc_long: bytes, accounts: list[LocalAccount]
) -> None:
    key, stranger = trading.key(accounts[1], scopes="read,trade"), trading.key(accounts[2], scopes="read")
    before = tool_json(trading.mcp("get_recent_fills", {"api_key": key}))
    answer = tool_json(trading.mcp("partial_close", {"symbol": "BTCUSDT", "api_key": key, "exit_pct": 25}))

    since = tool_json(trading.mcp("get_recent_fills", {"api_key": key, "after": before["cursor"]}))
    newest = tool_json(trading.mcp("get_recent_fills", {"api_key": key, "limit": 1}))
    nothing_new = tool_json(trading.mcp("get_recent_fills", {"api_key": key, "after": since["cursor"]}))
    others = tool_json(trading.mcp("get_recent_fills", {"api_key": stranger}))
    refused = tool_error(trading.mcp("get_recent_fills", {"api_key": key, "after": "yesterday"}))
    too_far = tool_error(trading.mcp("get_recent_fills", {"api_key": key, "after": "9999999999999999999-0"}))
    too_many = tool_error(trading.mcp("get_recent_fills", {"api_key": key, "limit": 101}))

    assert before["fills"] == []
    (fill,) = since["fills"]
    assert fill["type"] == "position.decreased"
    assert {name: fill["data"][name] for name in FILL_FIELDS} == {name: answer[name] for name in FILL_FIELDS}
    assert fill["data"]["transactionId"] == answer["transactionId"]
    assert newest["fills"] == since["fills"]
    assert newest["cursor"] == since["cursor"]
    assert nothing_new == {**since, "fills": []}
    assert others["fills"] == []
    assert (refused["code"], refused["details"]["field"]) == ("invalid_field", "after")
    assert (too_far["code"], too_far["details"]["field"]) == ("invalid_field", "after")  # no int64 holds it
    assert (too_many["code"], too_many["details"]["field"]) == ("invalid_field", "limit")


def test_get_recent_fills_is_read_only_and_says_where_pushes_come_from(trading: Trading) -> None:
    async def listing() -> Any:
        async with Client(build_mcp_server(lambda: trading.service)) as client:
            return await client.list_tools()

    (tool,) = [t for t in trading.run(listing).tools if t.name == "get_recent_fills"]

    assert tool.annotations is not None
    assert tool.annotations.read_only_hint is True
    assert "GET /api/stream" in (tool.description or "")


def _fills_server(trading: Trading, key: str) -> Any:
    fills = RecentFills(lambda: trading.service, lambda: trading.runtime.notices, key)
    return build_mcp_server(lambda: trading.service, fills=fills)


def _read_fills(result: Any) -> dict[str, Any]:
    (content,) = result.contents
    assert isinstance(content, TextResourceContents)
    parsed: dict[str, Any] = json.loads(content.text)
    return parsed


async def _close_and_hear(client: Client, key: str) -> tuple[list[Any], dict[str, Any]]:
    """A partial close made while `client` listens to the fills resource: the first update heard (within
    `WAIT_S`) and the close's answer."""
    heard: list[Any] = []
    async with client.listen(resource_subscriptions=[FILLS_URI]) as events:
        answer = tool_json(await client.call_tool("partial_close", {"symbol": "BTCUSDT", "api_key": key}))
        with anyio.fail_after(WAIT_S):
            async for event in events:
                heard.append(event)
                break
    return heard, answer


def test_a_listening_session_hears_of_each_new_fill_and_reads_it(
    trading: Trading, btc_long: bytes, accounts: list[LocalAccount]
) -> None:
    key = trading.key(accounts[1])

    async def session() -> tuple[list[Any], dict[str, Any], dict[str, Any], dict[str, Any]]:
        async with Client(_fills_server(trading, key)) as client:
            before = _read_fills(await client.read_resource(FILLS_URI))
            heard, answer = await _close_and_hear(client, key)
            after = _read_fills(await client.read_resource(FILLS_URI))
            return heard, before, after, answer

    heard, before, after, answer = trading.run(session)

    assert heard == [ResourceUpdated(uri=FILLS_URI)]
    assert before["fills"] == []
    (fill,) = after["fills"]
    assert fill["data"]["transactionId"] == answer["transactionId"]
    assert fill["data"]["closed_qty"] == answer["closed_qty"]


@pytest.mark.filterwarnings("ignore:resources/subscribe is removed")
def test_a_session_of_the_older_protocol_subscribes_with_resources_subscribe(
    trading: Trading, btc_long: bytes, accounts: list[LocalAccount]
) -> None:
    key = trading.key(accounts[1])

    async def session() -> list[str]:
        updated = anyio.Event()
        uris: list[str] = []

        async def on_message(message: Any) -> None:
            if isinstance(message, ResourceUpdatedNotification):
                uris.append(str(message.params.uri))
                updated.set()

        async with Client(_fills_server(trading, key), mode="legacy", message_handler=on_message) as client:
            capabilities = client.server_capabilities
            assert capabilities.resources is not None
            assert capabilities.resources.subscribe
            await client.session.subscribe_resource(FILLS_URI)
            await client.call_tool("partial_close", {"symbol": "BTCUSDT", "api_key": key})
            with anyio.fail_after(WAIT_S):
                await updated.wait()
        return uris

    assert trading.run(session) == [FILLS_URI]


@pytest.mark.only_backend("eth-tester")
def test_relayer_mcp_on_stdio_tells_a_subscribed_session_of_a_fill(tmp_path: Path) -> None:
    """The real command: a key made first with `relayer keys create`, given as RELAYER_STREAM_MCP_API_KEY."""
    relayer = require_tool(ROOT / ".venv" / "bin" / "relayer", "the relayer console script")
    journal = str(tmp_path / "journal.sqlite3")
    trader = "0x2B5AD5c4795c026514f8317c7a215E218DcCD6cF"  # the demo world's trader 1 (a BTC long)
    made = subprocess.run(
        [relayer, "keys", "create", "--account", trader, "--scopes", "read,trade", "--journal", journal],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    key = made.stdout.splitlines()[0].strip()
    env = {
        **os.environ,
        "RELAYER_STREAM_MCP_API_KEY": key,
        "RELAYER_PRICE_FEED_INTERVAL_S": "0",
    }
    server = StdioServerParameters(
        command=relayer, args=["mcp", "--journal", journal], env=env, cwd=str(tmp_path)
    )

    async def session() -> tuple[list[Any], dict[str, Any], dict[str, Any]]:
        with anyio.fail_after(120):
            async with Client(stdio_client(server)) as client:
                heard, answer = await _close_and_hear(client, key)
                after = _read_fills(await client.read_resource(FILLS_URI))
                return heard, answer, after

    heard, answer, after = anyio.run(session)

    assert heard == [ResourceUpdated(uri=FILLS_URI)]
    (fill,) = after["fills"]
    assert {name: fill["data"][name] for name in FILL_FIELDS} == {name: answer[name] for name in FILL_FIELDS}
