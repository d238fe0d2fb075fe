"""`apikeys.create_key`: the one way keys are made (the `relayer keys` face and the embedded demo call it),
against any store with `insert_api_key`; only the key's hash is stored."""

from __future__ import annotations

import subprocess
import sys

import pytest

from relayer import apikeys
from relayer.errors import InvalidFieldError
from tests.conftest import ROOT

ACCOUNT = "0x" + "ab" * 20


class MemoryStore:
    """A `KeyStore` in a list: what `create_key` hands over is all a store ever sees."""

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
    ) -> apikeys.ApiKey:
        key = apikeys.ApiKey(len(self.kept) + 1, prefix, label, account, scopes, now, None, None, key_hash)
        self.kept.append(key)
        return key


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
    [(ACCOUNT, "read,admin", "scopes"), (ACCOUNT, " , ", "scopes"), ("0x1234", "read", "account")],
)
def test_a_bad_request_stores_nothing(account: str, scopes: str, field: str) -> None:
    store = MemoryStore()

    with pytest.raises(InvalidFieldError) as refused:
        apikeys.create_key(store, account=account, scopes=scopes, now=1)

    assert refused.value.details["field"] == field
    assert store.kept == []


def test_the_core_does_not_reach_into_a_face() -> None:
    """`demo_world` (core) makes its keys with `apikeys.create_key`, not through the `relayer keys` CLI."""
    code = "import sys, relayer.demo_world; print('relayer.keys_cli' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "False"
