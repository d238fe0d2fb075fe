"""Prometheus metrics: every metric the relayer exports is defined here, and nowhere else.

`Metrics` is the null object: every method does nothing. The relay core (`Sender`, `Rounds`,
`RelayService`), the chain client, the keeper and the API middleware are handed one explicitly (a constructor
argument defaulting to `NO_METRICS`), so no call site branches on whether metrics are on, and a relayer built
with `RELAYER_METRICS_ENABLED=false` collects nothing at all. `PrometheusMetrics` records into a
`CollectorRegistry` of its own (one per app: several apps in one test process never share a series).

Labels are bounded by construction: record kinds and statuses (enums), stages, JSON-RPC methods from a fixed
list (anything else is `other`), HTTP route templates (never the raw path; `unmatched` when no route
matched), the scope kind of a spent quota (`owner`, `key`, `signed`, `global`; never the owner or key), and
relayer signer addresses, which the configuration bounds (a raw transaction's sender, a user, is `raw`).
No record id, user address or API key is ever a label value.

Multi-process mode (`RELAYER_METRICS_MULTIPROC_DIR`, several relayer processes on one host served by one
scrape): prometheus-client decides how a value is stored when the value is created, from
`PROMETHEUS_MULTIPROC_DIR` (read when `prometheus_client.values` is imported). `use_multiprocess_dir` sets
the variable and switches the library's value class for the rest of the process; `relayer serve` calls it
before the app is built, and `build_metrics` calls it again (idempotent) for apps built in code. Every
process writes its values to files in the directory and a scrape of any of them reads them all
(`MultiProcessCollector`): counters and histograms add up; the gauges are per signer, each written by the
process that holds the signer's lease, so `livesum` / `livemax` / `livemostrecent` give the one value and
a process that stopped (`close`) drops out. The directory must be empty when the group of processes starts
(delete its files before the first one starts; never while one runs).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

from relayer.config import MetricsSettings
from relayer.domain.status import TxStatus
from relayer.errors import RelayerError

if TYPE_CHECKING:
    from relayer.chain.jsonrpc import RpcCall, RpcReply
    from relayer.domain.records import RelayRecord

log = logging.getLogger("relayer.metrics")

__all__ = [
    "CONTENT_TYPE_LATEST",
    "NO_METRICS",
    "Metrics",
    "PrometheusMetrics",
    "Stage",
    "build_metrics",
    "use_multiprocess_dir",
]

REQUEST_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
"""Histogram buckets (seconds) of node round trips and API requests."""
STAGE_BUCKETS_S = (*REQUEST_BUCKETS_S, 60, 120, 300, 600)
"""Histogram buckets (seconds) of the relay stages: a journal write takes milliseconds, a confirmation
minutes."""
BALANCE_MAX_AGE_S = 10.0
"""A scrape re-reads the signers' balances from the node when the last read is older than this (bounded
node traffic whoever scrapes, however often)."""

RPC_METHODS = frozenset(
    {
        "eth_chainId",
        "eth_getCode",
        "eth_getBlockByNumber",
        "eth_getBlockByHash",
        "eth_gasPrice",
        "eth_maxPriorityFeePerGas",
        "eth_feeHistory",
        "eth_call",
        "eth_estimateGas",
        "eth_getBalance",
        "eth_getTransactionCount",
        "eth_sendRawTransaction",
        "eth_sendRawTransactionSync",
        "eth_getTransactionReceipt",
        "eth_getTransactionByHash",
        "eth_getLogs",
        "eth_blockNumber",
        "debug_traceTransaction",
    }
)
"""The JSON-RPC methods labelled by name; any other is `other` (the label set stays bounded)."""
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""HTTP methods labelled by name; any other a client invents is `other`."""
QUOTA_SCOPES = frozenset({"owner", "key", "signed", "global"})
"""Kinds of sponsorship scope (`relayer.domain.sponsorship`): a refusal is labelled by kind, never by the
owner or key it names."""
UNMATCHED_ROUTE = "unmatched"
RAW_SENDER = "raw"
"""The signer label of raw transactions (their sender is a user: never a label)."""
WAITING_LABEL = "waiting"
"""The `relayer_queue_depth` label of calls waiting on this instance for a signer slot (every signer full)."""


class Stage(StrEnum):
    """The timed stages of a relayed transaction (`relayer_stage_seconds{stage}`)."""

    SIMULATE = "simulate"
    """The simulation before signing (`eth_estimateGas` with the signer's balance, one batch)."""
    JOURNAL = "journal"
    """The journal transaction that allocates the nonce, reserves the charge, signs and inserts."""
    BROADCAST = "broadcast"
    """One `eth_sendRawTransaction` round trip."""
    MINED = "mined"
    """From the first broadcast until the relay first sees a receipt."""
    CONFIRMED = "confirmed"
    """From the first broadcast until the record is confirmed."""


def quota_scope_kind(scope: str) -> str:
    """`owner:0x..` -> `owner`, `key:<id>` -> `key`; `signed`, `global` as they are; anything else `other`.

    >>> quota_scope_kind("owner:0xab"), quota_scope_kind("global"), quota_scope_kind("x:y")
    ('owner', 'global', 'other')
    """
    kind = scope.partition(":")[0]
    return kind if kind in QUOTA_SCOPES else "other"


class Metrics:
    """The null object: the interface every instrumented component calls, doing nothing (metrics off)."""

    enabled = False

    def transaction_final(self, kind: str, status: str) -> None:
        """A record reached a final status (confirmed, failed, replaced, expired)."""

    def observe_stage(self, stage: Stage, seconds: float) -> None:
        """A stage took `seconds`."""

    @contextmanager
    def timed(self, stage: Stage) -> Iterator[None]:
        """Time the block as `stage` (observed only when it does not raise)."""
        yield

    def relay_round(
        self,
        pending: Sequence[RelayRecord],
        signers: Sequence[str],
        in_flight: Mapping[str, int],
        waiting: int,
    ) -> None:
        """A relay round: the unfinished records it found (this instance's: queued ones per signer), the
        transactions in flight of the signers this instance holds (`SignerSlots`), and the calls waiting
        for a signer slot here."""

    def signer_balance(self, signer: str, balance_wei: int, *, low: bool) -> None:
        """A relayer signer's balance was read."""

    def nonce_gap_found(self, signer: str) -> None:
        """A nonce of `signer` would stay a gap (bytes the node refuses for good, a request that expired):
        a no-op was sent to fill it."""

    def nonce_gap_filled(self, signer: str) -> None:
        """A no-op that filled a nonce gap was mined."""

    def fee_bump(self, signer: str) -> None:
        """A pending transaction was re-sent at the same nonce with higher fees."""

    def node_batch(
        self, calls: Sequence[RpcCall], replies: Sequence[RpcReply] | None, seconds: float
    ) -> None:
        """One round trip to the node; `replies` None when it did not answer."""

    def keeper_order(self, event: str, side: str) -> None:
        """The keeper saw a new order, executed one, retried one, or ratcheted a trailing stop (`seen`,
        `executed`, `retried`, `ratcheted`)."""

    def quota_rejected(self, scope: str) -> None:
        """A sponsorship budget refused a call (`scope` as the refusal names it; labelled by its kind)."""

    def http_request(self, route: str | None, method: str, status: int, seconds: float) -> None:
        """An API request was answered; `route` is the matched route's path template (None: unmatched)."""

    async def scrape(self, refresh_balances: Callable[[], Awaitable[None]] | None = None) -> bytes:
        """The exposition in the Prometheus text format (`CONTENT_TYPE_LATEST`)."""
        return b""

    def close(self) -> None:
        """This process stops exporting (multi-process mode: its live gauges drop out)."""


NO_METRICS = Metrics()
"""The shared null object (the default of every component's `metrics`)."""


class PrometheusMetrics(Metrics):
    """The metrics of one app, in a registry of their own; multi-process when `multiproc_dir` is given."""

    enabled = True

    def __init__(self, multiproc_dir: Path | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.multiproc_dir = multiproc_dir
        if multiproc_dir is not None:
            use_multiprocess_dir(multiproc_dir)
            multiprocess.MultiProcessCollector(self.registry, path=str(multiproc_dir))  # type: ignore[no-untyped-call]
            target: CollectorRegistry | None = None  # the collector reads every process's files, ours too
        else:
            target = self.registry
        self._balances_read_at: float | None = None
        self._balances_lock = asyncio.Lock()
        self._gauged_signers: set[str] = set()

        self.transactions = Counter(
            "relayer_transactions_total",
            "Relayed transactions that reached a final status, by record kind and status.",
            ["kind", "status"],
            registry=target,
        )
        self.stages = Histogram(
            "relayer_stage_seconds",
            "Time per relay stage: simulate, journal (the write transaction), broadcast (one node round"
            " trip), mined and confirmed (both since the first broadcast).",
            ["stage"],
            buckets=STAGE_BUCKETS_S,
            registry=target,
        )
        self.queue_depth = Gauge(
            "relayer_queue_depth",
            "Records journaled and not yet accepted by a node (status queued), per relayer signer"
            " ('raw': user-signed transactions); 'waiting': calls waiting for a signer slot (every signer"
            " has its limit in flight).",
            ["signer"],
            multiprocess_mode="livesum",
            registry=target,
        )
        self.in_flight = Gauge(
            "relayer_in_flight",
            "Transactions journaled and not yet mined, per relayer signer (held by this instance; at most"
            " RELAYER_RELAY_MAX_IN_FLIGHT_PER_SIGNER); 'raw': user-signed ones submitted and not mined.",
            ["signer"],
            multiprocess_mode="livesum",
            registry=target,
        )
        self.balance = Gauge(
            "relayer_signer_balance_wei",
            "A relayer signer's balance, in wei, as last read.",
            ["signer"],
            multiprocess_mode="livemostrecent",
            registry=target,
        )
        self.low_balance = Gauge(
            "relayer_signer_low_balance",
            "1 when a relayer signer's balance is below RELAYER_RELAY_MIN_SIGNER_BALANCE_WEI (the /health"
            " alert), else 0.",
            ["signer"],
            multiprocess_mode="livemostrecent",
            registry=target,
        )
        self.gaps_found = Counter(
            "relayer_nonce_gaps_found_total",
            "Nonces that would have stayed a gap (refused for good, or expired before mining): filled with a"
            " no-op.",
            ["signer"],
            registry=target,
        )
        self.gaps_filled = Counter(
            "relayer_nonce_gaps_filled_total",
            "No-ops that filled a nonce gap, mined.",
            ["signer"],
            registry=target,
        )
        self.bumps = Counter(
            "relayer_fee_bumps_total",
            "Transactions re-sent at the same nonce with higher fees.",
            ["signer"],
            registry=target,
        )
        self.node_seconds = Histogram(
            "relayer_node_request_seconds",
            "Node round trips, by JSON-RPC method (a batch counts once for each method in it).",
            ["method"],
            buckets=REQUEST_BUCKETS_S,
            registry=target,
        )
        self.node_errors = Counter(
            "relayer_node_errors_total",
            "Node errors by JSON-RPC method: 'error' (the node answered an error object, e.g. a reverting"
            " estimate) or 'unanswered' (no answer: the whole batch).",
            ["method", "kind"],
            registry=target,
        )
        self.keeper = {
            event: Counter(
                f"relayer_keeper_orders_{event}_total",
                text,
                ["side"],
                registry=target,
            )
            for event, text in (
                ("seen", "Take-profit / stop-loss orders the keeper learned from TriggerSet events."),
                ("executed", "executeOrder calls the keeper submitted for crossed orders (and retries)."),
                ("retried", "Executions submitted again because an earlier one of the order ended unmined."),
                (
                    "ratcheted",
                    "ratchetStop calls the keeper submitted to move a trailing stop the trader's way.",
                ),
            )
        }
        self.quota = Counter(
            "relayer_quota_rejections_total",
            "Calls a sponsorship budget refused (429 quota_exceeded), by scope kind.",
            ["scope"],
            registry=target,
        )
        self.http = Counter(
            "relayer_http_requests_total",
            "API requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=target,
        )
        self.http_seconds = Histogram(
            "relayer_http_request_seconds",
            "API request durations (until the answer starts), by route template and method.",
            ["route", "method"],
            buckets=REQUEST_BUCKETS_S,
            registry=target,
        )

    def transaction_final(self, kind: str, status: str) -> None:
        self.transactions.labels(kind, status).inc()

    def observe_stage(self, stage: Stage, seconds: float) -> None:
        self.stages.labels(stage.value).observe(seconds)

    @contextmanager
    def timed(self, stage: Stage) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.stages.labels(stage.value).observe(time.perf_counter() - start)

    def relay_round(
        self,
        pending: Sequence[RelayRecord],
        signers: Sequence[str],
        in_flight: Mapping[str, int],
        waiting: int,
    ) -> None:
        queued = dict.fromkeys((*signers, RAW_SENDER), 0)
        flying = {label: in_flight.get(label, 0) for label in queued}
        for record in pending:
            label = record.sender if record.kind.is_ours and record.sender in queued else RAW_SENDER
            if record.status is TxStatus.QUEUED:
                queued[label] += 1
            elif label == RAW_SENDER and record.status is TxStatus.SUBMITTED:
                flying[label] += 1
        queued[WAITING_LABEL] = waiting
        for label in queued:
            self.queue_depth.labels(label).set(queued[label])
        for label in flying:
            self.in_flight.labels(label).set(flying[label])

    def signer_balance(self, signer: str, balance_wei: int, *, low: bool) -> None:
        self.balance.labels(signer).set(balance_wei)
        self.low_balance.labels(signer).set(1 if low else 0)

    def nonce_gap_found(self, signer: str) -> None:
        self.gaps_found.labels(signer).inc()

    def nonce_gap_filled(self, signer: str) -> None:
        self.gaps_filled.labels(signer).inc()

    def fee_bump(self, signer: str) -> None:
        self.bumps.labels(signer).inc()

    def node_batch(
        self, calls: Sequence[RpcCall], replies: Sequence[RpcReply] | None, seconds: float
    ) -> None:
        methods = {_rpc_method(call.method) for call in calls}
        if replies is None:
            for method in methods:
                self.node_errors.labels(method, "unanswered").inc()
            return
        for method in methods:
            self.node_seconds.labels(method).observe(seconds)
        for call, reply in zip(calls, replies, strict=False):
            if reply.error is not None:
                self.node_errors.labels(_rpc_method(call.method), "error").inc()

    def keeper_order(self, event: str, side: str) -> None:
        self.keeper[event].labels(side).inc()

    def quota_rejected(self, scope: str) -> None:
        self.quota.labels(quota_scope_kind(scope)).inc()

    def http_request(self, route: str | None, method: str, status: int, seconds: float) -> None:
        template = route or UNMATCHED_ROUTE
        verb = method if method in HTTP_METHODS else "other"
        self.http.labels(template, verb, str(status)).inc()
        self.http_seconds.labels(template, verb).observe(seconds)

    async def scrape(self, refresh_balances: Callable[[], Awaitable[None]] | None = None) -> bytes:
        """The exposition; first the signers' balances re-read through `refresh_balances` when the last
        read is older than `BALANCE_MAX_AGE_S` (a node that does not answer leaves the last values)."""
        if refresh_balances is not None:
            async with self._balances_lock:
                now = time.monotonic()
                if self._balances_read_at is None or now - self._balances_read_at >= BALANCE_MAX_AGE_S:
                    self._balances_read_at = now
                    try:
                        await refresh_balances()
                    except RelayerError as error:
                        log.warning("metrics: signer balances not refreshed (%s)", error.code)
        return generate_latest(self.registry)

    def close(self) -> None:
        if self.multiproc_dir is not None:
            multiprocess.mark_process_dead(os.getpid(), str(self.multiproc_dir))  # type: ignore[no-untyped-call]


def since_first_broadcast(record: RelayRecord, now: float) -> float:
    """Seconds from the record's first broadcast (its creation when no broadcast was noted) until `now`."""
    sent = [attempt.broadcast_at for attempt in record.attempts if attempt.broadcast_at is not None]
    return max(0.0, now - (min(sent) if sent else record.created_at))


def _rpc_method(method: str) -> str:
    return method if method in RPC_METHODS else "other"


def use_multiprocess_dir(path: Path) -> None:
    """Put this process in prometheus-client's multi-process mode, writing to `path` (made if missing).

    The library picks its value class from `PROMETHEUS_MULTIPROC_DIR` when it is imported; a value created
    before this call stays in this process's memory, one created after it goes to `path`. Call it at the
    edge before anything is built (`relayer serve` does); calling it again is harmless. The mode is the
    process's: every registry of the process then reads the directory.
    """
    path.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    if not getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]


def build_metrics(settings: MetricsSettings) -> Metrics:
    """The metrics of one app: `PrometheusMetrics` (multi-process with `multiproc_dir`), or the null
    object when `enabled` is false."""
    if not settings.enabled:
        return NO_METRICS
    return PrometheusMetrics(settings.multiproc_dir)
