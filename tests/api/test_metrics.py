"""Prometheus metrics across processes: several relayer processes writing into one multi-process directory
are read by one scrape (counters and histograms add up; a process that stopped drops out of the gauges).

Each process is a real OS process running the product's `PrometheusMetrics`; this test process never enters
multi-process mode itself (prometheus-client's mode is per process)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from relayer.config import MetricsSettings
from relayer.services.metrics import NO_METRICS, Metrics, Stage, build_metrics, quota_scope_kind

SIGNER_A = "0x" + "a1" * 20
SIGNER_B = "0x" + "b2" * 20
TIMEOUT_S = 60

WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from relayer.services.metrics import PrometheusMetrics, Stage

    directory, signer, stay = Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "stay"
    metrics = PrometheusMetrics(directory)
    metrics.transaction_final("close", "confirmed")
    metrics.observe_stage(Stage.JOURNAL, 0.004)
    metrics.http_request("/api/partialclose", "POST", 200, 0.01)
    metrics.quota_rejected("owner:0x" + "cd" * 20)
    metrics.signer_balance(signer, 2 * 10**18, low=False)
    if stay:
        print("ready", flush=True)
        sys.stdin.readline()
    metrics.close()
    """
)

SCRAPER = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from relayer.services.metrics import PrometheusMetrics

    metrics = PrometheusMetrics(Path(sys.argv[1]))
    sys.stdout.write(asyncio.run(metrics.scrape()).decode())
    """
)


def _run(script: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=TIMEOUT_S, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_two_processes_writing_one_multiprocess_dir_add_up_in_one_scrape(tmp_path: Path) -> None:
    directory = tmp_path / "prom"
    _run(WRITER, str(directory), SIGNER_A, "exit")  # ran and stopped
    staying = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(directory), SIGNER_B, "stay"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert staying.stdout is not None
        assert staying.stdout.readline().strip() == "ready"
        samples = _samples(_run(SCRAPER, str(directory)))
    finally:
        assert staying.stdin is not None
        staying.stdin.write("\n")
        staying.stdin.close()
        staying.wait(timeout=TIMEOUT_S)

    def value(name: str, **labels: str) -> float | None:
        return samples.get((name, frozenset(labels.items())))

    assert value("relayer_transactions_total", kind="close", status="confirmed") == 2
    assert value("relayer_stage_seconds_count", stage="journal") == 2
    assert value("relayer_stage_seconds_bucket", stage="journal", le="0.005") == 2
    assert value("relayer_http_requests_total", route="/api/partialclose", method="POST", status="200") == 2
    assert value("relayer_quota_rejections_total", scope="owner") == 2
    assert value("relayer_signer_balance_wei", signer=SIGNER_B) == 2 * 10**18  # the live process's
    assert value("relayer_signer_balance_wei", signer=SIGNER_A) is None  # stopped: dropped out
    assert len(list(directory.iterdir())) >= 2  # every process writes files of its own


def test_metrics_off_is_the_null_object() -> None:
    metrics = build_metrics(MetricsSettings(enabled=False))

    assert metrics is NO_METRICS
    assert type(metrics) is Metrics
    assert not metrics.enabled
    with metrics.timed(Stage.JOURNAL):  # call sites never branch: every method exists and does nothing
        metrics.transaction_final("close", "confirmed")


def test_quota_scopes_are_labelled_by_kind_only() -> None:
    assert [quota_scope_kind(s) for s in ("owner:0xab", "key:17", "signed", "global", "odd")] == [
        "owner",
        "key",
        "signed",
        "global",
        "other",
    ]
