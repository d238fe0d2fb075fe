"""`relayer serve` with no arguments: the embedded chain, the demo world, and a working API on a real port."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from eth_account import Account

from tests.conftest import ROOT


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    def __init__(self, process: subprocess.Popen[str], base_url: str) -> None:
        self.process = process
        self.base_url = base_url
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def server() -> Iterator[Server]:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "relayer.cli", "serve", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    running = Server(process, f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"relayer serve exited with {process.returncode}:\n{running.output}")
            try:
                if httpx.get(running.base_url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        else:
            pytest.fail(f"relayer serve did not answer /health within 90 s:\n{running.output}")
        yield running
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def test_serve_without_arguments_is_ready_to_try(server: Server) -> None:
    output = server.output
    assert server.base_url in output
    vault = re.search(r"vault (0x[0-9a-fA-F]{40})", output)
    assert vault is not None
    keys = dict(re.findall(r"(0x[0-9a-fA-F]{40})  key (0x[0-9a-f]{64})", output))
    assert len(keys) == 3
    for address, key in keys.items():
        assert Account.from_key(key).address == address  # the printed keys really sign for the demo accounts
    positions = re.findall(
        r"^  (0x[0-9a-f]{64})  (0x[0-9a-fA-F]{40})  (\w+) (long|short)", output, re.MULTILINE
    )
    assert {(market, side) for _, _, market, side in positions} >= {
        ("BTCUSDT", "long"),
        ("BTCUSDT", "short"),
        ("ETHUSDT", "long"),
        ("ETHUSDT", "short"),
    }
    assert "curl" in output

    health = httpx.get(server.base_url + "/health").json()
    assert health["vaultAddress"] == vault.group(1)
    markets = {m["symbol"] for m in httpx.get(server.base_url + "/api/markets").json()["markets"]}
    assert {"BTCUSDT", "ETHUSDT"} <= markets

    position_id, owner, _, _ = positions[0]
    response = httpx.post(
        server.base_url + "/api/closeposition", json={"positionId": position_id, "sizeDelta": "0.1"}
    )
    assert response.status_code == 200, response.text
    built = response.json()
    assert built["transaction"]["from"] == owner
    signed = Account.from_key(keys[owner]).sign_transaction(built["transaction"])
    assert Account.recover_transaction(signed.raw_transaction) == owner
