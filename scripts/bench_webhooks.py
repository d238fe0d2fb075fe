"""Benchmark: webhook delivery latency, and a receiver that is down for a while.

A fresh anvil (automine), the relay as `relayer serve` runs it (its background loop, a SQLite journal, or
PostgreSQL with --database-url), the webhook dispatcher beside it (`WebhookService`, default settings but
for private URLs: the receiver is on loopback), one global subscription and a real HTTP receiver in threads.

- latency: `--count` relayed closePosition calls (`--concurrency` at once); for every notice they make
  (queued, submitted, mined, confirmed, the fill), the time from its status change (the notice's
  `created_at`, written in the transaction of the change) to its first receipt by the receiver: p50 / p99.
- down: the receiver stops listening (connections refused) for `--down-s` seconds (default 60) while
  `--down-count` calls are relayed, then comes back on the same port: every notice must arrive (none lost,
  duplicates counted), and the time to drain after it is back is printed with the attempts it took.

    .venv/bin/python scripts/bench.py webhooks                  # both runs, ~2 minutes
    .venv/bin/python scripts/bench.py webhooks --down-s 0       # the latency run only
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench_relay import anvil  # noqa: E402  # beside this file: scripts/ is on the path

from relayer.chain.client import ChainClient  # noqa: E402
from relayer.chain.connect import Chain, chain_port  # noqa: E402
from relayer.chain.deploy import deploy_vault  # noqa: E402
from relayer.chain.transact import send  # noqa: E402
from relayer.chain.vault import VaultReader  # noqa: E402
from relayer.config import RelaySettings, WebhookSettings  # noqa: E402
from relayer.constants import SIZE_DECIMALS  # noqa: E402
from relayer.domain import calldata  # noqa: E402
from relayer.domain.apikeys import ApiKey, Scope  # noqa: E402
from relayer.domain.markets import symbol_to_bytes32  # noqa: E402
from relayer.domain.notices import notice_id  # noqa: E402
from relayer.domain.units import to_fixed  # noqa: E402
from relayer.errors import UnauthenticatedError  # noqa: E402
from relayer.services.relay.service import RelayService  # noqa: E402
from relayer.services.relay.signers import Signer  # noqa: E402
from relayer.services.webhooks import WebhookService  # noqa: E402
from relayer.stores.journal import SqliteJournal, SqlJournal  # noqa: E402
from relayer.stores.journal_chains import ChainBinding  # noqa: E402
from relayer.stores.webhooks import WebhookStore  # noqa: E402

CLOSE_STEP = to_fixed(Decimal("0.001"), SIZE_DECIMALS, "size")
"""Each transaction closes 0.001 BTC of one big position."""


@dataclass
class Receiver:
    """A loopback HTTP receiver recording the first receipt time of every `webhook-id` (and repeats)."""

    port: int = 0
    first: dict[str, float] = field(default_factory=dict)
    repeats: int = 0
    down: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    def start(self) -> None:
        receiver = self
        self.down = False

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                if receiver.down:  # a kept-alive connection of the stopped server: drop it unanswered
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                now = time.time()
                msg_id = self.headers.get("webhook-id", "")
                with receiver.lock:
                    if msg_id in receiver.first:
                        receiver.repeats += 1
                    else:
                        receiver.first[msg_id] = now
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = int(server.server_address[1])
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self.down = True
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


def _operator(presented: str | None, scope: Scope) -> ApiKey:
    raise UnauthenticatedError("not used")


@contextmanager
def _world(database_url: str | None) -> Iterator[tuple[Chain, VaultReader, bytes, Any, SqlJournal]]:
    """anvil, the vault, an approved relayer signer, one big position, and a journal bound to the chain."""
    with anvil(None) as chain, tempfile.TemporaryDirectory() as tmp:
        accounts = chain.test_accounts()
        deployer, trader, signer = accounts[0], accounts[1], accounts[5]
        deployment = deploy_vault(chain.w3, deployer, max_price_age_s=10**9)
        vault = VaultReader(chain.w3, deployment.address)
        send(chain.w3, trader, deployment.address, calldata.set_operator(signer.address, True))
        size = CLOSE_STEP * 10_000
        market = symbol_to_bytes32("BTCUSDT")
        send(
            chain.w3, trader, deployment.address, calldata.encode_call("openPosition", market, True, size, 0)
        )
        (position_id,) = vault.position_ids_of(trader.address)
        if database_url is None:
            journal: SqlJournal = SqliteJournal(Path(tmp) / "bench.sqlite3", relaying=True)
        else:
            from relayer.stores.postgres import PostgresDatabase

            journal = SqlJournal(PostgresDatabase(database_url))
        genesis = chain.w3.eth.get_block(0)["hash"]
        journal.bind_to_chain(
            ChainBinding(chain.w3.eth.chain_id, "0x" + bytes(genesis).hex()), now=int(time.time())
        )
        try:
            yield chain, vault, position_id, signer, journal
        finally:
            journal.close()


async def _relay_calls(relay: RelayService, position_id: bytes, count: int, concurrency: int) -> None:
    data = calldata.close_position(position_id, CLOSE_STEP, 0)
    todo = iter(range(count))

    async def client() -> None:
        for _ in todo:
            await relay.submit_call(data)

    await asyncio.gather(*[client() for _ in range(concurrency)])


def _created_at(journal: SqlJournal) -> dict[str, float]:
    """Each notice's creation time by its `webhook-id`."""
    database_id = WebhookStore(journal.db, journal.chain_id or 0).database_id
    rows = journal.db.rows("SELECT id, created_at FROM notices")
    return {notice_id(database_id, int(row["id"])): float(row["created_at"]) for row in rows}


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def _run(
    args: argparse.Namespace,
    journal: SqlJournal,
    chain: Chain,
    vault: VaultReader,
    position_id: bytes,
    signer: Any,
) -> int:
    client = ChainClient(chain_port(chain), vault.address)
    await client.start()
    relay = RelayService(
        chain=client,
        signers=[Signer(signer)],
        settings=RelaySettings(confirmations=1, replace_after_s=600, poll_interval_s=args.relay_poll_s),
        journal=journal,
    )
    settings = WebhookSettings(
        allow_private_urls=True, poll_interval_s=args.poll_s, per_webhook_in_flight=args.per_webhook
    )
    assert journal.chain_id is not None
    hooks = WebhookService(WebhookStore(journal.db, journal.chain_id), settings, _operator)
    receiver = Receiver()
    receiver.start()
    failed = False
    try:
        relay.start()
        hook, _ = await hooks.add(None, receiver.url, None)
        hooks.start()
        hooks.listen(journal)  # as `relayer serve` runs it
        print(
            f"webhooks benchmark: anvil automine, {journal.db.dialect.name} journal, poll {args.poll_s}s,"
            f" relay loop {args.relay_poll_s}s, concurrency {settings.concurrency}"
        )

        # --- latency ---
        started = time.time()
        await _relay_calls(relay, position_id, args.count, args.concurrency)
        expected = await _wait_all(journal, hooks, receiver, started, timeout_s=120)
        created = _created_at(journal)
        latencies = [receiver.first[i] - created[i] for i in expected if i in receiver.first]
        missing = len(expected) - len(latencies)
        print(
            f"  latency: {args.count} transactions, {len(expected)} notices delivered in"
            f" {time.time() - started:.1f}s, {missing} missing, {receiver.repeats} repeats"
        )
        if latencies:
            print(
                f"    status change -> receipt: p50 {_percentile(latencies, 0.5) * 1000:.0f} ms,"
                f" p99 {_percentile(latencies, 0.99) * 1000:.0f} ms,"
                f" max {max(latencies) * 1000:.0f} ms (mean {statistics.mean(latencies) * 1000:.0f} ms)"
            )
        failed = failed or missing > 0

        # --- receiver down ---
        if args.down_s > 0:
            before = set(receiver.first)
            repeats_before = receiver.repeats
            receiver.stop()
            down_at = time.time()
            await _relay_calls(relay, position_id, args.down_count, args.concurrency)
            await asyncio.sleep(max(0.0, args.down_s - (time.time() - down_at)))
            receiver.start()  # the same port
            up_at = time.time()
            expected = await _wait_all(journal, hooks, receiver, down_at, timeout_s=args.down_s * 4 + 120)
            new = [i for i in expected if i not in before]
            arrived = [i for i in new if i in receiver.first]
            drained = max((receiver.first[i] for i in arrived), default=up_at) - up_at
            attempts = [d.attempts for d in hooks.store.deliveries(hook.id, limit=100_000) if d.msg_id in new]
            print(
                f"  receiver down {args.down_s:.0f}s while {args.down_count} transactions relayed:"
                f" {len(new)} notices, {len(arrived)} delivered, {len(new) - len(arrived)} lost,"
                f" {receiver.repeats - repeats_before} repeats"
            )
            print(
                f"    drained {drained:.1f}s after it came back; attempts per delivery: max"
                f" {max(attempts, default=0)}, median {statistics.median(attempts) if attempts else 0}"
            )
            print(f"    deliveries by state: {hooks.store.counts()}")
            failed = failed or len(arrived) != len(new)
    finally:
        await hooks.stop()
        await relay.stop()
        receiver.stop()
        await client.aclose()
    return 1 if failed else 0


async def _wait_all(
    journal: SqlJournal, hooks: WebhookService, receiver: Receiver, since: float, timeout_s: float
) -> list[str]:
    """Wait until the relay has nothing pending and every notice since `since` has arrived; their ids."""
    deadline = time.monotonic() + timeout_s
    while True:
        created = _created_at(journal)
        expected = [i for i, at in created.items() if at >= since - 1]
        settled = not journal.pending()
        if settled and all(i in receiver.first for i in expected):
            return expected
        if time.monotonic() > deadline:
            return expected
        await asyncio.sleep(0.1)


def run(args: argparse.Namespace) -> int:
    with _world(args.database_url) as (chain, vault, position_id, signer, journal):
        return asyncio.run(_run(args, journal, chain, vault, position_id, signer))


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--count", type=int, default=100, help="transactions of the latency run")
    parser.add_argument("--concurrency", type=int, default=4, help="calls submitted at once")
    parser.add_argument("--down-s", type=float, default=60.0, help="how long the receiver is down (0: skip)")
    parser.add_argument("--down-count", type=int, default=20, help="transactions relayed while it is down")
    parser.add_argument(
        "--poll-s",
        type=float,
        default=WebhookSettings().poll_interval_s,
        help="RELAYER_WEBHOOKS_POLL_INTERVAL_S",
    )
    parser.add_argument(
        "--relay-poll-s",
        type=float,
        default=RelaySettings().poll_interval_s,
        help="RELAYER_RELAY_POLL_INTERVAL_S",
    )
    parser.add_argument(
        "--per-webhook",
        type=int,
        default=WebhookSettings().per_webhook_in_flight,
        help="RELAYER_WEBHOOKS_PER_WEBHOOK_IN_FLIGHT",
    )
    parser.add_argument("--database-url", help="PostgreSQL instead of a SQLite journal")
    parser.set_defaults(run=run)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `webhooks` on the shared `scripts/bench.py` runner."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "webhooks", help="webhook delivery latency p50/p99, and a receiver down for a minute"
    )
    _arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    _arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
