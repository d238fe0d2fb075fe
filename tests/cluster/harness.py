"""Several `relayer serve` processes on one store and one anvil, a load driver, chaos, and the verdict.

Importable without pytest: `tests/cluster/test_chaos.py` drives it, and so can a benchmark (`scripts/
bench_relay.py --instances N --store sqlite|postgres`). The verdict is never the relayer's word: it is read
from the chain (the events each request must have caused, the transaction mined at every nonce of every
signer) and from the store's own tables, and the relayer's answers are what gets checked against them.

    config = ClusterConfig(instances=3, database_url=url, proxied=(2,))
    with Cluster(config, workdir) as cluster:
        driver = LoadDriver(cluster, take_profit_requests(cluster.world, 300), concurrency=8).start()
        chaos = ChaosLog()
        chaos.kills.append(kill_lease_holder(cluster, driver))  # SIGKILL, takeover measured, restarted
        chaos.cuts.append(cut_database(cluster, 2, seconds=10.0))
        outcomes = driver.join()
        settle(cluster, outcomes)
        verdict = verify(cluster, outcomes)
    assert verdict.problems == []

The chain: one anvil, automining while the world is set up (the vault, its price, a position per owner, the
owners' operator approvals: a second instead of a block each), then mining a block every `block_time_s` for
the rest of the run (`evm_setIntervalMining`, which is what `anvil --block-time` sets). The store: the SQLite
journal file in the work folder, or the PostgreSQL database at `database_url`; API keys are made by `relayer
keys create` in that same store, as an operator would.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address

from relayer.chain.connect import ANVIL_DEFAULT_KEYS, Chain, rpc_chain
from relayer.chain.deploy import deploy_vault
from relayer.chain.transact import NO_PRICE_BOUND, open_position, set_operator
from relayer.chain.vault import VaultReader
from relayer.constants import PRICE_DECIMALS, SIZE_DECIMALS
from relayer.domain import calldata
from relayer.domain.policy import decode_raw_transaction
from relayer.domain.status import FINAL, UNSUCCESSFUL, TxStatus
from relayer.domain.units import to_fixed
from relayer.errors import RelayerError
from tests.relay.proxy import TcpProxy

ROOT = Path(__file__).resolve().parents[2]
ANVIL = ROOT / "node_modules" / ".bin" / "anvil"

MARKET = "BTCUSDT"
MARKET_PRICE_USD = Decimal("96000")
"""The oracle price for the whole run: nothing moves it, so no take-profit the load sets is ever crossed."""
POSITION_SIZE = Decimal("1")
FIRST_TAKE_PROFIT_USD = 100_000
"""Request `i` sets a take-profit at this + i USD: above the price (valid for a long), and unique, so the
`TriggerSet` event carrying it on chain belongs to exactly that request."""
MAX_PRICE_AGE_S = 10**9
"""The vault's price never goes stale during a run (blocks advance time; nothing re-posts the price)."""

FINAL_STATUSES = frozenset(status.value for status in FINAL)
UNSUCCESSFUL_STATUSES = frozenset(status.value for status in UNSUCCESSFUL)


def _retryable_codes() -> frozenset[str]:
    """The error codes the error tree marks retryable: a client repeats those with the same key."""
    codes: set[str] = set()
    pending: list[type[RelayerError]] = [RelayerError]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.retryable:
            codes.add(cls.code)
    return frozenset(codes)


RETRYABLE_CODES = _retryable_codes()


class HarnessError(RuntimeError):
    """Setting up or driving the cluster failed: a fact about the harness or the machine, not a finding."""


# --- configuration ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterConfig:
    """What to start: how many instances, on which store, with how many signers and owners."""

    instances: int = 1
    database_url: str | None = None
    """PostgreSQL (`postgresql://user@host:port/db`) for every instance; None: one SQLite journal file in the
    work folder (which takes one relaying process only: its relay lock refuses a second)."""
    signers: int = 1
    """Relayer signers every instance is given (anvil accounts 9, 8, ...; they have sent nothing before)."""
    owners: int = 4
    """Trading accounts (anvil accounts 1, 2, ...), each with one BTCUSDT long, the signers approved as its
    operators, and an API key (read, trade)."""
    block_time_s: int = 1
    lease_ttl_s: float = 2.0
    """`RELAYER_RELAY_LEASE_TTL_S` of every instance."""
    proxied: tuple[int, ...] = ()
    """Instances that reach PostgreSQL through a `TcpProxy`, so `Cluster.cut_database` can cut them off."""
    env: Mapping[str, str] = field(default_factory=dict)
    """More variables for every instance (e.g. `RELAYER_LOG_LEVEL`)."""
    startup_timeout_s: float = 90.0

    def __post_init__(self) -> None:
        if self.instances < 1:
            raise ValueError("instances: at least 1")
        if self.database_url is None and self.instances > 1:
            raise ValueError(
                "several instances need a shared database (database_url): the SQLite journal's relay lock"
                " takes one relaying process"
            )
        if self.database_url is None and self.proxied:
            raise ValueError("proxied: only a database reached over TCP (PostgreSQL) can be cut")
        if any(not 0 <= index < self.instances for index in self.proxied):
            raise ValueError("proxied: instance indexes out of range")
        if self.signers < 1 or self.signers + self.owners > len(ANVIL_DEFAULT_KEYS) - 1:
            raise ValueError(f"signers + owners: at most {len(ANVIL_DEFAULT_KEYS) - 1} (anvil's accounts)")

    @property
    def store(self) -> str:
        return "sqlite" if self.database_url is None else "postgres"


# --- the chain and the world on it --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Anvil:
    url: str
    port: int
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_anvil(*extra_args: str, binary: Path | str = ANVIL) -> Anvil:
    """A fresh anvil on a free loopback port (automining unless `extra_args` say otherwise), once it accepts
    connections.

    Raises:
        HarnessError: anvil is missing, exits, or does not listen within 20 s.
    """
    if not Path(binary).exists():
        raise HarnessError(f"anvil is not installed ({binary}): run scripts/setup.sh")
    port = free_port()
    process = subprocess.Popen(
        [str(binary), "--host", "127.0.0.1", "--port", str(port), "--silent", *extra_args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return Anvil(f"http://127.0.0.1:{port}", port, process)
        except OSError:
            if process.poll() is not None:
                raise HarnessError(f"anvil exited with code {process.returncode}") from None
            time.sleep(0.05)
    process.kill()
    raise HarnessError("anvil did not start within 20 s")


@dataclass(frozen=True)
class Owner:
    """A trading account: its one position and its API key (read, trade)."""

    address: str
    position_id: bytes
    api_key: str


@dataclass(frozen=True)
class World:
    """What the cluster was set up with: the chain, the vault, the signers and the owners."""

    rpc_url: str
    chain_id: int
    vault: str
    signer_keys: tuple[str, ...]
    owners: tuple[Owner, ...]
    start_block: int
    """The first block the load can be in: everything from here on is the run's."""
    start_nonces: Mapping[str, int]
    """Each signer's transaction count when the instances started (0: anvil's fresh accounts)."""

    @property
    def signers(self) -> list[str]:
        return [Account.from_key(key).address for key in self.signer_keys]


def lease_name(signer: str) -> str:
    """The lease of a relayer signer, as `/health` names it (compared without case)."""
    return f"signer:{signer}"


# --- instances ----------------------------------------------------------------------------------------------


def relayer_command() -> list[str]:
    """The `relayer` console script of the running interpreter's environment (`.venv/bin/relayer`)."""
    for candidate in (Path(sys.executable).parent / "relayer", ROOT / ".venv" / "bin" / "relayer"):
        if candidate.exists():
            return [str(candidate)]
    return [sys.executable, "-m", "relayer.faces.cli.main"]


def clean_env() -> dict[str, str]:
    """This process's environment without any RELAYER_* variable (a developer's shell may set some)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("RELAYER_")}


def through_proxy(database_url: str, port: int) -> str:
    """`database_url` with its host and port replaced by the proxy's, 127.0.0.1:`port`.

    Raises:
        HarnessError: the URL names no TCP host (a Unix socket cannot be cut by a TCP proxy).
    """
    parts = urlsplit(database_url)
    if not parts.hostname or parts.hostname.startswith("/") or "host=" in parts.query:
        raise HarnessError("a database reached over a Unix socket cannot be cut: give a host and port")
    userinfo, _, _ = parts.netloc.rpartition("@")
    netloc = f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def database_port(database_url: str) -> int:
    return urlsplit(database_url).port or 5432


@dataclass
class Instance:
    """One `relayer serve` process (over its life: restarts keep the index, id, port and log)."""

    index: int
    instance_id: str
    port: int
    log_path: Path
    database_url: str | None
    """What this instance is given: the shared URL, or the proxy's (None: SQLite)."""
    proxy: TcpProxy | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    """Variables of this instance alone, applied last (over `ClusterConfig.env`)."""
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass(frozen=True)
class Lease:
    name: str
    holder: str
    mine: bool
    epoch: int | None
    expires_in_s: float | None


class Cluster:
    """One anvil, the world on it, and `config.instances` `relayer serve` processes on one store.

    A context manager: entering starts everything and waits until every instance answers `/health`; leaving
    stops the instances (SIGTERM, then SIGKILL), the proxies and anvil. Every instance logs to
    `<workdir>/<instance id>.log` (appended over restarts).
    """

    def __init__(self, config: ClusterConfig, workdir: Path) -> None:
        self.config = config
        self.workdir = workdir
        self.anvil: Anvil | None = None
        self.chain: Chain | None = None
        self._world: World | None = None
        self.instances: list[Instance] = []

    # --- life -----------------------------------------------------------------------------------------------

    def __enter__(self) -> Cluster:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.anvil = start_anvil()
        self.chain = rpc_chain(self.anvil.url, test_keys=list(ANVIL_DEFAULT_KEYS))
        self._world = self._set_up_world(self.chain)
        for index in range(self.config.instances):
            self.instances.append(self._instance(index))
        for instance in self.instances:
            self._spawn(instance)
        for instance in self.instances:
            self.wait_healthy(instance.index)

    def close(self) -> None:
        for instance in self.instances:
            if instance.process is not None and instance.process.poll() is None:
                instance.process.send_signal(signal.SIGTERM)
        for instance in self.instances:
            if instance.process is not None:
                try:
                    instance.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    instance.process.kill()
                    instance.process.wait()
            if instance.proxy is not None:
                instance.proxy.stop()
        if self.anvil is not None:
            self.anvil.stop()
            self.anvil = None

    @property
    def world(self) -> World:
        if self._world is None:
            raise HarnessError("the cluster has not been started")
        return self._world

    @property
    def w3_chain(self) -> Chain:
        if self.chain is None:
            raise HarnessError("the cluster has not been started")
        return self.chain

    @property
    def journal_path(self) -> Path:
        """The SQLite journal (with `database_url` unset)."""
        return self.workdir / "journal.sqlite3"

    def store_env(self, database_url: str | None) -> dict[str, str]:
        """The variables that name the store: the database URL, or the journal file."""
        if self.config.database_url is None:
            return {"RELAYER_RELAY_JOURNAL_PATH": str(self.journal_path)}
        return {"RELAYER_DATABASE_URL": database_url or self.config.database_url}

    # --- the world ------------------------------------------------------------------------------------------

    def _set_up_world(self, chain: Chain) -> World:
        """The vault, one position per owner, every signer approved by every owner, the keys; then blocks
        every `block_time_s`."""
        config = self.config
        w3 = chain.w3
        deployer = Account.from_key(ANVIL_DEFAULT_KEYS[0])
        signer_keys = tuple(
            ANVIL_DEFAULT_KEYS[len(ANVIL_DEFAULT_KEYS) - 1 - n] for n in range(config.signers)
        )
        signers = [Account.from_key(key).address for key in signer_keys]
        traders: list[LocalAccount] = [
            Account.from_key(ANVIL_DEFAULT_KEYS[1 + n]) for n in range(config.owners)
        ]
        deployment = deploy_vault(
            w3, deployer, max_price_age_s=MAX_PRICE_AGE_S, prices_usd={MARKET: MARKET_PRICE_USD}
        )
        positions: list[bytes] = []
        for trader in traders:
            for signer in signers:
                set_operator(w3, trader, deployment.address, signer, approved=True)
            opened = open_position(
                w3,
                trader,
                deployment.address,
                MARKET,
                is_long=True,
                size=to_fixed(POSITION_SIZE, SIZE_DECIMALS, "size"),
                allowed_price_e8=NO_PRICE_BOUND,
            )
            positions.append(opened.position_id)
        keys = self._create_keys([trader.address for trader in traders])
        start_nonces = {
            signer: int(w3.eth.get_transaction_count(to_checksum_address(signer))) for signer in signers
        }
        start_block = int(w3.eth.block_number) + 1
        w3.provider.make_request("evm_setAutomine", [False])  # type: ignore[arg-type]
        w3.provider.make_request("evm_setIntervalMining", [config.block_time_s])  # type: ignore[arg-type]
        assert self.anvil is not None
        return World(
            rpc_url=self.anvil.url,
            chain_id=int(w3.eth.chain_id),
            vault=deployment.address,
            signer_keys=signer_keys,
            owners=tuple(
                Owner(trader.address, position, key)
                for trader, position, key in zip(traders, positions, keys, strict=True)
            ),
            start_block=start_block,
            start_nonces=start_nonces,
        )

    def _create_keys(self, accounts: Sequence[str]) -> list[str]:
        """One API key (read, trade) per account, made by `relayer keys create` in the instances' store."""
        env = {**clean_env(), **self.store_env(None)}

        def create(account: str) -> str:
            done = subprocess.run(
                [*relayer_command(), "keys", "create", "--account", account, "--scopes", "read,trade"],
                env=env,
                cwd=self.workdir,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            if done.returncode != 0:
                raise HarnessError(
                    f"relayer keys create failed ({done.returncode}): {done.stdout}{done.stderr}"
                )
            return done.stdout.splitlines()[0].strip()

        # The first alone: it creates the store's schema; then the others at once.
        first = create(accounts[0])
        with ThreadPoolExecutor(max(1, len(accounts) - 1)) as pool:
            return [first, *pool.map(create, accounts[1:])]

    # --- instances ------------------------------------------------------------------------------------------

    def _instance(self, index: int) -> Instance:
        instance_id = f"i{index}"
        proxy = None
        url = self.config.database_url
        if url is not None and index in self.config.proxied:
            proxy = TcpProxy(database_port(url))
            proxy.start()
            url = through_proxy(url, proxy.port)
        return Instance(index, instance_id, free_port(), self.workdir / f"{instance_id}.log", url, proxy)

    def instance_env(self, instance: Instance) -> dict[str, str]:
        world = self.world
        env = {
            **clean_env(),
            "PYTHONUNBUFFERED": "1",
            "RELAYER_RPC_URL": world.rpc_url,
            "RELAYER_VAULT_ADDRESS": world.vault,
            "RELAYER_SIGNER_KEY": world.signer_keys[0],
            "RELAYER_INSTANCE_ID": instance.instance_id,
            "RELAYER_RELAY_LEASE_TTL_S": str(self.config.lease_ttl_s),
            # Throughput runs: a few keys send hundreds of requests a minute, past the default per-key
            # request budget (the sponsorship policy is tested on its own, tests/relay/test_sponsorship.py).
            "RELAYER_SPONSOR_KEY_REQUESTS_PER_WINDOW": "0",
            **self.store_env(instance.database_url),
            **self.config.env,
            **instance.env,
        }
        for number, key in enumerate(world.signer_keys[1:], start=1):
            env[f"RELAYER_SIGNER_{number}_KEY"] = key
        return env

    def _spawn(self, instance: Instance) -> None:
        with instance.log_path.open("ab") as log:
            log.write(f"--- start {instance.starts + 1} at {time.time():.3f}\n".encode())
            log.flush()
            instance.process = subprocess.Popen(
                [*relayer_command(), "serve", "--host", "127.0.0.1", "--port", str(instance.port)],
                env=self.instance_env(instance),
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        instance.starts += 1

    def wait_healthy(self, index: int, timeout_s: float | None = None) -> float:
        """Seconds until instance `index` answers `GET /health` with 200.

        Raises:
            HarnessError: it exited, or did not answer in time (with the end of its log).
        """
        instance = self.instances[index]
        started = time.monotonic()
        deadline = started + (timeout_s or self.config.startup_timeout_s)
        while time.monotonic() < deadline:
            if not instance.running:
                code = None if instance.process is None else instance.process.returncode
                raise HarnessError(f"{instance.instance_id} exited ({code}):\n{self.log_tail(index)}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(instance.url + "/health", timeout=2).status_code == 200:
                    return time.monotonic() - started
            time.sleep(0.1)
        raise HarnessError(f"{instance.instance_id} did not answer /health in time:\n{self.log_tail(index)}")

    def kill(self, index: int) -> float:
        """SIGKILL instance `index` and reap it; returns the moment (`time.monotonic()`) of the kill."""
        instance = self.instances[index]
        if instance.process is None:
            raise HarnessError(f"{instance.instance_id} was never started")
        killed_at = time.monotonic()
        instance.process.kill()
        instance.process.wait()
        return killed_at

    def restart(self, index: int, *, wait: bool = True) -> float:
        """Start instance `index` again (same id, port, store); seconds until it answers `/health`."""
        instance = self.instances[index]
        if instance.running:
            raise HarnessError(f"{instance.instance_id} is still running")
        self._spawn(instance)
        return self.wait_healthy(index) if wait else 0.0

    def log_tail(self, index: int, lines: int = 60) -> str:
        path = self.instances[index].log_path
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    # --- health and leases ----------------------------------------------------------------------------------

    def health(self, index: int, timeout_s: float = 2.0) -> dict[str, Any] | None:
        """Instance `index`'s `/health` body (whatever its status), or None when it does not answer."""
        instance = self.instances[index]
        if not instance.running:
            return None
        try:
            response = httpx.get(instance.url + "/health", timeout=timeout_s)
            body = response.json()
        except (httpx.HTTPError, ValueError):
            return None
        return body if isinstance(body, dict) else None

    def leases(self, index: int) -> list[Lease] | None:
        """The leases instance `index` reports (`relay.leases` of `/health`); None: it reports none (no
        answer, or a relayer without leases)."""
        body = self.health(index)
        relay = body.get("relay") if body else None
        raw = relay.get("leases") if isinstance(relay, dict) else None
        if not isinstance(raw, list):
            return None
        return [
            Lease(
                name=str(item.get("name")),
                holder=str(item.get("holder")),
                mine=bool(item.get("mine")),
                epoch=item.get("epoch"),
                expires_in_s=item.get("expiresInS"),
            )
            for item in raw
            if isinstance(item, dict)
        ]

    def lease_holder(self, name: str | None = None, *, exclude: frozenset[int] = frozenset()) -> int | None:
        """The running instance whose `/health` shows lease `name` (default: the first signer's) as `mine`.

        With a single instance that reports no leases at all (a relayer before leases), that instance: it
        is the only sender there is.
        """
        wanted = (name or lease_name(self.world.signers[0])).lower()
        reported = False
        for instance in self.instances:
            if instance.index in exclude or not instance.running:
                continue
            leases = self.leases(instance.index)
            if leases is None:
                continue
            reported = True
            if any(lease.name.lower() == wanted and lease.mine for lease in leases):
                return instance.index
        running = [i.index for i in self.instances if i.running and i.index not in exclude]
        if not reported and len(self.instances) == 1 and running:
            return running[0]
        return None

    def wait_for_holder(
        self, name: str | None = None, *, exclude: frozenset[int] = frozenset(), timeout_s: float = 30.0
    ) -> int:
        """The instance holding lease `name`, once one does (polled every 50 ms).

        Raises:
            HarnessError: no instance (outside `exclude`) took it in time.
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            holder = self.lease_holder(name, exclude=exclude)
            if holder is not None:
                return holder
            time.sleep(0.05)
        raise HarnessError(f"no instance holds {name or 'the signer lease'} after {timeout_s} s")

    # --- the database connection ----------------------------------------------------------------------------

    def cut_database(self, index: int) -> None:
        """Drop instance `index`'s database connections and refuse new ones (its proxy stops)."""
        proxy = self.instances[index].proxy
        if proxy is None:
            raise HarnessError(
                f"instance {index} does not reach the database through a proxy (config.proxied)"
            )
        proxy.stop()

    def restore_database(self, index: int) -> None:
        proxy = self.instances[index].proxy
        if proxy is None:
            raise HarnessError(
                f"instance {index} does not reach the database through a proxy (config.proxied)"
            )
        proxy.start()


# --- load ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TradeRequest:
    """One client request: a trading route, its body, the owner whose key sends it, its `Idempotency-Key`,
    and the take-profit price that makes its on-chain effect countable."""

    index: int
    owner: int
    path: str
    body: Mapping[str, Any]
    idempotency_key: str
    price_e8: int


def take_profit_requests(world: World, count: int, *, run: str = "chaos") -> list[TradeRequest]:
    """`count` take-profit changes, round-robin over the owners, each at a price no other request uses."""
    requests = []
    for index in range(count):
        owner = index % len(world.owners)
        price = Decimal(FIRST_TAKE_PROFIT_USD + index)
        requests.append(
            TradeRequest(
                index=index,
                owner=owner,
                path="/api/trade/takeprofit",
                body={
                    "positionId": "0x" + world.owners[owner].position_id.hex(),
                    "price": str(price),
                    "close_pct": 50,
                },
                idempotency_key=f"{run}-{index}",
                price_e8=to_fixed(price, PRICE_DECIMALS, "price"),
            )
        )
    return requests


@dataclass(frozen=True)
class Try:
    """One HTTP attempt of a request: where, and what came back (`status` None: no HTTP answer at all)."""

    instance: int
    status: int | None
    code: str | None
    """The error code of an error answer, or the transport error's class name."""
    seconds: float


@dataclass
class Outcome:
    """A request's life: every try, the final answer, every record id any answer named, and those records
    as they ended."""

    request: TradeRequest
    tries: list[Try] = field(default_factory=list)
    status: int | None = None
    answer: dict[str, Any] | None = None
    record_ids: set[str] = field(default_factory=set)
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Each named record as `GET /api/trade/transactions/{id}` showed it last (`settle`)."""
    answer_s: float | None = None
    """From the first try until the final answer: what the client waited, retries included."""

    @property
    def answered(self) -> bool:
        """Answered with a record (200: mined; 202: sent, not mined yet)."""
        return self.status in {200, 202}

    @property
    def error_code(self) -> str | None:
        error = (self.answer or {}).get("error")
        return str(error.get("code")) if isinstance(error, dict) else None

    @property
    def retried(self) -> bool:
        return len(self.tries) > 1


def _record_ids_of(body: object) -> set[str]:
    """Every `transactionId` in an answer (the answer's own, or an error's details)."""
    found: set[str] = set()
    if isinstance(body, dict):
        for key, value in body.items():
            if key == "transactionId" and isinstance(value, str):
                found.add(value)
            else:
                found |= _record_ids_of(value)
    return found


UNAVAILABLE_STATUSES = frozenset({502, 503, 504})
MAX_INTERNAL_ERRORS = 3
"""A 500 (`internal_error`, an unhandled exception) is repeated this many times at most: a client retries a
server error a little, and a bug that answers 500 forever must end the request, not hide in retries."""


def should_retry(status: int, code: str | None, tries: Sequence[Try]) -> bool:
    """What a client does with an error answer: repeat it (same key) when it is retryable (its code says so,
    or the server is unavailable), and a 500 a few times."""
    if code in RETRYABLE_CODES or status in UNAVAILABLE_STATUSES:
        return True
    return status == 500 and sum(t.status == 500 for t in tries) < MAX_INTERNAL_ERRORS


class LoadDriver:
    """Sends `requests` from `concurrency` client threads, round-robin over the instances.

    A try that gets no HTTP answer (the instance died, or its connection was cut mid-request) or a retryable
    error is repeated with the same body and the same `Idempotency-Key` on the next instance, as a client
    would, until an answer comes or `give_up_s` has passed.
    """

    def __init__(
        self,
        cluster: Cluster,
        requests: Sequence[TradeRequest],
        *,
        concurrency: int = 8,
        request_timeout_s: float = 45.0,
        give_up_s: float = 300.0,
    ) -> None:
        self.cluster = cluster
        self.outcomes = [Outcome(request) for request in requests]
        self.concurrency = concurrency
        self.request_timeout_s = request_timeout_s
        self.give_up_s = give_up_s
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self._todo: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._done = 0
        self._in_flight: dict[int, int] = defaultdict(int)
        self._threads: list[threading.Thread] = []

    def start(self) -> LoadDriver:
        self.started_at = time.monotonic()
        for outcome in self.outcomes:
            self._todo.put(outcome)
        for number in range(self.concurrency):
            thread = threading.Thread(target=self._work, name=f"client-{number}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    @property
    def done(self) -> int:
        """Requests with a final answer so far."""
        with self._lock:
            return self._done

    @property
    def finished(self) -> bool:
        return all(not thread.is_alive() for thread in self._threads)

    def in_flight(self, index: int) -> int:
        """Requests instance `index` is answering right now."""
        with self._lock:
            return self._in_flight[index]

    def wait_for(self, done: int, timeout_s: float = 300.0) -> bool:
        """Block until `done` requests are answered (or the load finished); whether it is still running."""
        deadline = time.monotonic() + timeout_s
        while self.done < done and not self.finished and time.monotonic() < deadline:
            time.sleep(0.02)
        return not self.finished

    def join(self, timeout_s: float | None = None) -> list[Outcome]:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        if not self.finished:
            raise HarnessError(f"the load did not finish in time ({self.done}/{len(self.outcomes)} answered)")
        return self.outcomes

    @property
    def elapsed_s(self) -> float:
        if self.started_at is None:
            return 0.0
        return (self.finished_at or time.monotonic()) - self.started_at

    def _work(self) -> None:
        with httpx.Client(timeout=self.request_timeout_s) as client:
            while True:
                try:
                    outcome = self._todo.get_nowait()
                except queue.Empty:
                    break
                self._send(client, outcome)
                with self._lock:
                    self._done += 1
                    if self._done == len(self.outcomes):
                        self.finished_at = time.monotonic()

    def _send(self, client: httpx.Client, outcome: Outcome) -> None:
        request = outcome.request
        instances = self.cluster.instances
        owner = self.cluster.world.owners[request.owner]
        headers = {"authorization": f"Bearer {owner.api_key}", "idempotency-key": request.idempotency_key}
        began = time.monotonic()
        give_up = began + self.give_up_s
        turn = request.index
        while time.monotonic() < give_up:
            instance = instances[turn % len(instances)]
            turn += 1
            started = time.monotonic()
            with self._lock:
                self._in_flight[instance.index] += 1
            try:
                response = client.post(instance.url + request.path, json=dict(request.body), headers=headers)
            except httpx.TransportError as exc:
                outcome.tries.append(
                    Try(instance.index, None, type(exc).__name__, time.monotonic() - started)
                )
                time.sleep(0.1)
                continue
            finally:
                with self._lock:
                    self._in_flight[instance.index] -= 1
            try:
                body = response.json()
            except ValueError:
                body = {"error": {"code": "not_json", "message": response.text[:200]}}
            outcome.record_ids |= _record_ids_of(body)
            code = body["error"].get("code") if isinstance(body, dict) and "error" in body else None
            outcome.tries.append(Try(instance.index, response.status_code, code, time.monotonic() - started))
            if response.status_code < 400 or not should_retry(response.status_code, code, outcome.tries):
                outcome.status, outcome.answer = response.status_code, body
                outcome.answer_s = time.monotonic() - began
                return
            time.sleep(0.25)


def settle(cluster: Cluster, outcomes: Sequence[Outcome], *, timeout_s: float = 120.0) -> list[str]:
    """Poll every record any answer named (`GET /api/trade/transactions/{id}`, any running instance) until
    it is final; returns the ids still not final when time ran out."""
    owners = cluster.world.owners
    waiting = [(outcome, record_id) for outcome in outcomes for record_id in sorted(outcome.record_ids)]
    deadline = time.monotonic() + timeout_s
    turn = 0
    with httpx.Client(timeout=10) as client:
        while waiting and time.monotonic() < deadline:
            still: list[tuple[Outcome, str]] = []
            for outcome, record_id in waiting:
                running = [i for i in cluster.instances if i.running]
                if not running:
                    still.append((outcome, record_id))
                    continue
                instance = running[turn % len(running)]
                turn += 1
                key = owners[outcome.request.owner].api_key
                try:
                    response = client.get(
                        f"{instance.url}/api/trade/transactions/{record_id}",
                        headers={"authorization": f"Bearer {key}"},
                    )
                    body = response.json()
                except (httpx.HTTPError, ValueError):
                    still.append((outcome, record_id))
                    continue
                if response.status_code == 200 and isinstance(body, dict):
                    outcome.records[record_id] = body
                    if body.get("status") in FINAL_STATUSES:
                        continue
                still.append((outcome, record_id))
            waiting = still
            if waiting:
                time.sleep(0.5)
    return [record_id for _, record_id in waiting]


# --- chaos --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kill:
    """One SIGKILL of a sender, and what followed."""

    instance: int
    answered_before: int
    in_flight: int
    """Requests the killed instance was answering at the moment it died."""
    takeover_s: float | None
    """From the kill until another instance's `/health` showed the lease `mine` (None: no other instance)."""
    new_holder: int | None
    restart_s: float
    """From the restart until the killed instance answered `/health` again."""
    down_s: float
    """From the kill until the killed instance answered again."""


@dataclass(frozen=True)
class Cut:
    """One database connection cut."""

    instance: int
    seconds: float
    was_holder: bool
    takeover_s: float | None
    """When the cut instance held the lease: from the cut until another instance showed it `mine`."""
    new_holder: int | None


@dataclass
class ChaosLog:
    kills: list[Kill] = field(default_factory=list)
    cuts: list[Cut] = field(default_factory=list)

    def takeovers_s(self) -> list[float]:
        return [k.takeover_s for k in self.kills if k.takeover_s is not None]

    def to_dict(self) -> dict[str, Any]:
        takeovers = self.takeovers_s()
        return {
            "kills": [asdict(k) for k in self.kills],
            "cuts": [asdict(c) for c in self.cuts],
            "takeover_s": {
                "count": len(takeovers),
                "min": min(takeovers, default=None),
                "max": max(takeovers, default=None),
                "mean": sum(takeovers) / len(takeovers) if takeovers else None,
            },
        }


def kill_lease_holder(
    cluster: Cluster,
    driver: LoadDriver | None = None,
    *,
    lease: str | None = None,
    timeout_s: float = 30.0,
    in_flight_wait_s: float = 5.0,
) -> Kill:
    """SIGKILL the instance holding the (first) signer's lease, mid-flight: once it is answering at least one
    of the driver's requests (or after `in_flight_wait_s`); time another instance's takeover, restart the
    killed one and wait until it answers again."""
    holder = cluster.wait_for_holder(lease, timeout_s=timeout_s)
    if driver is not None:
        deadline = time.monotonic() + in_flight_wait_s
        while driver.in_flight(holder) == 0 and not driver.finished and time.monotonic() < deadline:
            time.sleep(0.01)
    answered = driver.done if driver else 0
    in_flight = driver.in_flight(holder) if driver else 0
    killed_at = cluster.kill(holder)
    takeover_s = new_holder = None
    if any(i.running for i in cluster.instances):
        new_holder = cluster.wait_for_holder(lease, exclude=frozenset({holder}), timeout_s=timeout_s)
        takeover_s = time.monotonic() - killed_at
    restart_s = cluster.restart(holder)
    return Kill(holder, answered, in_flight, takeover_s, new_holder, restart_s, time.monotonic() - killed_at)


def cut_database(cluster: Cluster, index: int, *, seconds: float = 10.0, lease: str | None = None) -> Cut:
    """Cut instance `index` off the database for `seconds`; when it held the lease, time the takeover."""
    was_holder = cluster.lease_holder(lease) == index
    cut_at = time.monotonic()
    cluster.cut_database(index)
    takeover_s = new_holder = None
    try:
        if was_holder:
            with contextlib.suppress(HarnessError):
                new_holder = cluster.wait_for_holder(lease, exclude=frozenset({index}), timeout_s=seconds)
                takeover_s = time.monotonic() - cut_at
        time.sleep(max(0.0, cut_at + seconds - time.monotonic()))
    finally:
        cluster.restore_database(index)
    return Cut(index, seconds, was_holder, takeover_s, new_holder)


# --- the verdict: chain and database ------------------------------------------------------------------------


@dataclass(frozen=True)
class JournalAttempt:
    tx_hash: str
    seq: int
    kind: str
    raw: bytes


@dataclass(frozen=True)
class JournalRecord:
    """A row of `records` with its `attempts`, as the store holds it (read with SQL, not the relayer)."""

    id: str
    kind: str
    status: str
    sender: str
    nonce: int | None
    to: str
    data: bytes
    value_wei: int
    idempotency_key: str | None
    mined_hash: str | None
    attempts: tuple[JournalAttempt, ...]


_RECORDS_SQL = (
    "SELECT id, kind, status, sender, nonce, to_address, data, value_wei, idempotency_key, mined FROM records"
)
_ATTEMPTS_SQL = "SELECT tx_hash, record_id, seq, kind, raw_tx FROM attempts ORDER BY record_id, seq"


_INTENTS_SQL = "SELECT id, signer, state, error FROM intents"


def query_store(cluster: Cluster, statement: str) -> list[dict[str, Any]] | None:
    """The rows of `statement` in the cluster's store (SQLite file or PostgreSQL); None when a table it reads
    does not exist there (an older schema)."""
    if cluster.config.database_url is None:
        connection = sqlite3.connect(cluster.journal_path, timeout=30)
        connection.row_factory = sqlite3.Row
        try:
            return [dict(row) for row in connection.execute(statement)]
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return None
            raise
        finally:
            connection.close()
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(cluster.config.database_url, row_factory=dict_row, autocommit=True) as pg:
        try:
            return list(pg.execute(statement).fetchall())
        except psycopg.errors.UndefinedTable:
            return None


def read_journal(cluster: Cluster) -> list[JournalRecord]:
    """Every relay record in the cluster's store with its attempts, straight from the tables."""
    record_rows = query_store(cluster, _RECORDS_SQL) or []
    attempt_rows = query_store(cluster, _ATTEMPTS_SQL) or []
    attempts: dict[str, list[JournalAttempt]] = defaultdict(list)
    for row in attempt_rows:
        attempts[str(row["record_id"])].append(
            JournalAttempt(str(row["tx_hash"]), int(row["seq"]), str(row["kind"]), bytes(row["raw_tx"]))
        )
    records = []
    for row in record_rows:
        mined = row["mined"]
        if isinstance(mined, str | bytes):
            mined = json.loads(mined)
        records.append(
            JournalRecord(
                id=str(row["id"]),
                kind=str(row["kind"]),
                status=str(row["status"]),
                sender=str(row["sender"]),
                nonce=None if row["nonce"] is None else int(row["nonce"]),
                to=str(row["to_address"]),
                data=bytes(row["data"]),
                value_wei=int(row["value_wei"]),
                idempotency_key=row["idempotency_key"],
                mined_hash=mined.get("tx_hash") if isinstance(mined, dict) else None,
                attempts=tuple(attempts.get(str(row["id"]), ())),
            )
        )
    return records


@dataclass(frozen=True)
class MinedTx:
    tx_hash: str
    sender: str
    nonce: int
    to: str | None
    data: bytes
    block: int


def signer_transactions(cluster: Cluster) -> dict[tuple[str, int], MinedTx]:
    """Every transaction of a relayer signer mined since the run began, by (sender lower-case, nonce)."""
    w3 = cluster.w3_chain.w3
    signers = {s.lower() for s in cluster.world.signers}
    found: dict[tuple[str, int], MinedTx] = {}
    for number in range(cluster.world.start_block, int(w3.eth.block_number) + 1):
        block = w3.eth.get_block(number, full_transactions=True)
        for tx in block["transactions"]:
            assert isinstance(tx, Mapping)
            sender = str(tx["from"]).lower()
            if sender in signers:
                found[(sender, int(tx["nonce"]))] = MinedTx(
                    tx_hash=tx["hash"].to_0x_hex(),
                    sender=sender,
                    nonce=int(tx["nonce"]),
                    to=None if tx.get("to") is None else str(tx["to"]),
                    data=bytes(tx["input"]),
                    block=number,
                )
    return found


def take_profit_events(cluster: Cluster) -> dict[int, list[tuple[str, bytes]]]:
    """Every take-profit `TriggerSet` since the run began: price -> [(transaction hash, position id)]."""
    vault = VaultReader(cluster.w3_chain.w3, cluster.world.vault)
    events: dict[int, list[tuple[str, bytes]]] = defaultdict(list)
    for log in vault.contract.events.TriggerSet().get_logs(from_block=cluster.world.start_block):
        args = log["args"]
        if args["isTakeProfit"]:
            events[int(args["price"])].append((log["transactionHash"].to_0x_hex(), bytes(args["positionId"])))
    return events


@dataclass
class Verdict:
    """The checks' findings (`problems` empty: every invariant held) and what they counted."""

    problems: list[str] = field(default_factory=list)
    requests: int = 0
    answered: int = 0
    answered_pending: int = 0
    retried: int = 0
    records: int = 0
    signer_nonces: dict[str, list[int]] = field(default_factory=dict)
    """Per signer: [start nonce, chain nonce at the end]."""
    answer_s: dict[str, float] = field(default_factory=dict)
    """What clients waited for their answers (retries included): median, 95th percentile, max."""
    tries: dict[str, int] = field(default_factory=dict)
    """Every try's outcome, counted: HTTP status and error code, or the transport error."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def verify(cluster: Cluster, outcomes: Sequence[Outcome]) -> Verdict:
    """Every invariant of the issue, from the chain and the store's tables:

    - every request was answered with a record, one record only, and that record is confirmed;
    - its effect is on chain exactly once (one `TriggerSet` at its unique price, on its position, in the
      transaction its record says was mined); a request answered with an error had no effect;
    - per signer, the journal's nonces are contiguous from the start nonce and the chain's count equals them;
    - no (signer, nonce) with two records, no attempt whose signed payload differs from its record's, and the
      transaction mined at each nonce is one of that record's attempts.
    """
    verdict = Verdict(requests=len(outcomes))
    problems = verdict.problems
    world = cluster.world
    events = take_profit_events(cluster)
    journal = read_journal(cluster)
    mined = signer_transactions(cluster)
    verdict.records = len(journal)
    by_id = {record.id: record for record in journal}

    # The answers, and each request's effect on chain.
    prices = {outcome.request.price_e8 for outcome in outcomes}
    waits = sorted(o.answer_s for o in outcomes if o.answer_s is not None)
    if waits:
        verdict.answer_s = {
            "median": round(waits[len(waits) // 2], 2),
            "p95": round(waits[min(len(waits) - 1, int(len(waits) * 0.95))], 2),
            "max": round(waits[-1], 2),
        }
    tries: dict[str, int] = defaultdict(int)
    for outcome in outcomes:
        for attempt in outcome.tries:
            tries[" ".join(str(part) for part in (attempt.status, attempt.code) if part is not None)] += 1
    verdict.tries = dict(sorted(tries.items()))
    for outcome in outcomes:
        request = outcome.request
        name = f"request {request.index} ({request.idempotency_key})"
        seen = events.get(request.price_e8, [])
        verdict.retried += outcome.retried
        if not outcome.answered:
            last = ", ".join(f"i{t.instance}:{t.status or t.code}" for t in outcome.tries[-5:])
            what = f"answered {outcome.status} {outcome.error_code}" if outcome.status else "never answered"
            problems.append(f"{name}: {what} (last tries {last})")
            if seen:
                problems.append(
                    f"{name}: not answered with a record, yet executed on chain {len(seen)} time(s)"
                )
            continue
        verdict.answered += 1
        verdict.answered_pending += outcome.status == 202
        if len(outcome.record_ids) != 1:
            problems.append(
                f"{name}: answered with {len(outcome.record_ids)} records {sorted(outcome.record_ids)}"
            )
        position = world.owners[request.owner].position_id
        if len(seen) != 1:
            problems.append(f"{name}: its take-profit is on chain {len(seen)} times (expected once)")
        elif seen[0][1] != position:
            problems.append(f"{name}: its take-profit was set on position 0x{seen[0][1].hex()}, not its own")
        for record_id in outcome.record_ids:
            view = outcome.records.get(record_id, {})
            if view.get("status") != TxStatus.CONFIRMED.value:
                problems.append(f"{name}: record {record_id} ended {view.get('status', 'unseen')}")
            stored = by_id.get(record_id)
            if stored is None:
                problems.append(f"{name}: record {record_id} is not in the store")
            elif len(seen) == 1 and stored.mined_hash != seen[0][0]:
                problems.append(
                    f"{name}: record {record_id} mined {stored.mined_hash}, the event is in {seen[0][0]}"
                )
    for price, found in events.items():
        if price not in prices:
            problems.append(f"a take-profit at {price} no request asked for: {found}")

    # The store: nonces, payloads, records per request.
    signers = {s.lower(): s for s in world.signers}
    nonces: dict[str, list[int]] = defaultdict(list)
    by_slot: dict[tuple[str, int], list[JournalRecord]] = defaultdict(list)
    for record in journal:
        if record.kind == "raw" or record.sender.lower() not in signers:
            continue
        if record.status not in FINAL_STATUSES:
            problems.append(f"record {record.id} still {record.status} at the end")
        if record.nonce is None:
            problems.append(f"record {record.id} ({record.status}) never got a nonce")
            continue
        nonces[record.sender.lower()].append(record.nonce)
        by_slot[(record.sender.lower(), record.nonce)].append(record)
        problems.extend(_payload_problems(record))
    for (sender, nonce), records in by_slot.items():
        if len(records) > 1:
            problems.append(
                f"{sender} nonce {nonce} journaled {len(records)} times: {[r.id for r in records]}"
            )
        tx = mined.get((sender, nonce))
        if tx is None:
            problems.append(f"{sender} nonce {nonce} (record {records[0].id}) was never mined")
        elif all(tx.tx_hash not in {a.tx_hash for a in r.attempts} for r in records):
            problems.append(
                f"{sender} nonce {nonce}: the chain mined {tx.tx_hash}, which no attempt of it signed"
            )
    w3 = cluster.w3_chain.w3
    for lower, address in signers.items():
        start = world.start_nonces[address]
        used = sorted(nonces[lower])
        chain_nonce = int(w3.eth.get_transaction_count(to_checksum_address(address)))
        verdict.signer_nonces[address] = [start, chain_nonce]
        if used != list(range(start, start + len(used))):
            problems.append(f"{address}: journal nonces not contiguous from {start}: {_gaps(used, start)}")
        if chain_nonce != start + len(used):
            problems.append(f"{address}: chain nonce {chain_nonce}, journal used {len(used)} from {start}")
        unknown = sorted(n for (s, n) in mined if s == lower and (s, n) not in by_slot)
        if unknown:
            problems.append(f"{address}: nonces mined that no record holds: {unknown[:20]}")

    # Intents (a call received by an instance without the signer's lease): none left waiting.
    for intent in query_store(cluster, _INTENTS_SQL) or []:
        if intent["state"] != "failed":
            problems.append(
                f"intent {intent['id']} for {intent['signer']} still {intent['state']} at the end"
            )

    # Records carrying each request's call: at most one that did not end unsuccessful.
    carrying: dict[int, list[JournalRecord]] = defaultdict(list)
    for record in journal:
        carried = take_profit_price(record.data)
        if carried is not None:
            carrying[carried].append(record)
    for outcome in outcomes:
        live = [r for r in carrying[outcome.request.price_e8] if r.status not in UNSUCCESSFUL_STATUSES]
        if len(live) > 1:
            problems.append(
                f"request {outcome.request.index}: {len(live)} live records carry its call:"
                f" {[r.id for r in live]}"
            )
    return verdict


def take_profit_price(data: bytes) -> int | None:
    """The price of a `setTakeProfit` call (None: another call)."""
    try:
        function, args = calldata.decode_call(data)
    except ValueError:
        return None
    return int(args["price"]) if function == "setTakeProfit" else None


def _payload_problems(record: JournalRecord) -> list[str]:
    """Every attempt of `record` is signed by its sender at its nonce, and carries its call (a no-op: nothing,
    to the sender itself)."""
    problems = []
    for attempt in record.attempts:
        try:
            tx = decode_raw_transaction(attempt.raw)
        except RelayerError:
            problems.append(f"record {record.id} attempt {attempt.seq}: its signed bytes do not decode")
            continue
        where = f"record {record.id} attempt {attempt.seq} ({attempt.kind})"
        if tx.sender.lower() != record.sender.lower() or tx.nonce != record.nonce:
            problems.append(
                f"{where}: signed by {tx.sender} at nonce {tx.nonce}, not {record.sender} {record.nonce}"
            )
        if attempt.kind == "noop":
            if tx.data or (tx.to or "").lower() != record.sender.lower():
                problems.append(f"{where}: a no-op that calls something")
        elif (
            tx.data != record.data
            or (tx.to or "").lower() != record.to.lower()
            or tx.value_wei != record.value_wei
        ):
            problems.append(f"{where}: signs another payload than its record's (two payloads at one nonce)")
    return problems


def _gaps(used: Sequence[int], start: int) -> str:
    expected = set(range(start, start + len(used)))
    duplicates = sorted({n for n in used if used.count(n) > 1})
    missing, beyond = sorted(expected - set(used)), sorted(set(used) - expected)
    return f"missing {missing[:20]}, duplicated {duplicates[:20]}, beyond {beyond[:20]}"
