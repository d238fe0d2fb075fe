"""`apikeys.create_key`: the one way keys are made (the `relayer keys` face and the embedded demo call it),
against any `KeyStore`; only the key's hash is stored."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Callable, Iterable

import pytest

from relayer.domain import apikeys
from relayer.errors import InvalidFieldError
from tests.conftest import ROOT

ACCOUNT = "0x" + "ab" * 20


class MemoryStore:
    """A `KeyStore` in a list: what `create_key` hands over is all a store ever sees. It keeps the port's
    contract too (`tests/unit/test_key_store.py` runs it there), so it stands in for any adapter."""

    def __init__(self) -> None:
        self.kept: list[apikeys.ApiKey] = []

    def insert_api_key(
        self,
        *,
        key_hash: str,
        prefix: str,
        label: str,
        account: str,
        scopes: frozenset[apikeys.Scope],
        now: int,
        expires_at: int | None = None,
        markets: frozenset[str] | None = None,
        daily_spend_wei: int | None = None,
    ) -> apikeys.ApiKey:
        key = apikeys.ApiKey(len(self.kept) + 1, prefix, label, account, scopes, now, None, None, key_hash)
        key = dataclasses.replace(
            key, expires_at=expires_at, markets=markets, daily_spend_wei=daily_spend_wei
        )
        self.kept.append(key)
        return key

    def api_key_by_hash(self, key_hash: str) -> apikeys.ApiKey | None:
        return next((key for key in self.kept if key.key_hash == key_hash), None)

    def api_keys(self) -> list[apikeys.ApiKey]:
        return list(self.kept)

    def touch_api_key(self, key_id: int, now: int) -> None:
        self._update(key_id, lambda key: dataclasses.replace(key, last_used_at=now))

    def revoke_api_key(self, key_id: int, now: int) -> bool:
        active = any(key.key_id == key_id and key.active for key in self.kept)
        if active:
            self._update(key_id, lambda key: dataclasses.replace(key, revoked_at=now))
        return active

    def revoke_api_keys_labelled(self, labels: Iterable[str], now: int) -> int:
        names = set(labels)
        chosen = [key.key_id for key in self.kept if key.active and key.label in names]
        for key_id in chosen:
            self._update(key_id, lambda key: dataclasses.replace(key, revoked_at=now))
        return len(chosen)

    def close(self) -> None:
        pass

    def _update(self, key_id: int, change: Callable[[apikeys.ApiKey], apikeys.ApiKey]) -> None:
        self.kept = [change(key) if key.key_id == key_id else key for key in self.kept]


def test_a_key_is_shown_once_and_only_its_hash_is_stored() -> None:
    store = MemoryStore()

    key, record = apikeys.create_key(store, account=ACCOUNT, scopes="trade, read", label="bot", now=7)

    assert store.kept == [record]
    assert key.startswith("vrk_")
    assert record.key_hash == apikeys.hash_key(key) != key
    assert apikeys.verify(key, record.key_hash)
    assert record.prefix == key[: apikeys.DISPLAY_PREFIX_CHARS]
    assert (record.label, record.created_at) == ("bot", 7)
    assert record.account == "0xABaBaBaBABabABabAbAbABAbABabababaBaBABaB"  # checksummed
    assert record.scopes == {apikeys.Scope.READ, apikeys.Scope.TRADE}


@pytest.mark.parametrize(
    ("account", "scopes", "field"),
    [(ACCOUNT, "read,owner", "scopes"), (ACCOUNT, " , ", "scopes"), ("0x1234", "read", "account")],
)
def test_a_bad_request_stores_nothing(account: str, scopes: str, field: str) -> None:
    store = MemoryStore()

    with pytest.raises(InvalidFieldError) as refused:
        apikeys.create_key(store, account=account, scopes=scopes, now=1)

    assert refused.value.details["field"] == field
    assert store.kept == []


def test_the_core_does_not_reach_into_a_face() -> None:
    """`demo_world` (core) makes its keys with `apikeys.create_key`, not through the `relayer keys` CLI."""
    code = "import sys, relayer.services.demo_world; print('relayer.faces.cli.keys' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "False"
