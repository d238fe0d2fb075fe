"""The operator console in a real browser: Debian's headless Chromium, driven by Playwright, against the real
app on uvicorn (relay loop and keeper running).

The page asks for an admin key, renders the signers, spend, queue, transactions and keeper orders from
`/api/console`, and updates without a reload when a transaction is relayed (through `/api/stream` when the
server has it, else by polling). A wrong key and a key without the admin scope get a clear error; the page
sends a strict CSP and loads nothing from another origin. A screenshot is kept in `.artifacts/console.png`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, Request, Route, expect, sync_playwright

from tests.conftest import ROOT
from tests.console.conftest import CHROMIUM_ARGS, TAKE_PROFIT_USD, Console

ARTIFACTS = ROOT / ".artifacts"
LIVE_UPDATE_TIMEOUT_MS = 5_000
"""Through the stream: well within the page's 15 s refresh while live, so only a notice can explain it."""
POLLED_UPDATE_TIMEOUT_MS = 15_000
"""Without a stream the page polls every 3 s; this only bounds a broken run."""


@pytest.fixture
def browser(chromium_path: str) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            launched.close()


def _row(page: Page, table: str, row_id: str) -> str:
    return f'#{table} tbody tr[data-id="{row_id}"]'


def _open(page: Page, console: Console, key: str) -> None:
    page.fill("#key", key)
    page.click("#open")


def test_the_console_renders_live_data_and_updates_without_a_reload(
    console: Console, browser: Browser
) -> None:
    first = console.partial_close(25)
    first_record = console.wait_final(first["transactionId"])
    assert first_record["status"] == "confirmed"

    page = browser.new_page()
    requests: list[Request] = []

    def record(request: Request) -> None:
        requests.append(request)

    page.on("request", record)
    response = page.goto(console.url + "/console")
    assert response is not None
    assert response.status == 200
    headers = response.headers
    csp = headers["content-security-policy"]
    assert "default-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert "'unsafe-inline'" not in csp
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    expect(page.locator("#connection")).to_have_text("disconnected")

    # A wrong key, then a key without the admin scope: a clear error, no data, the key not kept.
    _open(page, console, "vrk_not-a-key")
    expect(page.locator("#error")).to_be_visible()
    expect(page.locator("#error")).to_contain_text("unauthenticated")
    expect(page.locator("#views")).to_be_hidden()
    _open(page, console, console.read_key)
    expect(page.locator("#error")).to_contain_text("admin scope")
    expect(page.locator("#views")).to_be_hidden()
    assert page.evaluate("sessionStorage.length") == 0

    _open(page, console, console.admin_key)
    expect(page.locator("#views")).to_be_visible()
    expect(page.locator("#error")).to_be_hidden()
    expect(page.locator("#login")).to_be_hidden()
    assert page.evaluate("sessionStorage.getItem('vault-relayer.console.key')") == console.admin_key
    assert console.admin_key not in page.url

    snapshot = console.api("GET", "/api/console", console.admin_key).json()
    for signer in console.signers:
        row = page.locator(_row(page, "signers", signer))
        expect(row.locator('[data-col="address"]')).to_have_text(signer)
        shown = next(s for s in snapshot["signers"] if s["address"] == signer)
        expect(row.locator('[data-col="balance-wei"]')).to_have_text(shown["balanceWei"])
        assert int(shown["balanceWei"]) > 0
    expect(page.locator('#spend [data-col="cap"]')).to_have_text("10")  # the default daily cap, 10^19 wei
    expect(page.locator('#spend [data-col="spent"]')).to_have_text(snapshot["spend"]["today"]["spentEther"])
    expect(page.locator(_row(page, "queue", "confirmed") + ' [data-col="count"]')).to_have_text("1")
    first_row = page.locator(_row(page, "transactions", first["transactionId"]))
    expect(first_row.locator('[data-col="status"]')).to_have_text("confirmed")
    expect(first_row.locator('[data-col="closed"]')).to_have_text(first["closed_qty"])
    expect(first_row.locator('[data-col="remaining"]')).to_have_text(first["remaining_qty"])
    expect(first_row.locator('[data-col="pnl"]')).to_have_text(first["realized_pnl_usd"])
    order = page.locator(_row(page, "orders", f"{console.position_id}:take_profit"))
    expect(order.locator('[data-col="price"]')).to_have_text(TAKE_PROFIT_USD)
    expect(page.locator("#connection")).to_have_text("live" if console.streams else "polling")

    # A transaction relayed while the page is open appears, reaches its final status and shows its fill.
    page.evaluate("window.__sameDocument = true")
    second = console.partial_close(50)
    second_row = page.locator(_row(page, "transactions", second["transactionId"]))
    timeout = LIVE_UPDATE_TIMEOUT_MS if console.streams else POLLED_UPDATE_TIMEOUT_MS
    expect(second_row.locator('[data-col="status"]')).to_have_text("confirmed", timeout=timeout)
    expect(second_row.locator('[data-col="closed"]')).to_have_text(second["closed_qty"])
    expect(page.locator(_row(page, "queue", "confirmed") + ' [data-col="count"]')).to_have_text("2")
    assert page.evaluate("window.__sameDocument") is True  # updated in place, not reloaded

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "console.png"), full_page=True)

    origins = {request.url.split("/", 3)[2] for request in requests}
    assert origins == {console.url.split("/", 3)[2]}, [request.url for request in requests]
    assert {request.url for request in requests} >= {
        console.url + "/console",
        console.url + "/console/console.js",
        console.url + "/console/console.css",
        console.url + "/api/console",
    }
    assert all(console.admin_key not in request.url for request in requests)


def test_forgetting_the_key_clears_the_page(console: Console, browser: Browser) -> None:
    page = browser.new_page()
    page.goto(console.url + "/console")
    _open(page, console, console.admin_key)
    expect(page.locator("#views")).to_be_visible()
    page.reload()  # the key survives a reload of the tab (sessionStorage)
    expect(page.locator("#views")).to_be_visible()

    page.click("#forget")

    expect(page.locator("#views")).to_be_hidden()
    expect(page.locator("#login")).to_be_visible()
    expect(page.locator("#connection")).to_have_text("disconnected")
    assert page.evaluate("sessionStorage.length") == 0


SCRIPTED_STREAM = (
    ": a heartbeat comment\r\n\r\n"
    "id: 0-5\r\nevent: transaction.status\r\n"
    'data: {"id":"evt_5","type":"transaction.status","timestamp":1,"chainId":1,\r\n'
    'data: "data":{"transactionId":"none","status":"mined"}}\r\n\r\n'
    "id: 0-6\nevent: order.executed\ndata: not json\n\n"
    "id: 0-7\revent: position.decreased\r"
    'data: {"id":"evt_7","type":"position.decreased","timestamp":1,"chainId":1,"data":{}}\r\r'
)
"""Three notices in every line ending SSE allows, one split over two `data:` lines, a comment, a bad body."""


def test_the_stream_reader_parses_events_and_resumes_from_the_last_id(
    console: Console, browser: Browser
) -> None:
    """The page's own SSE reader (fetch + ReadableStream), against a scripted `/api/stream` answered in the
    browser: it sends the key as a header, starts from the snapshot's cursor, refreshes the snapshot on
    notices, and reconnects after the stream ends with `Last-Event-ID` = the last id it read."""
    page = browser.new_page()
    streams: list[dict[str, str]] = []
    snapshots: list[str] = []

    def scripted(route: Route) -> None:
        streams.append(route.request.headers)
        if len(streams) == 1:
            route.fulfill(status=200, headers={"content-type": "text/event-stream"}, body=SCRIPTED_STREAM)
        else:
            route.fulfill(status=404, json={"error": {"code": "not_found", "message": "scripted"}})

    def record(request: Request) -> None:
        if request.url.endswith("/api/console"):
            snapshots.append(request.url)

    page.route("**/api/stream", scripted)
    page.on("request", record)
    page.goto(console.url + "/console")
    cursor = console.api("GET", "/api/console", console.admin_key).json()["cursor"]
    _open(page, console, console.admin_key)
    expect(page.locator("#views")).to_be_visible()

    for _ in range(200):
        if len(streams) >= 2:
            break
        page.wait_for_timeout(50)
    assert len(streams) >= 2, streams
    first, again = streams[0], streams[1]
    assert first["authorization"] == f"Bearer {console.admin_key}"
    assert first["accept"] == "text/event-stream"
    assert first["last-event-id"] == cursor
    assert again["last-event-id"] == "0-7"
    assert len(snapshots) >= 2  # the first load, and the refresh the notices asked for
    expect(page.locator("#connection")).to_have_text("polling")  # the stream is gone: polling meanwhile
    expect(page.locator("#error")).to_be_hidden()


def test_a_relayer_that_goes_away_shows_disconnected(console: Console, browser: Browser) -> None:
    page = browser.new_page()
    page.goto(console.url + "/console")
    _open(page, console, console.admin_key)
    expect(page.locator("#connection")).to_have_text("live" if console.streams else "polling")

    console.server.should_exit = True

    expect(page.locator("#connection")).to_have_text("disconnected", timeout=POLLED_UPDATE_TIMEOUT_MS)
    expect(page.locator("#error")).to_contain_text("does not answer")
    expect(page.locator("#views")).to_be_visible()  # the last snapshot stays on screen
