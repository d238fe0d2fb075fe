"""`relayer serve` with no arguments: the embedded chain, the demo world, and a working API on a real port.

Every test that starts `relayer serve` gives it a journal of its own (`--journal` in `tmp_path`, or a
`tmp_path` working directory for the default): parallel workers must never share `.relayer/journal.sqlite3`.
"""

from __future__ import annotations

import os
import re
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import httpx
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from relayer.chain.connect import ANVIL_DEFAULT_KEYS, Chain, embedded_keys
from relayer.chain.deploy import Deployment
from relayer.faces.cli.common import EXIT_ERROR, EXIT_UNAVAILABLE
from relayer.faces.cli.keys import create_key
from relayer.stores.journal import SqliteJournal
from relayer.stores.journal_chains import ChainBinding
from relayer.stores.keys import SqliteKeyStore
from tests.conftest import ROOT
from tests.relay.test_journal_binding import journal_with_a_record


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


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without any RELAYER_* variable (a developer's shell may set some)."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("RELAYER_")}, **extra}


@contextmanager
def serving(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> Iterator[Server]:
    """`relayer serve --port <free> *args` as a subprocess, once it answers /health; stopped on exit."""
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "relayer.faces.cli.main", "serve", "--port", str(port), *args],
        cwd=cwd,
        env=clean_env() if env is None else env,
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


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    with serving("--journal", str(tmp_path / "journal.sqlite3")) as running:
        yield running


def test_serve_without_arguments_is_ready_to_try(server: Server) -> None:
    output = server.output
    assert output.splitlines()[0].startswith("starting: on the embedded chain")
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


DEMO_TRADER = Account.from_key(embedded_keys()[1]).address
"""The embedded chain's first demo trader: the account of the printed demo keys and of the first positions."""

PARTIAL_CLOSE = {"symbol": "BTCUSDT", "exit_pct": 10, "side": "long"}


def _create_read_key(*args: str, cwd: Path) -> str:
    """`relayer keys create` (a subprocess, like a user's shell) of a read key for the demo trader."""
    command = [sys.executable, "-m", "relayer.faces.cli.main", "keys", "create", "--account", DEMO_TRADER]
    created = subprocess.run(
        [*command, "--scopes", "read", *args],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return created.stdout.splitlines()[0]


def _bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def _partial_close(server: Server, key: str) -> httpx.Response:
    """Take 10% off the demo trader's BTC long through the relayer, with `key`."""
    return httpx.post(server.base_url + "/api/partialclose", json=PARTIAL_CLOSE, headers=_bearer(key))


def _demo_keys(output: str) -> tuple[str, str]:
    """(read,trade key, read key) from the banner."""
    trade = re.search(r"scopes read,trade\s+(vrk_[A-Za-z0-9_-]{32})", output)
    read = re.search(r"scope read\s+(vrk_[A-Za-z0-9_-]{32})", output)
    assert trade is not None, output
    assert read is not None, output
    return trade.group(1), read.group(1)


def test_a_key_from_keys_create_works_on_serve_in_the_same_folder(tmp_path: Path) -> None:
    """The default journal (`.relayer/journal.sqlite3` in the current directory) is the same file for
    `relayer keys create` and `relayer serve`, created private (folder 0700, file 0600)."""
    key = _create_read_key(cwd=tmp_path)
    folder = tmp_path / ".relayer"
    journal = folder / "journal.sqlite3"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(journal.stat().st_mode) == 0o600

    with serving(cwd=tmp_path) as server:
        mine = httpx.get(server.base_url + "/api/trade/positions", headers=_bearer(key))
        trade_key, read_key = _demo_keys(server.output)
        read = httpx.get(server.base_url + "/api/trade/positions", headers=_bearer(read_key))
        refused = httpx.post(
            server.base_url + "/api/partialclose", json=PARTIAL_CLOSE, headers=_bearer(read_key)
        )
        traded = httpx.post(
            server.base_url + "/api/partialclose", json=PARTIAL_CLOSE, headers=_bearer(trade_key)
        )
        wal = journal.with_name(journal.name + "-wal")
        wal_mode = stat.S_IMODE(wal.stat().st_mode) if wal.exists() else 0o600

    assert str(journal) in server.output
    assert mine.status_code == 200, mine.text
    assert mine.json()["account"] == DEMO_TRADER
    owned = {(p["market"], p["side"]) for p in mine.json()["positions"]}
    assert owned == {("BTCUSDT", "long"), ("ETHUSDT", "short")}
    assert read.status_code == 200, read.text
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "insufficient_scope"
    assert traded.status_code == 200, traded.text
    assert stat.S_IMODE(journal.stat().st_mode) == 0o600
    assert wal_mode == 0o600  # SQLite gives its side files the journal's own mode


def test_a_restarted_embedded_serve_starts_its_new_chain_clean(tmp_path: Path) -> None:
    """The journal persists across runs, the embedded chain does not: the second run drops the first run's
    relay records (a trade on the new chain reuses the signer's nonces without colliding with them) and
    revokes its demo keys, and keeps every other API key."""
    journal = tmp_path / "journal.sqlite3"
    with serving("--journal", str(journal), "--price-feed-interval", "0") as first:
        old_trade, old_read = _demo_keys(first.output)
        traded = httpx.post(
            first.base_url + "/api/partialclose", json=PARTIAL_CLOSE, headers=_bearer(old_trade)
        )
        assert traded.status_code == 200, traded.text
        assert "dropped" not in first.output
    kept = _create_read_key("--journal", str(journal), cwd=tmp_path)

    with serving("--journal", str(journal), "--price-feed-interval", "0") as second:
        new_trade, new_read = _demo_keys(second.output)
        revoked = httpx.get(second.base_url + "/api/trade/positions", headers=_bearer(old_read))
        still = httpx.get(second.base_url + "/api/trade/positions", headers=_bearer(kept))
        again = httpx.post(
            second.base_url + "/api/partialclose", json=PARTIAL_CLOSE, headers=_bearer(new_trade)
        )
        record = httpx.get(
            second.base_url + f"/api/trade/transactions/{traded.json()['transactionId']}",
            headers=_bearer(new_read),
        )

    assert "dropped 1 relay records of an earlier run's embedded chain" in second.output
    assert {new_trade, new_read}.isdisjoint({old_trade, old_read})
    assert revoked.status_code == 401
    assert still.status_code == 200, still.text
    assert again.status_code == 200, again.text  # same signer, nonce 0 again: no UNIQUE(sender, nonce) clash
    assert record.status_code == 404  # the first run's record is gone with its chain
    stored, key_store = SqliteJournal(journal), SqliteKeyStore(journal)
    try:
        keys = [(key.label, key.revoked_at is None) for key in key_store.api_keys()]
        records = [record.id for record in stored.records()]
    finally:
        stored.close()
        key_store.close()
    assert records == [again.json()["transactionId"]]
    assert keys == [  # by id: run 1's demo keys revoked, the user's kept, run 2's demo keys active
        ("embedded-demo", False),
        ("embedded-demo-read", False),
        ("", True),
        ("embedded-demo", True),
        ("embedded-demo-read", True),
    ]


def _serve_and_fail(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`relayer serve *args` expected to stop at its start-up checks (a timeout means it started serving)."""
    return subprocess.run(
        [sys.executable, "-m", "relayer.faces.cli.main", "serve", "--port", str(_free_port()), *args],
        env=clean_env() if env is None else env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _assert_one_line_error(result: subprocess.CompletedProcess[str], code: str, exit_code: int) -> None:
    assert result.returncode == exit_code, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error [{code}]: ")
    assert "embedded" not in result.stdout  # a node's start says what it does, not the embedded chain's


def test_a_node_that_is_down_is_one_line_and_exit_3(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_free_port()}"  # nobody listens there
    vault = Account.from_key(embedded_keys()[0]).address

    result = _serve_and_fail("--rpc-url", url, "--vault", vault, "--journal", str(tmp_path / "j.sqlite3"))

    _assert_one_line_error(result, "chain_unavailable", EXIT_UNAVAILABLE)
    assert result.stdout.splitlines() == [f"starting: checking the node at {url} and the vault {vault}..."]


@pytest.mark.only_backend("anvil")
def test_an_address_without_the_vault_is_one_line_and_exit_1(
    chain: Chain, accounts: list[LocalAccount], tmp_path: Path
) -> None:
    stranger = accounts[9].address  # an account, no code

    result = _serve_and_fail("--rpc-url", chain.name, "--vault", stranger, "--journal", str(tmp_path / "j"))

    _assert_one_line_error(result, "vault_not_deployed", EXIT_ERROR)
    assert stranger in result.stdout


@pytest.mark.only_backend("anvil")
def test_a_journal_of_another_chain_is_refused_at_start(
    chain: Chain, deployment: Deployment, tmp_path: Path
) -> None:
    """A journal holding records of another chain (here: a node that was reset) must not be resumed there."""
    journal = tmp_path / "journal.sqlite3"
    journal_with_a_record(journal, ChainBinding(31337, "0x" + "ee" * 32))
    env = clean_env(RELAYER_SIGNER_KEY=ANVIL_DEFAULT_KEYS[5])

    result = _serve_and_fail(
        "--rpc-url", chain.name, "--vault", deployment.address, "--journal", str(journal), env=env
    )

    _assert_one_line_error(result, "configuration_error", EXIT_ERROR)
    assert "holds 1 relay records of chain 31337" in result.stderr
    assert ANVIL_DEFAULT_KEYS[5].removeprefix("0x") not in result.stdout + result.stderr


def test_an_embedded_serve_in_a_node_servers_folder_leaves_its_records_alone(tmp_path: Path) -> None:
    """A node's server and an embedded demo started in the same folder share `.relayer/journal.sqlite3`: the
    embedded start must neither refuse the file nor drop, resume or list the node's records."""
    journal = tmp_path / ".relayer" / "journal.sqlite3"
    journal.parent.mkdir(mode=0o700)
    journal_with_a_record(journal, ChainBinding(31337, "0x" + "ee" * 32), "node-record")
    with closing(SqliteKeyStore(journal)) as keys:  # `admin`: every account's records are listed
        admin, _ = create_key(keys, account="0x" + "aa" * 20, scopes="read,admin")

    with serving("--price-feed-interval", "0", cwd=tmp_path) as server:
        listed = httpx.get(
            server.base_url + "/api/transactions", headers={"Authorization": f"Bearer {admin}"}
        )

    assert "dropped" not in server.output
    assert listed.status_code == 200, listed.text
    assert "node-record" not in listed.text
    stored = SqliteJournal(journal)
    try:
        record = stored.get("node-record")
    finally:
        stored.close()
    assert record is not None
    assert record.status.value == "queued"  # still the node's, untouched: its own server resumes it


def test_a_second_relaying_process_on_a_journal_is_refused(tmp_path: Path) -> None:
    """Two relayers on one journal would number the same nonces: the second `relayer serve` stops at once
    with one line naming the journal; readers such as `relayer keys list` still work beside the first."""
    journal = tmp_path / "journal.sqlite3"
    with serving("--journal", str(journal), "--price-feed-interval", "0") as first:
        second = _serve_and_fail("--journal", str(journal))
        keys = subprocess.run(
            [sys.executable, "-m", "relayer.faces.cli.main", "keys", "list", "--journal", str(journal)],
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        still = httpx.get(first.base_url + "/health")

    assert second.returncode == EXIT_ERROR, second.stdout + second.stderr
    assert "Traceback" not in second.stdout + second.stderr
    (line,) = second.stderr.splitlines()
    assert line.startswith("error [configuration_error]: another process (pid ")
    assert f"is relaying through the journal {journal} " in line
    assert "vault-relayer API on" not in second.stdout  # it stopped before its demo world and banner
    assert keys.returncode == 0, keys.stderr
    assert "embedded-demo" in keys.stdout
    assert still.status_code == 200


def test_the_embedded_chain_on_a_shared_database_is_refused_before_anything_starts(tmp_path: Path) -> None:
    """Each embedded chain lives in its process: instances sharing a database would drop each other's
    records."""
    journal = tmp_path / "j.sqlite3"
    url = f"postgresql://relayer@127.0.0.1:{_free_port()}/relayer"  # never reached: refused before
    result = _serve_and_fail("--database-url", url, "--journal", str(journal))

    assert result.returncode == EXIT_ERROR, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("error [configuration_error]: a shared database")
    assert "--rpc-url" in line
    assert not journal.exists()
