"""The HTTP edge under a slow or greedy client, on a real server (`relayer serve`, or the app on uvicorn with
`server_config`): stalled bodies and headers are cut off in time, a client hanging up mid-body is a client
error without a traceback, the connection cap answers 503, every log line carries the request id, and the demo
price feed moves only with the demo key and a JSON body."""

from __future__ import annotations

import json
import re
import select
import socket
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import httpx
import pytest

from relayer.chain.connect import embedded_chain
from relayer.chain.deploy import deploy_vault
from relayer.config import HttpSettings, RelaySettings, Settings
from relayer.faces.api.app import create_app
from relayer.faces.api.edge import MAX_HEAD_BYTES, server_config
from relayer.faces.cli import keys as keys_cli
from relayer.stores.keys import SqliteKeyStore
from tests.api.test_serve import Server, _demo_keys, clean_env, serving
from tests.conftest import _free_port
from tests.serving import serving as serving_in_thread

HEADER_TIMEOUT_S = 1
BODY_TIMEOUT_S = 1
SLACK_S = 4
"""Time allowed past a deadline for the server to act on it (a loaded CI machine)."""

STALLED = 300
"""The issue's figure: 300 stalled partial bodies exhausted the server's connections."""

DEMO_TRADER = "0x2B5AD5c4795c026514f8317c7a215E218DcCD6cF"
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ level=\w+ logger=\S+ request=(\S+) ")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`relayer serve` (embedded chain, demo world) with 1 s header and body deadlines."""
    journal = tmp_path_factory.mktemp("edge") / "journal.sqlite3"
    env = clean_env(
        RELAYER_HTTP_HEADER_TIMEOUT_S=str(HEADER_TIMEOUT_S),
        RELAYER_HTTP_BODY_TIMEOUT_S=str(BODY_TIMEOUT_S),
        RELAYER_PRICE_FEED_INTERVAL_S="0",
    )
    with serving("--journal", str(journal), env=env) as running:
        running.journal = journal  # type: ignore[attr-defined]
        yield running


def _port(server: Server) -> int:
    return int(server.base_url.rsplit(":", 1)[1])


def _connect(port: int, data: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    if data:
        sock.sendall(data)
    return sock


def _partial_post(request_id: str, path: str = "/api/closeposition") -> bytes:
    """A POST's headers and the first bytes of its 100-byte body (the rest never comes)."""
    return (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        "accept: application/json, text/event-stream\r\n"
        f"content-length: 100\r\nx-request-id: {request_id}\r\n\r\n"
        '{"positionId": "0x'
    ).encode()


def _read_to_eof(sock: socket.socket, deadline: float) -> tuple[bytes, bool]:
    """Everything the server sends until it closes the connection or `deadline` passes; (bytes, closed)."""
    received = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return received, False
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return received, False
        except ConnectionResetError:
            return received, True
        if not chunk:
            return received, True
        received += chunk


def _wait_for_line(server: Server, needle: str, timeout_s: float = 10) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for line in list(server.lines):
            if needle in line:
                return line
        time.sleep(0.05)
    pytest.fail(f"no log line with {needle!r}:\n{server.output[-4000:]}")


def test_stalled_bodies_are_answered_408_in_time_and_the_server_stays_up(server: Server) -> None:
    """The issue's attack: 300 connections each send headers and part of a body, then stall. Each is
    answered 408 `request_timeout` and closed within the body deadline (the old server held them all, with no
    deadline at all); a normal request is answered meanwhile; the log gets a bounded number of lines, and no
    traceback."""
    first_line = len(server.lines)
    started = time.monotonic()
    stalled = [_connect(_port(server), _partial_post(f"stall-{i}")) for i in range(STALLED)]
    health = httpx.get(server.base_url + "/health", timeout=10)
    answers = [_read_to_eof(sock, started + BODY_TIMEOUT_S + SLACK_S) for sock in stalled]
    elapsed_s = time.monotonic() - started
    for sock in stalled:
        sock.close()

    assert health.status_code == 200
    assert all(closed for _, closed in answers)
    assert all(data.startswith(b"HTTP/1.1 408 ") for data, _ in answers), answers[0]
    assert all(b'"request_timeout"' in data for data, _ in answers)
    assert all(b"connection: close" in data for data, _ in answers)
    assert elapsed_s < BODY_TIMEOUT_S + SLACK_S
    _wait_for_line(server, f"request=stall-{STALLED - 1} method=POST path=/api/closeposition status=408")
    written = server.lines[first_line:]
    assert "Traceback" not in "\n".join(written)
    assert len(written) <= 2 * STALLED + 20  # one line for the timeout and one for the answer, per request
    assert sum("status=408" in line for line in written) == STALLED


@pytest.mark.parametrize("path", ["/api/closeposition", "/mcp/"])
def test_a_client_hanging_up_mid_body_is_a_client_error_without_traceback(server: Server, path: str) -> None:
    """The old server logged this as a 500 with a 118-line traceback (REST) or a traceback (MCP mount)."""
    first_line = len(server.lines)
    rid = f"gone-{path.strip('/').replace('/', '-')}"
    with closing(_connect(_port(server), _partial_post(rid, path))):
        time.sleep(0.2)

    answered = _wait_for_line(server, f"request={rid} method=POST path={path} status=")
    time.sleep(0.3)  # anything logged after the answer
    written = server.lines[first_line:]
    assert answered.endswith("status=400")
    assert any(f"request={rid}" in line and "client_disconnected" in line for line in written)
    assert "Traceback" not in "\n".join(written)
    assert not any("level=ERROR" in line for line in written)


def test_headers_that_never_finish_are_cut_off(server: Server) -> None:
    """Slowloris: headers trickled a line at a time never complete a request; the connection is answered
    408 and closed after the header deadline, however often a byte arrives. A connection that sends nothing
    is closed silently, and so is an idle keep-alive connection after its answer."""
    port = _port(server)
    started = time.monotonic()
    silent = _connect(port)
    trickling = _connect(port, b"GET /health HTTP/1.1\r\nhost: t\r\n")
    kept_alive = _connect(port, b"GET /health HTTP/1.1\r\nhost: t\r\n\r\n")
    deadline = started + HEADER_TIMEOUT_S + SLACK_S
    trickled = b""
    trickle_closed = False
    while time.monotonic() < deadline and not trickle_closed:
        try:
            trickling.sendall(b"x-slow: 1\r\n")
        except OSError:  # closed by the server between two reads
            trickle_closed = True
            break
        readable, _, _ = select.select([trickling], [], [], 0.25)
        if readable:
            data, trickle_closed = _read_to_eof(trickling, deadline)
            trickled += data
    silent_answer = _read_to_eof(silent, deadline)
    kept_answer = _read_to_eof(kept_alive, deadline + 6)  # keep-alive is 5 s, the header deadline 1 s
    elapsed_s = time.monotonic() - started
    for sock in (silent, trickling, kept_alive):
        sock.close()

    assert trickle_closed
    assert trickled.startswith(b"HTTP/1.1 408 "), trickled
    assert b'"request_timeout"' in trickled
    assert silent_answer == (b"", True)
    data, closed = kept_answer
    assert closed
    assert data.startswith(b"HTTP/1.1 200 ")
    assert data.count(b"HTTP/1.1") == 1  # no stray 408 on an idle connection
    assert elapsed_s < HEADER_TIMEOUT_S + SLACK_S + 1


def test_a_request_head_above_the_limit_is_refused_431_however_it_arrives(server: Server) -> None:
    """httptools holds any head it is sent (h11 stopped at 16 KiB): the server counts it and stops there. A
    head just under the limit, and a large body arriving in the same packet as its head, are served."""
    port = _port(server)
    deadline = time.monotonic() + 10
    at_once = _connect(
        port, b"GET /health HTTP/1.1\r\nhost: t\r\nx-big: " + b"a" * MAX_HEAD_BYTES + b"\r\n\r\n"
    )
    in_pieces = _connect(port, b"GET /health HTTP/1.1\r\nhost: t\r\n")
    for _ in range(MAX_HEAD_BYTES // 1000 + 2):
        try:
            in_pieces.sendall(b"x-pad: " + b"b" * 1000 + b"\r\n")
        except OSError:  # refused and closed between two pieces
            break
        time.sleep(0.01)
    pad = MAX_HEAD_BYTES - 200
    under = _connect(port, b"GET /health HTTP/1.1\r\nhost: t\r\nx-pad: " + b"c" * pad + b"\r\n\r\n")
    body = b'{"positionId": "' + b"d" * 60_000 + b'"}'
    with_body = _connect(
        port,
        b"POST /api/closeposition HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n"
        + f"content-length: {len(body)}\r\n\r\n".encode()
        + body,
    )
    refused = [_read_to_eof(sock, deadline) for sock in (at_once, in_pieces)]
    served = [_read_head(sock, deadline) for sock in (under, with_body)]
    for sock in (at_once, in_pieces, under, with_body):
        sock.close()

    for data, closed in refused:
        assert closed
        assert data.startswith(b"HTTP/1.1 431 "), data[:200]
        error = json.loads(data.split(b"\r\n\r\n", 1)[1])["error"]
        assert (error["code"], error["details"]) == ("http_error", {"maxBytes": MAX_HEAD_BYTES})
    assert served[0].startswith(b"http/1.1 200"), served[0]
    assert served[1].startswith(b"http/1.1 422"), served[1]  # the body was read and refused as a field


def test_every_log_line_carries_the_request_id(server: Server) -> None:
    httpx.get(server.base_url + "/api/markets", headers={"x-request-id": "ids-1"}, timeout=10)
    _wait_for_line(server, "request=ids-1 method=GET path=/api/markets status=200")

    logged = [line for line in server.lines if re.match(r"^\d{4}-\d\d-\d\d ", line)]
    assert len(logged) > 5
    assert all(LOG_LINE.match(line) for line in logged), [x for x in logged if not LOG_LINE.match(x)]
    outside = [line for line in logged if "logger=uvicorn.error" in line]
    assert outside
    assert all("request=- " in line for line in outside)  # the server's start: no request


def test_the_demo_price_feed_moves_only_with_the_demo_key_and_a_json_body(server: Server) -> None:
    """Any web page could move the old demo feed (no key, any content type)."""
    trade_key, read_key = _demo_keys(server.output)
    with closing(SqliteKeyStore(server.journal)) as store:  # type: ignore[attr-defined]
        user_key, _ = keys_cli.create_key(store, account=DEMO_TRADER, scopes="read,trade")
    url = server.base_url + "/api/demo/pricefeed"
    body = {"symbol": "BTCUSDT", "price": "88888"}

    def post(key: str | None, content: bytes, content_type: str) -> httpx.Response:
        headers = {"content-type": content_type}
        if key is not None:
            headers["authorization"] = f"Bearer {key}"
        return httpx.post(url, headers=headers, content=content, timeout=10)

    as_json = json.dumps(body).encode()
    anonymous = post(None, as_json, "application/json")
    read_only = post(read_key, as_json, "application/json")
    not_demo = post(user_key, as_json, "application/json")
    as_text = post(trade_key, b'{"symbol": "BTCUSDT", "price": "77777"}', "text/plain")
    as_form = post(trade_key, b"symbol=BTCUSDT&price=77777", "application/x-www-form-urlencoded")
    before = httpx.get(url, timeout=10).json()["prices"]["BTCUSDT"]
    moved = post(trade_key, as_json, "application/json; charset=utf-8")

    assert (anonymous.status_code, anonymous.json()["error"]["code"]) == (401, "unauthenticated")
    assert (read_only.status_code, read_only.json()["error"]["code"]) == (403, "insufficient_scope")
    assert (not_demo.status_code, not_demo.json()["error"]["code"]) == (403, "insufficient_scope")
    for refused in (as_text, as_form):
        assert (refused.status_code, refused.json()["error"]["code"]) == (415, "unsupported_media_type")
    assert before not in {"77777", "88888"}
    assert moved.status_code == 200, moved.text
    assert moved.json()["prices"]["BTCUSDT"] == "88888"


@pytest.fixture
def capped(tmp_path: Path) -> Iterator[str]:
    """The app on uvicorn via `server_config`, capped at 3 open connections."""
    chain = embedded_chain()
    deployment = deploy_vault(chain.w3, chain.test_accounts()[0])
    port = _free_port()
    settings = Settings(
        vault_address=deployment.address,
        host="127.0.0.1",
        port=port,
        relay=RelaySettings(journal_path=tmp_path / "journal.sqlite3"),
        keeper_interval_s=0,
        http=HttpSettings(max_connections=3, header_timeout_s=30),
    )
    with serving_in_thread(server_config(create_app(settings, chain=chain), settings)):
        yield f"http://127.0.0.1:{port}"


def test_past_the_connection_cap_a_request_is_answered_503_and_room_comes_back(capped: str) -> None:
    port = int(capped.rsplit(":", 1)[1])
    idle = [_connect(port) for _ in range(3)]
    time.sleep(0.3)  # accepted by the server
    refused = httpx.get(capped + "/health", timeout=10)
    for sock in idle:
        sock.close()
    time.sleep(0.3)
    served = httpx.get(capped + "/health", timeout=10)

    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "too_many_connections"
    assert refused.json()["error"]["details"] == {"maxConnections": 3}
    assert refused.headers["retry-after"] == "1"
    assert refused.headers["connection"] == "close"
    assert served.status_code == 200


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_the_mcp_endpoint_holds_no_stream_open_so_idle_clients_cannot_fill_the_cap(
    capped: str, method: str
) -> None:
    """A GET with `Accept: text/event-stream` opened the transport's server-push stream, held until the
    client left, past every timeout: three of them filled a cap of 3 and everyone else got 503."""
    port = int(capped.rsplit(":", 1)[1])
    request = f"{method} /mcp/ HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n".encode()
    streams = [_connect(port, request) for _ in range(3)]
    heads = [_read_head(sock, time.monotonic() + 10) for sock in streams]
    for sock in streams:  # an answered request: the client goes (a stream would have kept it)
        sock.close()
    time.sleep(0.3)
    health = httpx.get(capped + "/health", timeout=10)

    for head in heads:
        assert head.startswith(b"http/1.1 405"), head[:200]
        assert b"allow: post" in head
        assert b"text/event-stream" not in head
    assert health.status_code == 200, health.text


def _read_head(sock: socket.socket, deadline: float) -> bytes:
    """The response's status line and headers, lower-cased (b"" if none came by `deadline`)."""
    received = b""
    while b"\r\n\r\n" not in received and time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            break
        received += chunk
    return received.split(b"\r\n\r\n", 1)[0].lower()
