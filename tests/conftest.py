"""Shared fixtures: one chain per backend, one deployed vault per chain, snapshot/revert around every test.

The chain-facing suites are written once and run on both backends: the in-process eth-tester (py-evm) chain
and a real anvil node started from the pinned npm package. In CI (CI=true) a missing anvil is a failure, not a
skip, so the real-node suite can never silently disappear.
"""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from anyio.from_thread import BlockingPortal
from eth_account.signers.local import LocalAccount
from web3.types import TxReceipt

from relayer.chain.connect import ANVIL_DEFAULT_KEYS, Chain, embedded_chain, rpc_chain
from relayer.chain.deploy import Deployment, deploy_vault, set_price
from relayer.chain.transact import send
from relayer.chain.vault import VaultReader
from relayer.constants import PRICE_DECIMALS, SIZE_DECIMALS
from relayer.domain import calldata
from relayer.domain.markets import symbol_to_bytes32
from relayer.domain.units import to_fixed
from relayer.stores.location import StoreLocation
from tests.blocking import running_portal
from tests.cluster.harness import Anvil, HarnessError
from tests.cluster.harness import start_anvil as harness_start_anvil
from tests.pg import DEBIAN_SERVERS, PgCluster, find_bindir

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = ("eth-tester", "anvil")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_tool(path: Path | str, what: str) -> str:
    """The tool's path; a skip locally when missing, a failure in CI (a hidden missing tool is a bug)."""
    found = shutil.which(str(path)) or (str(path) if Path(path).exists() else None)
    if found is None:
        message = f"{what} is not installed ({path}): run scripts/setup.sh"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return found


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`@pytest.mark.only_backend("anvil")`: collect a chain test only for those backends;
    `@pytest.mark.only_store("sqlite")`: a store test only for those databases.

    Deselected, not skipped: a scenario that cannot exist on a backend (an in-process chain cannot go down, a
    PostgreSQL database is not a file) is not a test that failed to run.
    """
    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        params = callspec.params if callspec is not None else {}
        if any(
            (marker := item.get_closest_marker(name)) is not None
            and params.get(param) is not None
            and params[param] not in marker.args
            for name, param in (("only_backend", "chain"), ("only_store", "store"))
        ):
            dropped.append(item)
        else:
            keep.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


AnvilNode = Anvil
"""A throwaway anvil of a test's own (`tests.cluster.harness.Anvil`: `url`, `port`, `process`, `stop()`)."""


def start_anvil(*extra_args: str) -> AnvilNode:
    """Start a fresh anvil on a free loopback port and wait until it answers (a failure in CI when anvil is
    missing, a skip locally)."""
    binary = require_tool(ROOT / "node_modules" / ".bin" / "anvil", "anvil (npm @foundry-rs/anvil)")
    try:
        return harness_start_anvil(*extra_args, binary=binary)
    except HarnessError as exc:
        pytest.fail(str(exc))


def stop_anvil(node: AnvilNode) -> None:
    node.stop()


@pytest.fixture(scope="session", params=BACKENDS)
def chain(request: pytest.FixtureRequest) -> Iterator[Chain]:
    """A chain per backend for the whole session (tests restore it with snapshot/revert)."""
    if request.param == "eth-tester":
        yield embedded_chain()
        return
    node = start_anvil()
    try:
        yield rpc_chain(node.url, test_keys=list(ANVIL_DEFAULT_KEYS))
    finally:
        stop_anvil(node)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """A throwaway PostgreSQL cluster of this pytest process's own (one per xdist worker), for the session.

    Fast settings (no fsync) and `trust` auth on 127.0.0.1 (`tests/pg.py`); a skip locally when the server
    binaries are missing, a failure in CI.
    """
    initdb = (find_bindir() or DEBIAN_SERVERS / "*" / "bin") / "initdb"
    require_tool(initdb, "PostgreSQL server (Debian package postgresql)")
    if os.geteuid() == 0:
        require_tool("runuser", "runuser (util-linux, runs PostgreSQL as the postgres user)")
    with PgCluster() as cluster:
        yield cluster


@pytest.fixture
def database_url(pg_cluster: PgCluster) -> Iterator[str]:
    """The URL of a fresh, empty database for this test; dropped afterwards, open sessions and all."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    url = pg_cluster.create_database(name)
    try:
        yield url
    finally:
        pg_cluster.drop_database(name)


@pytest.fixture
def portal() -> Iterator[BlockingPortal]:
    """This test's event loop, in a thread of its own: the async services run on it (`tests/blocking.py`)."""
    with running_portal() as running:
        yield running


@pytest.fixture(scope="session")
def accounts(chain: Chain) -> list[LocalAccount]:
    """Funded accounts: [0] deploys and keeps prices, [1..] trade."""
    return chain.test_accounts()


@pytest.fixture(scope="session")
def deployer(accounts: list[LocalAccount]) -> LocalAccount:
    return accounts[0]


@pytest.fixture(scope="session")
def deployment(chain: Chain, deployer: LocalAccount) -> Deployment:
    """The vault, deployed once per chain with the default prices."""
    return deploy_vault(chain.w3, deployer)


@pytest.fixture(scope="session")
def vault(chain: Chain, deployment: Deployment) -> VaultReader:
    return VaultReader(chain.w3, deployment.address)


@pytest.fixture(autouse=True)
def _isolate(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every chain test starts from the deployed state and leaves no trace (snapshot before, revert after)."""
    if "chain" not in request.fixturenames:
        yield
        return
    chain: Chain = request.getfixturevalue("chain")
    request.getfixturevalue("deployment")
    snapshot = chain.snapshot()
    try:
        yield
    finally:
        chain.revert(snapshot)


STORES = ("sqlite", "postgres")
"""The two databases every store-backed suite runs on (`store`)."""


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreLocation:
    """Where this test's relayer keeps its data: a SQLite file in `tmp_path`, or a fresh PostgreSQL database
    (`database_url`); the same test runs on both."""
    if request.param == "postgres":
        return StoreLocation(tmp_path / "journal.sqlite3", request.getfixturevalue("database_url"))
    return StoreLocation(tmp_path / "journal.sqlite3")


@pytest.fixture
def transact(chain: Chain, deployment: Deployment) -> Callable[[LocalAccount, bytes], TxReceipt]:
    """Send vault calldata from an account (real eth-account signature) and return the receipt."""

    def _send(account: LocalAccount, data: bytes) -> TxReceipt:
        return send(chain.w3, account, deployment.address, data)

    return _send


@pytest.fixture
def open_position(
    vault: VaultReader, transact: Callable[[LocalAccount, bytes], TxReceipt], accounts: list[LocalAccount]
) -> Callable[..., bytes]:
    """Factory: open a position (size in base units as a Decimal) and return its id."""

    def _open(
        *,
        market: str = "BTCUSDT",
        is_long: bool = True,
        size: Decimal | str = "1",
        owner: LocalAccount | None = None,
    ) -> bytes:
        trader = owner or accounts[1]
        size_units = to_fixed(Decimal(size), SIZE_DECIMALS, "size")
        receipt = transact(
            trader, calldata.encode_call("openPosition", symbol_to_bytes32(market), is_long, size_units, 0)
        )
        (event,) = vault.contract.events.PositionOpened().process_receipt(receipt)
        return bytes(event["args"]["positionId"])

    return _open


@pytest.fixture
def set_market_price(
    chain: Chain, deployer: LocalAccount, deployment: Deployment
) -> Callable[[str, str], None]:
    """Set an oracle price in USD (decimal string) as the price keeper."""

    def _set(market: str, price_usd: str) -> None:
        set_price(chain.w3, deployer, deployment.address, market, Decimal(price_usd))

    return _set


def usd(price: str) -> int:
    """A USD decimal string as the vault's 8-decimal integer."""
    return to_fixed(Decimal(price), PRICE_DECIMALS, "price")


def units(size: str) -> int:
    """A base-asset decimal string as the vault's 18-decimal integer."""
    return to_fixed(Decimal(size), SIZE_DECIMALS, "size")
