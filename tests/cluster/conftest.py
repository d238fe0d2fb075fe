"""The cluster tests' marker: `cluster` (several `relayer serve` processes, anvil with block times).

Registered here, not deselected anywhere: the cluster tests run in the normal suite, and in CI a missing tool
fails them (`tests.conftest.require_tool`) instead of skipping them.
"""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "cluster: starts anvil and `relayer serve` subprocesses, kills and restarts them"
    )
