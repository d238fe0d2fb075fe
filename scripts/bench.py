"""Benchmarks of vault-relayer, one subcommand each.

    .venv/bin/python scripts/bench.py build [--chain anvil|embedded] [--requests N] [--concurrency 16]
                                            [--client raw|aiohttp|httpx]

`build`: POST /api/closeposition through HTTP against a fresh anvil (or the embedded chain), side by side in
the same run with the naive web3.py path, `contract.functions.closePosition(...).build_transaction({"from":
owner})` per request with one `Web3(HTTPProvider)` per thread, over the same requests and concurrency.
Prints throughput, p50 and p99 of both and the throughput ratio; with --rounds > 1, the medians over rounds.
On anvil it also prints the CPU each process spent per request (the server, the node, the load generator or
web3.py): on shared cores that is what each side costs, whatever else the machine runs. The API side's load
generator writes and reads HTTP/1.1 itself, one keep-alive connection per worker (`--client aiohttp`: the
generator of the first issue-14 figures, ~0.15 ms more CPU a request on the cores the server and the node
share; `--client httpx`: the one before issue 14, ~1 ms more).

More benchmarks plug in as sibling modules `scripts/bench_<name>.py` with an `add_parser(subparsers)` function
that adds their subcommand, its handler in `set_defaults(run=...)`; the helpers below are shared.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from web3 import HTTPProvider, Web3
from yarl import URL

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from relayer.chain.artifact import load_artifact  # noqa: E402
from relayer.chain.connect import ANVIL_DEFAULT_KEYS, Chain, embedded_chain, rpc_chain  # noqa: E402
from relayer.chain.deploy import Deployment, deploy_vault  # noqa: E402
from relayer.chain.transact import send  # noqa: E402
from relayer.chain.vault import VaultReader  # noqa: E402
from relayer.constants import CLOSE_ALL_SIZE, PRICE_DECIMALS, SIZE_DECIMALS  # noqa: E402
from relayer.domain import calldata  # noqa: E402
from relayer.domain.markets import symbol_to_bytes32  # noqa: E402
from relayer.domain.units import to_fixed  # noqa: E402

ANVIL = ROOT / "node_modules" / ".bin" / "anvil"


# --- shared helpers ----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes] | None = None, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise SystemExit(f"process exited with code {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


@contextlib.contextmanager
def anvil_node(*extra_args: str) -> Iterator[str]:
    """A fresh anvil on a free loopback port; yields its URL."""
    with anvil_process(*extra_args) as (url, _):
        yield url


@contextlib.contextmanager
def anvil_process(*extra_args: str) -> Iterator[tuple[str, int]]:
    """`anvil_node`, yielding its URL and the process id (npm's launcher, with anvil as its child)."""
    if not ANVIL.exists():
        raise SystemExit(f"{ANVIL} is missing: run scripts/setup.sh")
    port = free_port()
    process = subprocess.Popen(
        [str(ANVIL), "--host", "127.0.0.1", "--port", str(port), "--silent", *extra_args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, process)
        yield f"http://127.0.0.1:{port}", process.pid
    finally:
        process.terminate()
        process.wait(timeout=10)


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by a process and its live descendants (Linux `/proc`)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        used = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        children: list[str] = []
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as listed:
                children += listed.read().split()
    except OSError:  # gone, or not Linux
        return 0.0
    return used + sum(tree_cpu_s(int(child)) for child in children)


@dataclass(frozen=True)
class Stats:
    """Throughput and latency of one run."""

    requests: int
    seconds: float
    latencies_s: list[float]

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds

    def percentile_ms(self, q: float) -> float:
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    def line(self, name: str) -> str:
        return (
            f"{name:<34} {self.throughput:8.0f} req/s   p50 {self.percentile_ms(0.50):7.1f} ms"
            f"   p99 {self.percentile_ms(0.99):7.1f} ms   ({self.requests} requests)"
        )


def median_stats(runs: Sequence[Stats]) -> tuple[float, float, float]:
    """Median throughput, p50 and p99 over rounds."""
    return (
        statistics.median(r.throughput for r in runs),
        statistics.median(r.percentile_ms(0.50) for r in runs),
        statistics.median(r.percentile_ms(0.99) for r in runs),
    )


def deploy_with_positions(
    chain: Chain, positions: int
) -> tuple[Deployment, list[tuple[bytes, LocalAccount, bool]]]:
    """A vault with `positions` open positions spread over four traders, longs and shorts, BTC and ETH."""
    accounts = chain.test_accounts()
    deployer, traders = accounts[0], accounts[1:5]
    deployment = deploy_vault(chain.w3, deployer)
    vault = VaultReader(chain.w3, deployment.address)
    opened = []
    for i in range(positions):
        trader, is_long, market = traders[i % len(traders)], i % 2 == 0, ("BTCUSDT", "ETHUSDT")[i // 2 % 2]
        size = to_fixed(Decimal("1.5"), SIZE_DECIMALS, "size")
        receipt = send(
            chain.w3,
            trader,
            deployment.address,
            calldata.encode_call("openPosition", symbol_to_bytes32(market), is_long, size, 0),
        )
        (event,) = vault.contract.events.PositionOpened().process_receipt(receipt)
        opened.append((bytes(event["args"]["positionId"]), trader, is_long))
    return deployment, opened


# --- build: POST /api/closeposition vs the naive web3.py path ---------------------------------------------


@dataclass(frozen=True)
class CloseCase:
    """One request, as a JSON body for the API and as arguments for the naive path."""

    body: dict[str, Any]
    owner: str
    position_id: bytes
    size_delta: int
    allowed_price_e8: int


def close_cases(opened: list[tuple[bytes, LocalAccount, bool]], count: int) -> list[CloseCase]:
    """Alternating full closes and partial closes with a slippage bound the current price satisfies."""
    cases = []
    for i in range(count):
        position_id, owner, is_long = opened[i % len(opened)]
        pid = "0x" + position_id.hex()
        if i % 2 == 0:
            cases.append(CloseCase({"positionId": pid}, owner.address, position_id, CLOSE_ALL_SIZE, 0))
            continue
        allowed = "1000" if is_long else "1000000"
        body = {"positionId": pid, "sizeDelta": "0.1", "allowedPrice": allowed}
        cases.append(
            CloseCase(
                body,
                owner.address,
                position_id,
                to_fixed(Decimal("0.1"), SIZE_DECIMALS, "sizeDelta"),
                to_fixed(Decimal(allowed), PRICE_DECIMALS, "allowedPrice"),
            )
        )
    return cases


async def _fire(base_url: str, cases: list[CloseCase], concurrency: int, client: str = "aiohttp") -> Stats:
    """`cases` POSTed from `concurrency` keep-alive connections, each answer read whole and checked.

    The load generator shares the two cores with the server and the node, so its own CPU per request lowers
    what is measured: aiohttp's client (C parser) spends about 0.3 ms a request where httpx's spends 1.1-1.4
    ms. `client="httpx"` is the generator of the earlier README figures."""
    if client == "httpx":
        return await _fire_httpx(base_url, cases, concurrency)
    if client == "raw":
        return await _fire_raw(base_url, cases, concurrency)
    bodies = [json.dumps(case.body).encode() for case in cases]
    latencies: list[float] = []
    queue = iter(bodies)
    url = base_url + "/api/closeposition"

    async def worker(session: aiohttp.ClientSession) -> None:
        for body in queue:
            started = time.perf_counter()
            async with session.post(url, data=body) as response:
                content = await response.read()
            latencies.append(time.perf_counter() - started)
            if response.status != 200:
                raise SystemExit(f"the API answered {response.status}: {content.decode(errors='replace')}")

    headers = {"content-type": "application/json"}
    # One session (one keep-alive connection) per worker, as with httpx below.
    sessions = [
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1), headers=headers)
        for _ in range(concurrency)
    ]
    try:
        started = time.perf_counter()
        await asyncio.gather(*[worker(session) for session in sessions])
        elapsed = time.perf_counter() - started
    finally:
        for session in sessions:
            await session.close()
    return Stats(len(cases), elapsed, latencies)


async def _fire_raw(base_url: str, cases: list[CloseCase], concurrency: int) -> Stats:
    """`_fire` with HTTP/1.1 written and read by hand over asyncio streams: each request's bytes made before
    the clock starts, each answer's status line checked and its `content-length` body read whole. About a
    fifth of aiohttp's client CPU per request, which the server and the node would otherwise share."""
    url = URL(base_url)
    host, port = url.host or "127.0.0.1", url.port or 80
    requests = [
        b"POST /api/closeposition HTTP/1.1\r\nhost: %s:%d\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n%s" % (host.encode(), port, len(body), body)
        for body in (json.dumps(case.body).encode() for case in cases)
    ]
    latencies: list[float] = []
    queue = iter(requests)

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for request in queue:
                started = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = _content_length(head)
                content = await reader.readexactly(length)
                latencies.append(time.perf_counter() - started)
                if not head.startswith(b"HTTP/1.1 200 "):
                    raise SystemExit(f"the API answered {head[:12]!r}: {content.decode(errors='replace')}")
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*[worker() for _ in range(concurrency)])
    elapsed = time.perf_counter() - started
    return Stats(len(cases), elapsed, latencies)


def _content_length(head: bytes) -> int:
    """The `content-length` of an answer's head (the API answers every build with one, never chunked)."""
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    raise SystemExit(f"an answer without content-length: {head[:200]!r}")


async def _fire_httpx(base_url: str, cases: list[CloseCase], concurrency: int) -> Stats:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    bodies = [json.dumps(case.body).encode() for case in cases]
    latencies: list[float] = []
    queue = iter(bodies)

    async def worker(client: httpx.AsyncClient) -> None:
        for body in queue:
            started = time.perf_counter()
            response = await client.post("/api/closeposition", content=body)
            latencies.append(time.perf_counter() - started)
            if response.status_code != 200:
                raise SystemExit(f"the API answered {response.status_code}: {response.text}")

    # One client per worker: httpx's shared pool degrades with many concurrent requests, and the load
    # generator must not be what is measured.
    clients = [
        httpx.AsyncClient(base_url=base_url, limits=limits, headers={"content-type": "application/json"})
        for _ in range(concurrency)
    ]
    try:
        started = time.perf_counter()
        await asyncio.gather(*[worker(client) for client in clients])
        elapsed = time.perf_counter() - started
    finally:
        for client in clients:
            await client.aclose()
    return Stats(len(cases), elapsed, latencies)


def fire_api(base_url: str, cases: list[CloseCase], concurrency: int, client: str = "aiohttp") -> Stats:
    return asyncio.run(_fire(base_url, cases, concurrency, client))


def fire_naive(
    make_w3: Callable[[], Web3],
    vault: str,
    cases: list[CloseCase],
    concurrency: int,
    lock: contextlib.AbstractContextManager[object] | None = None,
) -> Stats:
    """`build_transaction` per request from `concurrency` threads, each with its own Web3 connection."""
    abi = load_artifact().abi
    local = threading.local()
    latencies: list[float] = []

    def one(case: CloseCase) -> None:
        if not hasattr(local, "contract"):
            local.contract = make_w3().eth.contract(address=to_checksum_address(vault), abi=abi)
        started = time.perf_counter()
        function = local.contract.functions.closePosition(
            case.position_id, case.size_delta, case.allowed_price_e8
        )
        with lock or contextlib.nullcontext():
            function.build_transaction({"from": case.owner})
        latencies.append(time.perf_counter() - started)

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, cases[: concurrency * 2]))  # connect and warm up every thread
        latencies.clear()
        started = time.perf_counter()
        list(pool.map(one, cases))
        elapsed = time.perf_counter() - started
    return Stats(len(cases), elapsed, latencies)


@contextlib.contextmanager
def api_subprocess(rpc_url: str, vault: str) -> Iterator[tuple[str, int]]:
    """`relayer serve` over the node, in its own process (one uvicorn worker), as an operator would run it;
    yields its URL and process id."""
    port = free_port()
    env = {**os.environ, "RELAYER_LOG_LEVEL": "warning"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "relayer.faces.cli.main",
            "serve",
            "--rpc-url",
            rpc_url,
            "--vault",
            vault,
            "--port",
            str(port),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, process)
        yield f"http://127.0.0.1:{port}", process.pid
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextlib.contextmanager
def api_in_thread(chain: Chain, vault: str) -> Iterator[str]:
    """The API over the embedded chain, which lives in this process, served by uvicorn in a thread."""
    import uvicorn

    from relayer.config import Settings
    from relayer.faces.api.app import create_app

    port = free_port()
    app = create_app(Settings(vault_address=vault, port=port, log_level="warning"), chain=chain)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@dataclass(frozen=True)
class Charged:
    """A run's figures with the CPU each process spent on it, in ms per request (the cores are shared, so
    these say what each side costs even when other jobs on the machine move the throughput)."""

    stats: Stats
    cpu_ms: dict[str, float]

    def cpu_line(self) -> str:
        return "CPU per request: " + ", ".join(f"{name} {ms:.3f} ms" for name, ms in self.cpu_ms.items())


def charged(run: Callable[[], Stats], processes: dict[str, int], here: str) -> Charged:
    """`run()`, with the CPU of `processes` (name -> pid, with their children) and of this one (`here`)."""
    before = {name: tree_cpu_s(pid) for name, pid in processes.items()}
    ours = time.process_time()
    stats = run()
    ours = time.process_time() - ours
    used = {name: tree_cpu_s(pid) - before[name] for name, pid in processes.items()}
    used[here] = ours
    return Charged(stats, {name: 1000 * seconds / stats.requests for name, seconds in used.items()})


def cmd_build(args: argparse.Namespace) -> int:
    processes: dict[str, int] = {}  # on anvil: the server's and the node's process ids, for their CPU
    with contextlib.ExitStack() as stack:
        if args.chain == "anvil":
            url, processes["node"] = stack.enter_context(anvil_process())
            chain = rpc_chain(url, test_keys=list(ANVIL_DEFAULT_KEYS))
        else:
            chain = embedded_chain()
        print(f"chain: {args.chain}; deploying and opening {args.positions} positions...", flush=True)
        deployment, opened = deploy_with_positions(chain, args.positions)
        cases = close_cases(opened, args.requests)
        if args.chain == "anvil":
            base_url, processes["server"] = stack.enter_context(api_subprocess(url, deployment.address))

            def make_w3() -> Web3:
                return Web3(HTTPProvider(url))

            naive_lock = None
        else:
            base_url = stack.enter_context(api_in_thread(chain, deployment.address))
            # py-evm is not thread-safe: the naive threads take turns on the chain's lock, the one the API's
            # chain port (EmbeddedRpc) holds for each of its batches
            naive_lock = chain.lock

            def make_w3() -> Web3:
                return chain.w3

        # warm-up: connections, caches
        fire_api(base_url, cases[: args.concurrency * 4], args.concurrency, args.client)
        api_runs: list[Charged] = []
        naive_runs: list[Charged] = []
        node = {name: pid for name, pid in processes.items() if name == "node"}  # the server idles meanwhile
        for round_number in range(1, args.rounds + 1):
            api_runs.append(
                charged(
                    lambda: fire_api(base_url, cases, args.concurrency, args.client),
                    processes,
                    f"load generator ({args.client})",
                )
            )
            naive_runs.append(
                charged(
                    lambda: fire_naive(make_w3, deployment.address, cases, args.concurrency, naive_lock),
                    node,
                    "web3.py",
                )
            )
            print(f"round {round_number}:", flush=True)
            for label, run in (
                ("POST /api/closeposition (HTTP)", api_runs[-1]),
                ("naive web3.py build_transaction", naive_runs[-1]),
            ):
                print("  " + run.stats.line(label), flush=True)
                if processes:
                    print("    " + run.cpu_line(), flush=True)

    api = median_stats([run.stats for run in api_runs])
    naive = median_stats([run.stats for run in naive_runs])
    print(
        f"\nmedians over {args.rounds} round(s) of {args.requests} requests, concurrency {args.concurrency}:"
    )
    for name, (throughput, p50, p99), runs in (
        ("POST /api/closeposition (HTTP)", api, api_runs),
        ("naive web3.py", naive, naive_runs),
    ):
        print(f"  {name:<34} {throughput:8.0f} req/s   p50 {p50:7.1f} ms   p99 {p99:7.1f} ms")
        if processes:
            cpu = {key: statistics.median(run.cpu_ms[key] for run in runs) for key in runs[0].cpu_ms}
            print("    " + Charged(runs[0].stats, cpu).cpu_line())
    print(f"  throughput ratio: {api[0] / naive[0]:.1f}x")
    return 0


def add_build_parser(subparsers: Any) -> None:
    build = subparsers.add_parser("build", help="POST /api/closeposition vs the naive web3.py path")
    build.add_argument("--chain", choices=["anvil", "embedded"], default="anvil")
    build.add_argument(
        "--requests", type=int, default=None, help="per round (default 1000 anvil, 100 embedded)"
    )
    build.add_argument("--concurrency", type=int, default=16)
    build.add_argument("--positions", type=int, default=32, help="positions the requests cycle over")
    build.add_argument("--rounds", type=int, default=3)
    build.add_argument(
        "--client",
        choices=["raw", "aiohttp", "httpx"],
        default="raw",
        help="the API side's load generator: HTTP/1.1 by hand on asyncio streams (raw, ~0.06 ms CPU a"
        " request), aiohttp's client (~0.22 ms), or httpx's (the one before issue 14, ~1.2 ms)",
    )
    build.set_defaults(run=cmd_build)


# --- dispatch -----------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_build_parser(subparsers)
    for path in sorted(Path(__file__).parent.glob("bench_*.py")):
        importlib.import_module(path.stem).add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "requests", 0) is None:
        args.requests = 1000 if getattr(args, "chain", "anvil") == "anvil" else 100
    run: Callable[[argparse.Namespace], int] = args.run
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
