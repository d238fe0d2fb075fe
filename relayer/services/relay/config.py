"""Relay settings: one frozen, typed object built once at the edge and passed down."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from relayer.errors import ConfigurationError

DEFAULT_JOURNAL_PATH = Path(".relayer") / "journal.sqlite3"
"""The journal every command uses unless told otherwise (`--journal`, `RELAYER_RELAY_JOURNAL_PATH`): relative,
so it resolves in the current directory, and the same for `serve`, `mcp`, `keeper`, `keys` and `relay`,
which is what lets a key made by `relayer keys create` work on the next `relayer serve` started in the same
folder. The journal creates `.relayer/` (mode 0700) and the file (0600) when missing."""

ENV_PREFIX = "RELAYER_RELAY_"
"""Environment variables of the relay settings: `RELAYER_RELAY_` + the field name in capitals
(RELAYER_RELAY_JOURNAL_PATH, RELAYER_RELAY_CONFIRMATIONS, RELAYER_RELAY_POLL_INTERVAL_S, ...)."""


@dataclass(frozen=True)
class RelaySettings:
    """How the relayer signs, submits, replaces and journals.

    Attributes:
        journal_path: the SQLite journal file (WAL mode) holding relay records and API keys; default
            `.relayer/journal.sqlite3` in the current directory (`DEFAULT_JOURNAL_PATH`); ":memory:" only for
            throwaway use.
        confirmations: blocks on top of (and including) the one a transaction was mined in before it is final.
        replace_after_s: seconds without a receipt before a transaction is replaced with bumped fees.
        fee_bump_bps: fee increase of a replacement on both EIP-1559 fees (node rule: at least 1_000 = +10%).
        max_fee_per_gas_wei: cap on maxFeePerGas for relayed transactions (no-op nonce fillers may exceed it).
        min_signer_balance_wei: below this, a signer is reported as low in health (and `relay signers`).
        poll_interval_s: pause between two rounds of the background loop.
        broadcast_retries: attempts (with doubling backoff) before a broadcast is left to the background loop.
        retry_backoff_s: the first backoff between node retries.
        request_ttl_s: default validity of a signed request built by `GET /api/relay/typed-data`.
    """

    journal_path: Path = DEFAULT_JOURNAL_PATH
    confirmations: int = 1
    replace_after_s: int = 30
    fee_bump_bps: int = 1_250
    max_fee_per_gas_wei: int = 500 * 10**9
    min_signer_balance_wei: int = 10**17
    poll_interval_s: float = 0.5
    broadcast_retries: int = 3
    retry_backoff_s: float = 0.05
    request_ttl_s: int = 600

    def __post_init__(self) -> None:
        if self.confirmations < 1:
            raise ConfigurationError("relay confirmations must be at least 1")
        if self.fee_bump_bps < 1_000:
            raise ConfigurationError("relay fee bump must be at least 1000 bps (+10%): nodes refuse less")
        if self.max_fee_per_gas_wei <= 0 or self.min_signer_balance_wei < 0:
            raise ConfigurationError(
                "relay max fee per gas must be positive, min signer balance non-negative"
            )
        if self.replace_after_s <= 0 or self.broadcast_retries < 1:
            raise ConfigurationError("relay replace-after and broadcast retries must be positive")
        if not self.poll_interval_s > 0 or not self.request_ttl_s > 0:  # `not >` also refuses NaN
            raise ConfigurationError(
                "relay poll interval and request TTL must be positive (a 0 interval spins the loop)"
            )
        if not self.retry_backoff_s >= 0:
            raise ConfigurationError("relay retry backoff must not be negative")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RelaySettings:
        """Settings from `RELAYER_RELAY_*` variables; unset or empty ones keep their defaults (as in
        `relayer.config.Settings.load`).

        Raises:
            ConfigurationError: for a value that is not a number where one is expected, or out of range.
        """
        source = os.environ if env is None else env
        values: dict[str, object] = {}
        for name, kind in (
            ("journal_path", Path),
            ("confirmations", int),
            ("replace_after_s", int),
            ("fee_bump_bps", int),
            ("max_fee_per_gas_wei", int),
            ("min_signer_balance_wei", int),
            ("poll_interval_s", float),
            ("broadcast_retries", int),
            ("retry_backoff_s", float),
            ("request_ttl_s", int),
        ):
            raw = source.get(ENV_PREFIX + name.upper())
            if raw is None or raw == "":
                continue
            try:
                values[name] = kind(raw)
            except ValueError:
                raise ConfigurationError(f"{ENV_PREFIX}{name.upper()} must be a {kind.__name__}") from None
        return cls(**values)  # type: ignore[arg-type]
