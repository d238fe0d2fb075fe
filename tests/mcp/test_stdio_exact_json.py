"""`relayer mcp` on stdio holds every incoming line to the same exact JSON rules as REST and `/mcp/`.

The SDK's client cannot send a key twice (it serializes objects), so this test writes the protocol's lines
itself, as any process on the other end of the pipe can.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from tests.conftest import ROOT, require_tool
from tests.mcp.messages import INITIALIZE, INITIALIZED


def _send(process: subprocess.Popen[str], line: str) -> None:
    assert process.stdin is not None
    process.stdin.write(line + "\n")
    process.stdin.flush()


def _answer(process: subprocess.Popen[str]) -> dict[str, Any]:
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line, "relayer mcp closed its output"
    answer: dict[str, Any] = json.loads(line)
    return answer


def test_a_key_given_twice_on_stdio_is_refused_and_the_session_goes_on(tmp_path: Path) -> None:
    relayer = require_tool(ROOT / ".venv" / "bin" / "relayer", "the relayer console script")
    process = subprocess.Popen(
        [relayer, "mcp", "--journal", str(tmp_path / "journal.sqlite3")],
        cwd=tmp_path,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        _send(process, json.dumps(INITIALIZE))
        assert _answer(process)["id"] == 1
        _send(process, json.dumps(INITIALIZED))
        # Read the SDK's way, the last `dry_run` would win and this would be a real 10% close.
        _send(
            process,
            '{"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "partial_close", '
            '"arguments": {"symbol": "BTCUSDT", "exit_pct": 10, "api_key": "vrk_x", '
            '"dry_run": true, "dry_run": false}}}',
        )
        refusal = _answer(process)
        _send(process, json.dumps({"jsonrpc": "2.0", "id": 8, "method": "tools/list"}))
        listed = _answer(process)
    finally:
        process.kill()
        process.wait(timeout=10)

    assert (refusal["id"], refusal["error"]["code"]) == (7, -32700)
    assert refusal["error"]["data"]["error"]["code"] == "invalid_field"
    assert refusal["error"]["data"]["error"]["details"]["field"] == "dry_run"
    assert listed["id"] == 8
    assert "partial_close" in {tool["name"] for tool in listed["result"]["tools"]}
