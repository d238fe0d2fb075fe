"""scripts/deploy.py end to end against a real anvil node (and the embedded default), as a subprocess.

The key reaches the script only through the environment (a raw key, or an encrypted keystore file plus its
password); it must never be echoed. A second run against the same chain must find the recorded vault and not
deploy again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_typing import HexStr
from web3 import Web3

from relayer.chain.artifact import load_artifact
from relayer.chain.connect import ANVIL_DEFAULT_KEYS, rpc_chain
from relayer.chain.deploy import DEFAULT_PRICES_USD, has_vault_code
from relayer.chain.vault import VaultReader
from relayer.domain.units import to_fixed
from relayer.faces.cli.common import EXIT_OK
from tests.conftest import ROOT, AnvilNode, start_anvil, stop_anvil

SCRIPT = ROOT / "scripts" / "deploy.py"
ANVIL_CHAIN_ID = 31337
KEYSTORE_PASSWORD = "correct horse battery staple"  # a test keystore's password


@pytest.fixture(scope="module")
def anvil() -> Iterator[AnvilNode]:
    """A node of our own: deployments here must not disturb the shared session chain."""
    node = start_anvil()
    try:
        yield node
    finally:
        stop_anvil(node)


def run_deploy(*args: str, env: dict[str, str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RELAYER_")}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        check=False,
    )


def write_keystore(directory: Path, key: str) -> Path:
    """An encrypted keystore file (pbkdf2 with few rounds: a test secret, and fast to decrypt)."""
    path = directory / "deployer.json"
    path.write_text(
        json.dumps(Account.encrypt(HexStr(key), KEYSTORE_PASSWORD, kdf="pbkdf2", iterations=2_048))
    )
    return path


def assert_no_secret(result: subprocess.CompletedProcess[str], *secrets: str) -> None:
    output = (result.stdout + result.stderr).lower()
    for secret in secrets:
        assert secret.lower() not in output
        assert secret.lower().removeprefix("0x") not in output


def _deploy_twice(anvil: AnvilNode, directory: Path, env: dict[str, str], *secrets: str) -> dict[str, Any]:
    """Deploy, check the record and the chain, re-run, and check that nothing was sent the second time."""
    w3 = rpc_chain(anvil.url).w3
    first = run_deploy("--rpc-url", anvil.url, "--deployments-dir", str(directory), env=env)
    assert first.returncode == EXIT_OK, first.stderr
    assert "deployed" in first.stdout
    assert "already deployed" not in first.stdout
    assert_no_secret(first, *secrets)

    record_path = directory / f"{ANVIL_CHAIN_ID}.json"
    record: dict[str, Any] = json.loads(record_path.read_text())
    assert record["chain_id"] == ANVIL_CHAIN_ID
    assert record["artifact_hash"] == load_artifact().artifact_hash
    assert has_vault_code(w3, record["address"])
    receipt = w3.eth.get_transaction_receipt(record["transaction_hash"])
    assert receipt["contractAddress"] == record["address"]
    assert receipt["blockNumber"] == record["block_number"]
    assert record["address"] in first.stdout
    vault = VaultReader(w3, record["address"])
    assert {m: vault.price(m).price_e8 for m in vault.markets()} == {
        symbol: to_fixed(price, 8, "price") for symbol, price in DEFAULT_PRICES_USD.items()
    }

    nonce = w3.eth.get_transaction_count(record["deployer"])
    second = run_deploy("--rpc-url", anvil.url, "--deployments-dir", str(directory), env=env)
    assert second.returncode == EXIT_OK, second.stderr
    assert "already deployed" in second.stdout
    assert_no_secret(second, *secrets)
    assert w3.eth.get_transaction_count(record["deployer"]) == nonce  # nothing sent
    assert json.loads(record_path.read_text()) == record
    return record


@pytest.mark.anvil
def test_key_from_env_var(anvil: AnvilNode, tmp_path: Path) -> None:
    key = ANVIL_DEFAULT_KEYS[3]
    record = _deploy_twice(anvil, tmp_path, {"RELAYER_DEPLOYER_KEY": key}, key)
    assert record["deployer"] == Account.from_key(key).address


@pytest.mark.anvil
def test_key_from_encrypted_keystore(anvil: AnvilNode, tmp_path: Path) -> None:
    key = ANVIL_DEFAULT_KEYS[4]
    keystore = write_keystore(tmp_path, key)
    env = {
        "RELAYER_DEPLOYER_KEYSTORE": str(keystore),
        "RELAYER_DEPLOYER_KEYSTORE_PASSWORD": KEYSTORE_PASSWORD,
    }
    record = _deploy_twice(anvil, tmp_path / "deployments", env, key, KEYSTORE_PASSWORD)
    assert record["deployer"] == Account.from_key(key).address


@pytest.mark.anvil
def test_wrong_keystore_password_is_a_configuration_error(anvil: AnvilNode, tmp_path: Path) -> None:
    key = ANVIL_DEFAULT_KEYS[4]
    keystore = write_keystore(tmp_path, key)
    env = {"RELAYER_DEPLOYER_KEYSTORE": str(keystore), "RELAYER_DEPLOYER_KEYSTORE_PASSWORD": "wrong"}
    result = run_deploy("--rpc-url", anvil.url, "--deployments-dir", str(tmp_path), env=env)
    assert result.returncode != EXIT_OK
    assert "configuration_error" in result.stderr
    assert_no_secret(result, key, KEYSTORE_PASSWORD)
    assert not (tmp_path / f"{ANVIL_CHAIN_ID}.json").exists()


@pytest.mark.anvil
def test_an_rpc_node_without_a_key_is_refused(anvil: AnvilNode, tmp_path: Path) -> None:
    result = run_deploy("--rpc-url", anvil.url, "--deployments-dir", str(tmp_path), env={})
    assert result.returncode != EXIT_OK
    assert "RELAYER_DEPLOYER_KEY" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_embedded_chain_by_default(tmp_path: Path) -> None:
    result = run_deploy("--deployments-dir", str(tmp_path), env={})
    assert result.returncode == EXIT_OK, result.stderr
    (record_path,) = tmp_path.iterdir()
    record = json.loads(record_path.read_text())
    assert record_path.name == f"{record['chain_id']}.json"
    assert Web3.is_checksum_address(record["address"])
    assert record["address"] in result.stdout


def test_deployments_go_to_the_current_directory(tmp_path: Path) -> None:
    """Without --deployments-dir the record lands in ./deployments where the command runs, never beside the
    package source (which may be a read-only site-packages)."""
    result = run_deploy(env={}, cwd=tmp_path)

    assert result.returncode == EXIT_OK, result.stderr
    (record_path,) = (tmp_path / "deployments").iterdir()
    record = json.loads(record_path.read_text())
    assert record_path.name == f"{record['chain_id']}.json"
    assert record["address"] in result.stdout
