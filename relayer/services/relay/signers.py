"""The relayer's own accounts: loaded once from env vars or encrypted keystores, never shown.

`RELAYER_SIGNER_KEY` (or `RELAYER_SIGNER_KEYSTORE` + `RELAYER_SIGNER_KEYSTORE_PASSWORD`) gives one signer;
`RELAYER_SIGNER_1_KEY`, `RELAYER_SIGNER_2_KEYSTORE`, ... add more (numbered from 1, stopping at the first
missing number). Work is spread over them round-robin, skipping any that cannot pay. A `Signer`'s repr and
str are its address only, so no key can leak into a log line, an error or the journal by accident.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address

from relayer.chain.accounts import load_account
from relayer.errors import ConfigurationError

ENV_PREFIX = "RELAYER_SIGNER"
MAX_NUMBERED_SIGNERS = 64
"""`RELAYER_SIGNER_1_*` .. `RELAYER_SIGNER_64_*`."""


class Signer:
    """One relayer account: its address, and signing; the key stays inside the `LocalAccount`."""

    __slots__ = ("_account", "address")

    def __init__(self, account: LocalAccount) -> None:
        self._account = account
        self.address: str = to_checksum_address(account.address)

    def sign_transaction(self, tx: dict[str, Any]) -> tuple[bytes, str]:
        """(raw signed bytes, 0x transaction hash) of `tx`."""
        signed = self._account.sign_transaction(tx)
        return bytes(signed.raw_transaction), "0x" + bytes(signed.hash).hex()

    def __repr__(self) -> str:
        return f"Signer({self.address})"

    __str__ = __repr__


def load_signers(env: Mapping[str, str] | None = None) -> list[Signer]:
    """Every signer configured in the environment (possibly none: the caller decides on a fallback).

    Raises:
        ConfigurationError: for a malformed key, an undecryptable keystore or the same account twice.
    """
    source = dict(os.environ if env is None else env)
    accounts: list[LocalAccount] = []
    first = load_account(ENV_PREFIX, env=source)
    if first is not None:
        accounts.append(first)
    for number in range(1, MAX_NUMBERED_SIGNERS + 1):
        account = load_account(f"{ENV_PREFIX}_{number}", env=source)
        if account is None:
            break
        accounts.append(account)
    signers = [Signer(account) for account in accounts]
    if len({signer.address for signer in signers}) != len(signers):
        raise ConfigurationError("the same relayer signer is configured twice")
    return signers


class SignerPool:
    """The configured signers, handed out round-robin so work spreads across them."""

    def __init__(self, signers: Sequence[Signer]) -> None:
        if not signers:
            raise ConfigurationError(
                "no relayer signer: set RELAYER_SIGNER_KEY or RELAYER_SIGNER_KEYSTORE (+ _PASSWORD)"
            )
        self._signers = {signer.address: signer for signer in signers}
        self._order = list(self._signers)
        self._next = itertools.count()
        self._lock = threading.Lock()

    @property
    def addresses(self) -> list[str]:
        return list(self._order)

    def get(self, address: str) -> Signer | None:
        return self._signers.get(to_checksum_address(address))

    def rotation(self) -> list[Signer]:
        """All signers, starting with the next one in turn (the caller takes the first that can pay)."""
        with self._lock:
            start = next(self._next) % len(self._order)
        return [self._signers[self._order[(start + i) % len(self._order)]] for i in range(len(self._order))]
