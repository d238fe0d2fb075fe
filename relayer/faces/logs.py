"""Logging set up once, at the edge (the CLI), before any library gets the chance to.

Log lines are `key=value` structured after a fixed prefix, and carry ids (request, record, nonce, hash), never
keys or API secrets. Configuring the root logger first also keeps the MCP SDK's own `basicConfig` from raising
every library (e.g. httpx, one line per node request) to INFO.
"""

from __future__ import annotations

import logging

QUIET_LIBRARIES = ("httpx", "httpcore", "urllib3", "web3", "mcp", "sse_starlette")
"""Libraries whose INFO lines are per-request noise; they still report warnings."""


def configure(level: str = "info") -> None:
    """Root logging at `level` with a structured prefix; noisy libraries at WARNING."""
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s",
        force=True,
    )
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)
