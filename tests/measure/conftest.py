"""Fixtures of the measurement suite: the real app over a recording proxy in front of the session's anvil.

The app is built as `relayer serve` builds it for a node (`Settings.load` with the node's URL, which here is
the proxy's), so the one chain client (`ChainClient` over the batching `JsonRpcTransport`) reaches the node
through the proxy and every JSON-RPC call it makes is recorded. The test
fixtures that set the chain up (deploying, opening positions, approving operators, moving prices) talk to
anvil directly and are never recorded.

Nothing runs in the background during a measurement: the keeper loop is off (`keeper_interval_s=0`), and the
relay's background loop is stopped once the app is up, after which the relay is resumed by hand (the round
the loop would have run first). A test that needs the relay to move a record on calls `relay.tick()` itself
and measures that round on its own. The services are async and live on the app's event loop (the test
client's portal); tests reach them through `tests.blocking.Blocking`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient

from relayer.chain.connect import Chain
from relayer.chain.deploy import Deployment
from relayer.config import RelaySettings, Settings, TradingSettings
from relayer.faces.api.app import create_app
from relayer.faces.cli import keys as keys_cli
from relayer.runtime import Runtime
from relayer.services.keeper import Keeper
from relayer.services.relay.service import RelayService
from relayer.services.relay.signers import Signer
from tests.blocking import Blocking
from tests.relay.proxy import RecordingProxy

REPORT_FILE = "round-trips.json"
"""Written under pytest's base temporary directory at the end of the session (and printed with `-s`)."""


@dataclass
class ProxiedApp:
    """A running app whose every node request passes `proxy`."""

    client: TestClient
    runtime: Runtime
    proxy: RecordingProxy

    @property
    def relay(self) -> Blocking[RelayService]:
        assert self.client.portal is not None
        return Blocking(self.runtime.require_relay(), self.client.portal)

    @property
    def keeper(self) -> Blocking[Keeper]:
        assert self.runtime.keeper is not None
        assert self.client.portal is not None
        return Blocking(self.runtime.keeper, self.client.portal)

    def key(self, account: LocalAccount) -> str:
        """A real API key (read and trade) for `account`."""
        # The key store has its own port since issue 9; before it, keys lived in the relay journal.
        store: Any = getattr(self.runtime, "keys", None) or self.relay.journal
        key, _ = keys_cli.create_key(store, account=account.address, scopes="read,trade")
        return key


@pytest.fixture
def proxy(chain: Chain) -> Iterator[RecordingProxy]:
    """A recording HTTP proxy in front of the session's anvil node."""
    if chain.is_embedded:
        pytest.fail("the round-trip measurements need a node over HTTP: mark the test only_backend('anvil')")
    recorder = RecordingProxy(int(chain.name.rsplit(":", 1)[1]))
    recorder.start()
    try:
        yield recorder
    finally:
        recorder.stop()


@pytest.fixture
def proxied_app(
    proxy: RecordingProxy, deployment: Deployment, accounts: list[LocalAccount], tmp_path: Path
) -> Iterator[Callable[[], ProxiedApp]]:
    """Factory: start the app (relayer signers `accounts[5]`, `accounts[6]`) over the proxy, with nothing left
    running in the background."""
    opened: list[TestClient] = []

    def _make() -> ProxiedApp:
        settings = Settings.load(
            {},
            rpc_url=proxy.url,
            vault_address=deployment.address,
            relay=RelaySettings(journal_path=tmp_path / "journal.sqlite3", retry_backoff_s=0.0),
            trading=TradingSettings(receipt_timeout_s=10.0, poll_interval_s=0.01),
            keeper_interval_s=0,
            keeper_from_block=deployment.block_number,
        )
        app = create_app(settings, signers=[Signer(accounts[5]), Signer(accounts[6])])
        client = TestClient(app)
        client.__enter__()
        opened.append(client)
        runtime: Runtime = app.state.runtime
        assert client.portal is not None
        relay = Blocking(runtime.require_relay(), client.portal)
        relay.stop()  # the background loop: after its current round (if it started one), never again
        relay.resume()  # what its first round does; harmless when that round already ran
        return ProxiedApp(client, runtime, proxy)

    yield _make
    for client in reversed(opened):
        client.__exit__(None, None, None)


@pytest.fixture(scope="session")
def round_trip_report(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Measurements by path: written to `<basetemp>/round-trips.json`, printed at the end of the session."""
    report: dict[str, Any] = {}
    yield report
    if not report:
        return
    path = tmp_path_factory.getbasetemp() / REPORT_FILE
    path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    print(f"\nnode round trips per request (also in {path}):")
    for name, phases in report.items():
        for phase, tally in phases.items():
            methods = ", ".join(f"{m} {n}" for m, n in sorted(tally["callsByMethod"].items()))
            stacks = ", ".join(f"{k} {n}" for k, n in sorted(tally["roundTripsByClient"].items()))
            print(
                f"  {name:<22} {phase:<13} round trips {tally['roundTrips']:>2} ({stacks})"
                f"  calls {tally['calls']:>2}  simulations {tally['simulations']}  [{methods}]"
            )
