"""`bench.py relay --instances 1,2,3 --store sqlite,postgres`: relayed throughput of several `relayer serve`
processes on one database, side by side in one run.

Each configuration gets a fresh anvil (one block a second unless `--block-time` says otherwise), a fresh
database (a PostgreSQL cluster started once for the run with PostgreSQL's default durability settings, and a
new database in it per configuration; or the SQLite journal file, which takes one instance), the same
requests (take-profit changes by API key, each at a price no other request uses, spread round-robin over the
instances), and the same checks afterwards, read from the chain and the store
(`tests.cluster.harness.verify`): every answered request on chain exactly once, nonces contiguous per signer,
no nonce with two payloads.
SQLite with more than one instance is not a configuration (its relay lock admits one relaying process), so it
is listed as such rather than run.

With `--observe on` the instances run their webhook dispatchers too: a global subscription (made with `relayer
webhooks add --global` once they have started, before the load) to a loopback receiver; what it got is
printed beside the run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relayer.stores.location import StoreLocation, open_journal
from relayer.stores.webhooks import WebhookStore
from tests.cluster.harness import (
    Cluster,
    ClusterConfig,
    LoadDriver,
    clean_env,
    relayer_command,
    settle,
    take_profit_requests,
    verify,
)
from tests.pg import PgCluster


@dataclass
class ClusterResult:
    store: str
    instances: int
    requests: int
    seconds: float
    median_answer_s: float
    p95_answer_s: float
    problems: list[str]
    webhooks: str | None = None

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds


def run_one(
    store: str,
    instances: int,
    args: argparse.Namespace,
    pg: PgCluster | None,
    number: int,
    env: dict[str, str] | None = None,
    receiver: Any = None,
) -> ClusterResult:
    """One configuration; with `receiver` (`bench_relay.start_receiver`), a global subscription to it."""
    database_url = None
    if store == "postgres":
        assert pg is not None
        database_url = pg.create_database(f"bench_{number}")
    config = ClusterConfig(
        instances=instances,
        database_url=database_url,
        signers=args.signers,
        block_time_s=1 if args.block_time is None else args.block_time,
        lease_ttl_s=10.0,
        env=env or {},
    )
    outbox = None
    with tempfile.TemporaryDirectory() as workdir, Cluster(config, Path(workdir)) as cluster:
        since = None if receiver is None else _subscribe(cluster, receiver)
        requests = take_profit_requests(cluster.world, args.count or 300, run=f"bench{number}")
        driver = LoadDriver(cluster, requests, concurrency=args.concurrency).start()
        outcomes = driver.join(timeout_s=1_200)
        seconds = driver.elapsed_s
        unsettled = settle(cluster, outcomes, timeout_s=300)
        verdict = verify(cluster, outcomes)
        if since is not None:
            outbox = _outbox(cluster, database_url, since, receiver)
    answers = sorted(outcome.answer_s for outcome in outcomes if outcome.answer_s is not None)
    problems = [*verdict.problems, *(f"record {rid} not final" for rid in unsettled)]
    return ClusterResult(
        store,
        instances,
        len(outcomes),
        seconds,
        statistics.median(answers) if answers else float("nan"),
        answers[int(len(answers) * 0.95) - 1] if answers else float("nan"),
        problems,
        outbox,
    )


def _subscribe(cluster: Cluster, receiver: Any) -> int:
    """A global subscription to `receiver` (`relayer webhooks add --global`, as an operator would); the
    latest notice id then (deliveries count from there)."""
    env = {**clean_env(), **cluster.store_env(None), "RELAYER_WEBHOOKS_ALLOW_PRIVATE_URLS": "true"}
    done = subprocess.run(
        [*relayer_command(), "webhooks", "add", "--global", "--url", receiver.url],
        env=env,
        cwd=cluster.workdir,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"relayer webhooks add failed: {done.stdout}{done.stderr}")
    webhook_id = done.stdout.split()[0]
    with _store(cluster, cluster.config.database_url) as store:
        hook = store.get(webhook_id)
        assert hook is not None
        return hook.cursor.id


def _outbox(cluster: Cluster, database_url: str | None, since: int, receiver: Any) -> str:
    import bench_relay  # beside this file (imported here: it imports this module)

    with _store(cluster, database_url) as store:
        return asyncio.run(bench_relay.wait_outbox(store, since, receiver))


@contextmanager
def _store(cluster: Cluster, database_url: str | None) -> Iterator[WebhookStore]:
    """The instances' webhook store, opened from this process."""
    journal = open_journal(StoreLocation(cluster.journal_path, database_url))
    try:
        yield WebhookStore(journal.db, cluster.world.chain_id)
    finally:
        journal.close()


def run(args: argparse.Namespace) -> int:
    stores = args.store.split(",") if args.store else ["sqlite", "postgres"]
    counts = [int(n) for n in args.instances.split(",")] if args.instances else [1, 2, 3]
    import bench_relay  # beside this file (imported here: it imports this module)

    observing = bench_relay.observe_modes(args)  # off, quiet, on (as served)
    pg = PgCluster(fast=False) if "postgres" in stores else None
    results: list[ClusterResult] = []
    skipped: list[str] = []
    try:
        if pg is not None:
            pg.start()
        for store in stores:
            for instances in counts:
                if store == "sqlite" and instances > 1:
                    skipped.append(f"sqlite x {instances}: not a configuration (one relaying process a file)")
                    continue
                for observe in observing:
                    started = time.monotonic()
                    env = bench_relay.observe_env(observe)
                    receiver = bench_relay.start_receiver() if observe == "on" else None
                    try:
                        result = run_one(store, instances, args, pg, len(results), env, receiver)
                    finally:
                        if receiver is not None:
                            receiver.stop()
                    result.store += "" if observing == ["on"] else bench_relay.observe_tag(observe)
                    results.append(result)
                    print(
                        f"  ran {result.store} x {instances} in {time.monotonic() - started:.0f} s",
                        flush=True,
                    )
    finally:
        if pg is not None:
            pg.stop()
    block = 1 if args.block_time is None else args.block_time
    print(
        f"relay through `relayer serve` processes, anvil --block-time {block}, {args.signers} signer(s),"
        f" concurrency {args.concurrency}: take-profit changes by API key, spread over the instances"
    )
    header = f"{'store':<18} {'instances':>9} {'requests':>9} {'req/s':>8} {'median s':>9} {'p95 s':>7}"
    print(f"  {header}  checks")
    failed = False
    for result in results:
        checks = "0 gaps, 0 duplicates" if not result.problems else f"{len(result.problems)} PROBLEMS"
        print(
            f"  {result.store:<18} {result.instances:>9} {result.requests:>9} {result.per_second:>8.1f}"
            f" {result.median_answer_s:>9.2f} {result.p95_answer_s:>7.2f}  {checks}"
        )
        if result.webhooks is not None:
            print(f"    {result.webhooks}")
        for problem in result.problems[:10]:
            print(f"    PROBLEM: {problem}")
        failed = failed or bool(result.problems)
    for line in skipped:
        print(f"  {line}")
    return 1 if failed else 0
