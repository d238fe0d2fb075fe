"""`Settings`: one frozen object from defaults, RELAYER_* variables and flags; the node URL stays secret."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from relayer.config import Settings
from relayer.errors import ConfigurationError

VAULT = "0xF2E246BB76DF876Cef8b38ae84130F4F55De395b"


def test_defaults_serve_the_embedded_chain_on_loopback() -> None:
    settings = Settings.load({})
    assert settings.embedded
    assert (settings.host, settings.port, settings.gas_limit_margin_bps) == ("127.0.0.1", 8000, 2000)


def test_flags_override_environment_variables() -> None:
    env = {
        "RELAYER_RPC_URL": "http://127.0.0.1:8545",
        "RELAYER_VAULT_ADDRESS": VAULT.lower(),
        "RELAYER_PORT": "9000",
    }
    settings = Settings.load(env, port=9100, host=None)
    assert settings.port == 9100
    assert settings.host == "127.0.0.1"  # None means "flag not given"
    assert settings.vault_address == VAULT  # checksummed


def test_the_node_url_is_a_secret() -> None:
    settings = Settings.load({}, rpc_url="https://mainnet.example.com/v3/SECRETKEY", vault_address=VAULT)
    assert "SECRETKEY" not in repr(settings)
    assert "SECRETKEY" not in settings.rpc_url_for_display
    assert settings.rpc_url_for_display == "https://mainnet.example.com"


def test_settings_are_frozen() -> None:
    with pytest.raises(ValidationError):
        Settings.load({}).port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"RELAYER_PORT": "eighty"}, "port"),
        ({"RELAYER_RPC_URL": "ftp://node"}, "rpc_url"),
        ({"RELAYER_RPC_URL": "http://node:8545"}, "settings"),  # a node but no vault
        ({"RELAYER_VAULT_ADDRESS": "0x1234"}, "vault_address"),
        ({"RELAYER_GAS_LIMIT_MARGIN_BPS": "-1"}, "gas_limit_margin_bps"),
    ],
)
def test_bad_settings_are_configuration_errors(env: dict[str, str], field: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        Settings.load(env)
    assert info.value.details["field"] == field


def test_a_deployments_file_names_the_vault_and_its_chain(tmp_path: Path) -> None:
    record = {
        "chain_id": 31337,
        "address": VAULT,
        "block_number": 1,
        "transaction_hash": "0x" + "00" * 32,
        "artifact_hash": "x",
        "deployer": VAULT,
    }
    path = tmp_path / "31337.json"
    path.write_text(json.dumps(record))
    settings = Settings.load({}, rpc_url="http://127.0.0.1:8545", deployments_file=str(path))
    assert (settings.vault_address, settings.expected_chain_id) == (VAULT, 31337)
    with pytest.raises(ConfigurationError):
        Settings.load({}, rpc_url="http://127.0.0.1:8545", deployments_file=str(tmp_path / "missing.json"))
    with pytest.raises(ConfigurationError):
        Settings.load({}, rpc_url="http://x:1", deployments_file=str(path), vault_address="0x" + "11" * 20)
    # The same vault spelt in lower case is the same vault, not a contradiction.
    same = Settings.load({}, rpc_url="http://x:1", deployments_file=str(path), vault_address=VAULT.lower())
    assert same.vault_address == VAULT


@pytest.mark.parametrize("name", ["RELAYER_KEEPER_INTERVAL_S", "RELAYER_PRICE_FEED_INTERVAL_S"])
def test_an_interval_of_infinity_is_refused(name: str) -> None:
    """`inf` would run one round and never another: refused by name, like any nonsense."""
    with pytest.raises(ConfigurationError, match=name):
        Settings.load({name: "inf"})


def test_an_error_of_the_settings_as_a_whole_names_no_variable() -> None:
    with pytest.raises(ConfigurationError) as info:
        Settings.load({"RELAYER_RPC_URL": "http://127.0.0.1:8545"})  # a node needs its vault
    assert "vault" in info.value.message
    assert "RELAYER_SETTINGS" not in info.value.message
