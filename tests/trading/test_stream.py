"""`GET /api/stream` end to end: the real app on uvicorn (`server_config`, as `relayer serve` runs it), real
API keys, real closes relayed on the chain, read by a real HTTP client as Server-Sent Events."""

from __future__ import annotations

import itertools
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account.signers.local import LocalAccount
from fastapi import FastAPI

from relayer.chain.connect import Chain
from relayer.chain.deploy import Deployment
from relayer.config import HttpSettings, Settings, StreamSettings
from relayer.domain.notices import START, Cursor, notice_id
from relayer.domain.status import TxStatus, can_transition
from relayer.faces.api.app import create_app
from relayer.faces.api.edge import server_config
from relayer.faces.cli import keys as keys_cli
from relayer.runtime import Runtime
from relayer.services.relay.signers import Signer
from relayer.stores.location import StoreLocation
from tests.conftest import _free_port
from tests.serving import serving
from tests.trading.conftest import trading_settings

WAIT_S = 20.0
"""Bounds a broken run; a working one sees each event within a fraction of a second."""

FILL_FIELDS = ("closed_qty", "remaining_qty", "closed_pct", "exit_price", "realized_pnl_usd", "positionId")


@dataclass
class Event:
    id: str | None
    event: str
    data: dict[str, Any]


@dataclass
class Sse:
    """One `GET /api/stream` read on a thread of its own; `close()` hangs up as a client would."""

    url: str
    headers: dict[str, str]
    events: queue.Queue[Event | None] = field(default_factory=queue.Queue)
    status: int | None = None
    body: bytes = b""
    response_headers: dict[str, str] = field(default_factory=dict)
    comments: list[str] = field(default_factory=list)
    opened: threading.Event = field(default_factory=threading.Event)
    ended: threading.Event = field(default_factory=threading.Event)
    _closing: bool = False

    def start(self) -> Sse:
        threading.Thread(target=self._run, daemon=True).start()
        assert self.opened.wait(WAIT_S), "no answer"
        return self

    def _run(self) -> None:
        try:
            http = httpx.Client(timeout=httpx.Timeout(WAIT_S, read=None))
            with http, http.stream("GET", self.url, headers=self.headers) as answer:
                self.status = answer.status_code
                self.response_headers = dict(answer.headers)
                if answer.status_code != 200:
                    self.body = answer.read()
                    self.opened.set()
                    return
                fields: dict[str, str] = {}
                for line in answer.iter_lines():
                    if line.startswith(":"):
                        self.comments.append(line)
                        self.opened.set()
                    elif line:
                        name, _, value = line.partition(":")
                        fields[name] = value.removeprefix(" ")
                    elif fields:
                        data = json.loads(fields["data"])
                        self.events.put(Event(fields.get("id"), fields["event"], data))
                        fields = {}
                    if self._closing:
                        return
        except httpx.HTTPError:
            pass  # the server closed the connection
        finally:
            self.opened.set()
            self.ended.set()
            self.events.put(None)

    def until(self, done: Callable[[list[Event]], bool]) -> list[Event]:
        """Events as they arrive until `done(events so far)`."""
        seen: list[Event] = []
        deadline = time.monotonic() + WAIT_S
        while not done(seen):
            event = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            assert event is not None, f"the stream ended after {[(e.event, e.data) for e in seen]}"
            seen.append(event)
        return seen

    def close(self) -> None:
        self._closing = True  # the next line read (a heartbeat at the latest) ends the thread
        assert self.ended.wait(WAIT_S)


@dataclass
class Served:
    url: str
    app: FastAPI
    traders: list[LocalAccount]
    stack: ExitStack

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.app.state.runtime
        return runtime

    def key(self, account: LocalAccount, scopes: str = "read,trade") -> str:
        key, _ = keys_cli.create_key(self.runtime.keys, account=account.address, scopes=scopes)
        return key

    def stream(self, key: str | None, **headers: str) -> Sse:
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        after = headers.pop("after", None)
        url = f"{self.url}/api/stream" + ("" if after is None else f"?after={after}")
        return Sse(url, headers).start()

    def partial_close(self, key: str, exit_pct: int = 33) -> dict[str, Any]:
        answer = httpx.post(
            f"{self.url}/api/partialclose",
            json={"symbol": "BTCUSDT", "exit_pct": exit_pct},
            headers={"Authorization": f"Bearer {key}"},
            timeout=WAIT_S,
        )
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    def stop(self) -> None:
        self.stack.close()


@pytest.fixture
def serve(
    chain: Chain,
    deployment: Deployment,
    accounts: list[LocalAccount],
    approve_operators: Callable[..., None],
    open_position: Callable[..., bytes],
    set_market_price: Callable[[str, str], None],
    tmp_path: Path,
) -> Iterator[Callable[..., Served]]:
    """Factory: the app on uvicorn with traders 1 and 2 each holding a 1 BTC long (operators approved)."""
    stacks: list[ExitStack] = []

    def _serve(store: StoreLocation | None = None, **settings: Any) -> Served:
        for trader in accounts[1:3]:
            approve_operators(trader)
            open_position(market="BTCUSDT", is_long=True, size="1", owner=trader)
        set_market_price("BTCUSDT", "96500")
        where = store or StoreLocation(tmp_path / "journal.sqlite3")
        port = _free_port()
        config = trading_settings(
            chain,
            deployment,
            where.journal_path,
            database_url=where.database_url,
            host="127.0.0.1",
            port=port,
            **settings,
        )
        app = create_app(config, chain=chain, signers=[Signer(accounts[5]), Signer(accounts[6])])
        stack = ExitStack()
        stack.enter_context(serving(server_config(app, config)))
        stacks.append(stack)
        return Served(f"http://127.0.0.1:{port}", app, accounts[1:4], stack)

    yield _serve
    for stack in reversed(stacks):
        stack.close()


def _fast(**extra: Any) -> StreamSettings:
    return StreamSettings(heartbeat_s=0.2, poll_interval_s=0.05, **extra)


def _of(events: list[Event], transaction_id: str) -> list[Event]:
    return [e for e in events if e.data["data"].get("transactionId") == transaction_id]


def _has_fill(transaction_id: str) -> Callable[[list[Event]], bool]:
    def done(events: list[Event]) -> bool:
        return any(e.event == "position.decreased" for e in _of(events, transaction_id))

    return done


def test_a_partial_close_streams_its_statuses_and_the_answer_s_fill(
    serve: Callable[..., Served], store: StoreLocation
) -> None:
    served = serve(store, stream=_fast())
    key = served.key(served.traders[0])
    sse = served.stream(key)

    answer = served.partial_close(key)
    events = sse.until(_has_fill(answer["transactionId"]))
    sse.close()

    assert sse.status == 200
    assert sse.response_headers["content-type"].startswith("text/event-stream")
    mine = _of(events, answer["transactionId"])
    statuses = [e.data["data"]["status"] for e in mine if e.event == "transaction.status"]
    # queued, then mined (through submitted, unless the relay loop read the receipt before the broadcast
    # noted it: anvil mines inside eth_sendRawTransaction), each move one the state machine allows
    assert statuses[0] == "queued", statuses
    assert "mined" in statuses, statuses
    assert all(can_transition(TxStatus(a), TxStatus(b)) for a, b in itertools.pairwise(statuses)), statuses
    (fill,) = [e for e in mine if e.event == "position.decreased"]
    assert {name: fill.data["data"][name] for name in FILL_FIELDS} == {
        name: answer[name] for name in FILL_FIELDS
    }
    assert fill.data["data"]["transactionHash"] == answer["transactionHash"]
    assert fill.data["type"] == "position.decreased"
    assert fill.data["chainId"] == served.runtime.client.chain_id
    cursors = [Cursor.parse(e.id or "") for e in events]
    assert all(c is not None for c in cursors)
    assert cursors == sorted(cursors, key=lambda c: (c.txn, c.id) if c else (0, 0))
    assert len(set(cursors)) == len(cursors)
    database_id = served.runtime.require_relay().journal.notices_after(START, limit=1)[0].database_id
    assert database_id is not None  # made once by schema 8, random
    assert len(database_id) == 16
    assert [e.data["id"] for e in events] == [notice_id(database_id, c.id) for c in cursors if c]


def test_resuming_with_last_event_id_loses_nothing_and_repeats_nothing(serve: Callable[..., Served]) -> None:
    served = serve(stream=_fast())
    key = served.key(served.traders[0])
    witness = served.stream(key)  # open throughout: everything the account was told
    first = served.stream(key)
    one = served.partial_close(key)
    seen = first.until(_has_fill(one["transactionId"]))
    first.close()  # the client drops mid-way: it kept the first two events only
    kept = seen[:2]
    two = served.partial_close(key)  # told while nobody reads for it but the witness

    resumed = served.stream(key, **{"Last-Event-ID": kept[-1].id or ""})
    after = resumed.until(_has_fill(two["transactionId"]))
    everything = witness.until(_has_fill(two["transactionId"]))
    by_query = served.stream(key, after=kept[-1].id or "").until(_has_fill(two["transactionId"]))
    for sse in (resumed, witness):
        sse.close()

    assert [e.id for e in kept + after] == [e.id for e in everything]
    assert [e.id for e in by_query] == [e.id for e in after]
    assert len({e.id for e in after}) == len(after)


def test_a_key_sees_its_account_and_an_admin_key_sees_every_account(
    serve: Callable[..., Served],
) -> None:
    served = serve(stream=_fast())
    a, b = served.key(served.traders[0]), served.key(served.traders[1])
    admin = served.key(served.traders[2], scopes="read,admin")
    streams = {name: served.stream(key) for name, key in (("a", a), ("b", b), ("admin", admin))}

    of_a, of_b = served.partial_close(a), served.partial_close(b)
    both = streams["admin"].until(
        lambda es: _has_fill(of_a["transactionId"])(es) and _has_fill(of_b["transactionId"])(es)
    )
    seen_a = streams["a"].until(_has_fill(of_a["transactionId"]))
    seen_b = streams["b"].until(_has_fill(of_b["transactionId"]))
    time.sleep(0.5)  # anything misrouted would be queued by now
    for sse in streams.values():
        sse.close()
    late_a = [e for e in iter(streams["a"].events.get, None)]
    late_b = [e for e in iter(streams["b"].events.get, None)]

    ids_of = {e.data["data"]["transactionId"] for e in both}
    assert ids_of == {of_a["transactionId"], of_b["transactionId"]}
    assert {e.data["data"]["transactionId"] for e in seen_a + late_a} == {of_a["transactionId"]}
    assert {e.data["data"]["transactionId"] for e in seen_b + late_b} == {of_b["transactionId"]}


def test_a_key_holds_at_most_its_cap_of_streams_and_a_closed_one_frees_its_slot(
    serve: Callable[..., Served], caplog: pytest.LogCaptureFixture
) -> None:
    served = serve(stream=_fast(max_per_key=2))
    key = served.key(served.traders[0], scopes="read")
    open_two = [served.stream(key), served.stream(key)]

    refused = served.stream(key)
    other_key = served.stream(served.key(served.traders[0], scopes="read"))  # the cap is per key
    open_two[0].close()
    deadline = time.monotonic() + WAIT_S
    while served.runtime.notices is not None and served.runtime.notices.subscribers > 2:
        assert time.monotonic() < deadline, "the closed stream still holds its slot"
        time.sleep(0.02)
    again = served.stream(key)

    assert refused.status == 429
    assert json.loads(refused.body)["error"]["code"] == "too_many_streams"
    assert refused.response_headers["retry-after"] == "1"
    assert (other_key.status, again.status) == (200, 200)
    for sse in (open_two[1], other_key, again):
        sse.close()
    feed = served.runtime.notices
    assert feed is not None
    deadline = time.monotonic() + WAIT_S
    while feed.subscribers:  # the server hears the hang-ups (a slot is freed with its subscription)
        assert time.monotonic() < deadline, "a stream outlived its client"
        time.sleep(0.02)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []  # no traceback


@pytest.mark.parametrize(
    ("given", "field"),
    [
        ({"Last-Event-ID": "42"}, "Last-Event-ID"),
        ({"after": "1-x"}, "after"),
        ({"Last-Event-ID": "9999999999999999999-0"}, "Last-Event-ID"),  # past a signed 64-bit integer
        ({"after": "0-9223372036854775808"}, "after"),
    ],
)
def test_a_malformed_resume_cursor_is_a_422(
    serve: Callable[..., Served], given: dict[str, str], field: str
) -> None:
    served = serve(stream=_fast())
    key = served.key(served.traders[0], scopes="read")

    refused = served.stream(key, **given)
    anonymous = served.stream(None)

    assert refused.status == 422
    error = json.loads(refused.body)["error"]
    assert (error["code"], error["details"]["field"]) == ("invalid_field", field)
    assert anonymous.status == 401


def test_a_stream_outlives_the_header_and_body_timeouts_and_ends_at_shutdown(
    serve: Callable[..., Served],
) -> None:
    served = serve(
        stream=_fast(),
        http=HttpSettings(header_timeout_s=0.3, body_timeout_s=0.3, keep_alive_s=1),
    )
    key = served.key(served.traders[0])
    sse = served.stream(key)

    time.sleep(1.5)  # five times either timeout
    answer = served.partial_close(key)
    events = sse.until(_has_fill(answer["transactionId"]))
    beats = len(sse.comments)
    started = time.monotonic()
    served.stop()

    assert any(e.event == "position.decreased" for e in events)
    assert beats >= 5  # `: stream open` and a keep-alive every 0.2 s
    assert sse.ended.wait(WAIT_S)
    assert time.monotonic() - started < 5.0  # uvicorn would otherwise wait for the stream forever


def test_the_stream_s_statuses_are_documented() -> None:
    document = create_app(Settings(vault_address="0x" + "11" * 20)).openapi()
    answers = document["paths"]["/api/stream"]["get"]["responses"]

    assert set(answers) >= {"200", "401", "403", "422", "429", "503"}
    assert set(answers["200"]["content"]) == {"text/event-stream"}
    assert "`too_many_streams`" in answers["429"]["description"]
    assert "Retry-After" in answers["429"]["headers"]
    parameters = document["paths"]["/api/stream"]["get"]["parameters"]
    assert {"after", "Last-Event-ID", "Authorization"} <= {p["name"] for p in parameters}
