"""Benchmark: relayed transactions per second, request to mined receipt, against the naive web3.py loop.

Both sides send the same call (a small `closePosition` by an approved operator) to the same fresh anvil, in
one run. The naive loop is what a script would do: `contract.functions...transact()` then
`wait_for_transaction_receipt`, one at a time. The relayer (its async `RelayService` over a `ChainClient`, as
`relayer serve` runs it) takes every request at once from `--concurrency` concurrent clients (asyncio tasks;
each request simulated, journaled to SQLite with fsync, signed and broadcast), spreads them over `--signers`
accounts with locally allocated nonces, and polls receipts in batches per signer. Both clocks run
from the first request to the last receipt. Afterwards the run checks that every relayer nonce is used once,
contiguously (no gap), with no duplicate transaction, and that the position shrank by exactly what was sent.

    python scripts/bench_relay.py                       # both: anvil with 1 s blocks, then automine
    python scripts/bench_relay.py --block-time 1        # only anvil mining a block every second
    python scripts/bench_relay.py --block-time 0        # only automine (each transaction mined on arrival)
    python scripts/bench.py relay ...                   # the same, through the shared benchmark runner
    python scripts/bench.py relay --observe off,quiet,on  # side by side: observability off, quiet, on

`--observe` (default `on`, as `relayer serve` runs): `off` runs the relayer with the Prometheus metrics off
(the null object), no notices journaled and no webhook dispatcher; `quiet` with `PrometheusMetrics` and
notices, the dispatcher running without a subscription; `on` as `quiet`, with the webhook dispatcher
delivering every notice to one global subscription at a loopback receiver that answers 204 (the deliveries it
got are printed beside the run: the outbox did its work within the figure).
With `--instances` the same reaches every `relayer serve` process as `RELAYER_METRICS_ENABLED`,
`RELAYER_RELAY_NOTICES` and `RELAYER_WEBHOOKS_ENABLED` (the subscription made with `relayer webhooks add
--global` once the instances have started, before the load).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from eth_utils.address import to_checksum_address

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import relay_cluster  # noqa: E402  # beside this file: scripts/ is on the path

from relayer.chain.client import ChainClient  # noqa: E402
from relayer.chain.connect import ANVIL_DEFAULT_KEYS, Chain, chain_port, rpc_chain  # noqa: E402
from relayer.chain.deploy import deploy_vault  # noqa: E402
from relayer.chain.transact import send  # noqa: E402
from relayer.chain.vault import VaultReader  # noqa: E402
from relayer.config import RelaySettings, WebhookSettings  # noqa: E402
from relayer.constants import SIZE_DECIMALS  # noqa: E402
from relayer.domain import calldata  # noqa: E402
from relayer.domain.markets import symbol_to_bytes32  # noqa: E402
from relayer.domain.status import TxStatus  # noqa: E402
from relayer.domain.units import to_fixed  # noqa: E402
from relayer.services.metrics import NO_METRICS, PrometheusMetrics  # noqa: E402
from relayer.services.relay.service import RelayService  # noqa: E402
from relayer.services.relay.signers import Signer  # noqa: E402
from relayer.services.webhooks import WebhookService  # noqa: E402
from relayer.stores.journal import SqliteJournal  # noqa: E402
from relayer.stores.journal_chains import ChainBinding  # noqa: E402
from relayer.stores.webhooks import WebhookStore  # noqa: E402

CLOSE_STEP = to_fixed(Decimal("0.001"), SIZE_DECIMALS, "size")
"""Each benchmark transaction closes 0.001 BTC of one big position."""


@dataclass
class Result:
    name: str
    count: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.count / self.seconds


@contextlib.contextmanager
def anvil(block_time: int | None) -> Iterator[Chain]:
    binary = shutil.which("anvil") or str(ROOT / "node_modules" / ".bin" / "anvil")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    args = [binary, "--host", "127.0.0.1", "--port", str(port), "--silent"]
    if block_time:
        args += ["--block-time", str(block_time)]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise SystemExit("anvil did not start") from None
                time.sleep(0.05)
        yield rpc_chain(f"http://127.0.0.1:{port}", test_keys=list(ANVIL_DEFAULT_KEYS))
    finally:
        process.terminate()
        process.wait(timeout=10)


def naive_loop(chain: Chain, vault: VaultReader, operator: str, position_id: bytes, count: int) -> Result:
    """One at a time: web3.py fills gas (estimate), fees and nonce, sends, then waits for the receipt."""
    function = vault.contract.functions.closePosition(position_id, CLOSE_STEP, 0)
    started = time.perf_counter()
    for _ in range(count):
        tx_hash = function.transact({"from": operator})
        receipt = chain.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=120, poll_latency=0.01)
        assert receipt["status"] == 1
    return Result("naive web3.py loop", count, time.perf_counter() - started)


async def relayer_run(service: RelayService, position_id: bytes, count: int, concurrency: int) -> Result:
    """All requests at once from `concurrency` concurrent clients; then rounds of the relay loop's step until
    every one is mined."""
    data = calldata.close_position(position_id, CLOSE_STEP, 0)
    requests = iter(range(count))

    async def client() -> None:
        for _ in requests:  # shared: each request is taken by exactly one client
            await service.submit_call(data)

    started = time.perf_counter()
    await asyncio.gather(*[client() for _ in range(concurrency)])
    while await service.tick():
        await asyncio.sleep(0.005)
    return Result(
        f"relayer ({concurrency} clients, {len(service.pool.addresses)} signers)",
        count,
        time.perf_counter() - started,
    )


def check_relayer(chain: Chain, service: RelayService, start_nonces: dict[str, int], count: int) -> list[str]:
    """Every record mined once; per signer nonces contiguous from the start; no duplicate hash."""
    problems: list[str] = []
    records = service.journal.all()
    if len(records) != count:
        problems.append(f"{len(records)} records for {count} requests")
    bad = [r.id for r in records if r.status is not TxStatus.CONFIRMED]
    if bad:
        problems.append(f"{len(bad)} records not confirmed")
    nonces: dict[str, list[int]] = defaultdict(list)
    for record in records:
        nonces[record.sender].append(record.nonce)
    for address, used in nonces.items():
        expected = list(range(start_nonces[address], start_nonces[address] + len(used)))
        if sorted(used) != expected:
            problems.append(f"nonce gap or duplicate for {address}")
        if chain.w3.eth.get_transaction_count(to_checksum_address(address)) != expected[-1] + 1:
            problems.append(f"chain nonce of {address} does not match the journal")
    hashes = [r.mined.tx_hash for r in records if r.mined]
    if len(set(hashes)) != len(hashes):
        problems.append("duplicate mined hashes")
    return problems


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `relay` on the shared `scripts/bench.py` runner."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "relay", help="relayed tx/s (request to mined receipt) vs the naive web3.py loop, on anvil"
    )
    _arguments(parser)
    parser.set_defaults(run=run)
    return parser


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--count", type=int, default=None, help="transactions per side (default 300 automine, 40 with blocks)"
    )
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent relayer clients (default 16)")
    parser.add_argument("--signers", type=int, default=4, help="relayer signer accounts, 1..4 (default 4)")
    parser.add_argument(
        "--block-time",
        type=int,
        default=None,
        help="only this mode: anvil --block-time N (0: automine); default: both, 1 s blocks and automine",
    )
    parser.add_argument(
        "--instances",
        help="`relayer serve` processes on one database, e.g. 1,2,3: runs the cluster benchmark"
        " (scripts/relay_cluster.py) instead of the in-process one",
    )
    parser.add_argument(
        "--store", help="with --instances: sqlite, postgres, or both comma-separated (default both)"
    )
    parser.add_argument(
        "--observe",
        default="on",
        help="metrics, notices and the webhook dispatcher (one global subscription to a local receiver):"
        " off, quiet (metrics and notices, no subscription) or on, several in order, e.g. off,quiet,on"
        " (default on, as served)",
    )


OBSERVE_MODES = ("off", "quiet", "on")
"""`off`: metrics, notices and webhooks off; `quiet`: metrics and notices on, the webhook dispatcher running
without a subscription; `on`: as `quiet`, with one global subscription to a local receiver (every notice
delivered)."""


def observe_modes(args: argparse.Namespace) -> list[str]:
    """`--observe` as a list of modes (`OBSERVE_MODES`), in the order given."""
    modes = [part.strip() for part in str(args.observe).split(",") if part.strip()]
    if not modes or any(mode not in OBSERVE_MODES for mode in modes):
        raise SystemExit("--observe takes off, quiet or on, or several comma-separated (e.g. off,quiet,on)")
    return modes


def observe_env(mode: str) -> dict[str, str]:
    """The variables that switch metrics, notices and the webhook dispatcher of a `relayer serve` process
    (private URLs allowed: the bench's receiver is on loopback)."""
    value = "false" if mode == "off" else "true"
    return {
        "RELAYER_METRICS_ENABLED": value,
        "RELAYER_RELAY_NOTICES": value,
        "RELAYER_WEBHOOKS_ENABLED": value,
        "RELAYER_WEBHOOKS_ALLOW_PRIVATE_URLS": value,
    }


def observe_tag(mode: str) -> str:
    """How a run's mode is shown beside its store."""
    return {"off": " -obs", "quiet": " +obs", "on": " +obs+hooks"}[mode]


def start_receiver() -> Any:
    """A loopback receiver counting the webhook deliveries it gets (`bench_webhooks.Receiver`)."""
    import bench_webhooks  # beside this file (imported here: it imports this module)

    receiver = bench_webhooks.Receiver()
    receiver.start()
    return receiver


async def wait_outbox(store: WebhookStore, since_id: int, receiver: Any, timeout_s: float = 60.0) -> str:
    """Wait (at most `timeout_s`, outside the timed run) until every notice after `since_id` has a finished
    delivery; what the outbox and the receiver counted, as a line beside the run."""
    deadline = time.monotonic() + timeout_s
    while True:
        row = store.db.row(
            "SELECT COUNT(*) AS n FROM notices WHERE chain_id = ? AND id > ?", (store.chain_id, since_id)
        )
        notices = 0 if row is None else int(row["n"])
        counts = store.counts()
        finished = counts.get("delivered", 0) + counts.get("failed", 0)
        if (finished >= notices and not counts.get("pending")) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    return (
        f"webhooks: {notices} notices, {counts.get('delivered', 0)} delivered, {counts.get('failed', 0)}"
        f" failed, {counts.get('pending', 0)} pending; the receiver got {len(receiver.first)}"
        f" ({receiver.repeats} repeats)"
    )


def _operator_only(presented: str | None, scope: Any) -> Any:
    raise SystemExit("the bench's webhook service takes no API keys")


@dataclass
class ModeResult:
    mode: str
    naive: Result
    relayed: Result
    problems: list[str]
    webhooks: str | None = None

    @property
    def ratio(self) -> float:
        return self.relayed.per_second / self.naive.per_second


def run_mode(block_time: int, count: int, concurrency: int, signers: int, observe: str = "on") -> ModeResult:
    """One anvil (automine when `block_time` is 0), both sides over the same calls, then the invariants;
    the relayer with metrics and notices (`observe`) or without."""
    with anvil(block_time or None) as chain, tempfile.TemporaryDirectory() as tmp:
        accounts = chain.test_accounts()
        deployer, trader, naive_operator = accounts[0], accounts[1], accounts[4]
        relay_accounts = accounts[5 : 5 + max(1, min(signers, 4))]
        deployment = deploy_vault(chain.w3, deployer, max_price_age_s=10**9)
        vault = VaultReader(chain.w3, deployment.address)
        for operator in [naive_operator, *relay_accounts]:
            send(chain.w3, trader, deployment.address, calldata.set_operator(operator.address, True))
        size = CLOSE_STEP * count * 2
        send(
            chain.w3,
            trader,
            deployment.address,
            calldata.encode_call("openPosition", symbol_to_bytes32("BTCUSDT"), True, size, 0),
        )
        (position_id,) = vault.position_ids_of(trader.address)

        naive = naive_loop(chain, vault, naive_operator.address, position_id, count)

        start_nonces: dict[str, int] = {
            a.address: chain.w3.eth.get_transaction_count(a.address) for a in relay_accounts
        }
        settings = RelaySettings(
            journal_path=Path(tmp) / "bench.sqlite3", confirmations=1, replace_after_s=600
        )

        receiver = start_receiver() if observe == "on" else None
        outbox: list[str] = []

        async def relay() -> tuple[Result, RelayService]:
            metrics = PrometheusMetrics() if observe != "off" else NO_METRICS
            client = ChainClient(chain_port(chain), deployment.address, metrics=metrics)
            await client.start()
            journal = SqliteJournal(settings.journal_path, relaying=True)  # bound as `relayer serve` does
            genesis = chain.w3.eth.get_block(0)["hash"]
            journal.bind_to_chain(
                ChainBinding(chain.w3.eth.chain_id, "0x" + bytes(genesis).hex()), now=int(time.time())
            )
            journal.notices_enabled = observe != "off"
            service = RelayService(
                chain=client,
                signers=[Signer(a) for a in relay_accounts],
                settings=settings,
                metrics=metrics,
                journal=journal,
            )
            hooks: WebhookService | None = None
            try:
                await service.resume()
                if receiver is not None and journal.chain_id is not None:
                    store = WebhookStore(journal.db, journal.chain_id)  # as `relayer serve` runs it
                    hooks = WebhookService(store, WebhookSettings(allow_private_urls=True), _operator_only)
                    hook, _ = await hooks.add(None, receiver.url, None)
                    hooks.start()
                    hooks.listen(journal)
                result = await relayer_run(service, position_id, count, concurrency)
                if hooks is not None and receiver is not None:
                    outbox.append(await wait_outbox(hooks.store, hook.cursor.id, receiver))
                return result, service
            finally:
                if hooks is not None:
                    await hooks.stop()
                await client.aclose()

        try:
            relayed, service = asyncio.run(relay())
        finally:
            if receiver is not None:
                receiver.stop()
        problems = check_relayer(chain, service, start_nonces, count)
        remaining = vault.position(position_id).size
        if remaining != size - 2 * count * CLOSE_STEP:
            problems.append(f"position size {remaining} does not match the transactions sent")
        service.journal.close()
    mode = f"anvil --block-time {block_time}" if block_time else "anvil automine"
    mode += {
        "off": ", metrics, notices and webhooks off",
        "quiet": ", metrics and notices on, no webhook subscription",
        "on": ", metrics, notices and webhooks on (one subscription gets every notice)",
    }[observe]
    return ModeResult(mode, naive, relayed, problems, outbox[0] if outbox else None)


def run(args: argparse.Namespace) -> int:
    if args.instances or args.store:
        return relay_cluster.run(args)
    modes = [1, 0] if args.block_time is None else [args.block_time]
    results = []
    for block_time in modes:
        count = args.count or (40 if block_time else 300)
        for observe in observe_modes(args):  # side by side on the same settings
            results.append(run_mode(block_time, count, args.concurrency, args.signers, observe))
    failed = False
    for result in results:
        print(f"relay benchmark on {result.mode}: {result.naive.count} closePosition transactions per side")
        for side in (result.naive, result.relayed):
            print(f"  {side.name:<36} {side.per_second:8.1f} tx/s  ({side.seconds:.2f} s)")
        print(f"  ratio relayer / naive: {result.ratio:.1f}x")
        if result.webhooks is not None:
            print(f"  {result.webhooks}")
        verdict = "0" if not result.problems else "see below"
        print(f"  nonce gaps: {verdict}, duplicates: {verdict}")
        for problem in result.problems:
            print(f"  PROBLEM: {problem}")
        failed = failed or bool(result.problems)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    _arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
