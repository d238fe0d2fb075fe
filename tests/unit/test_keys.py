"""Signing keys from the environment or a keystore; secrets never appear in an error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eth_account import Account
from eth_typing import HexStr

from relayer.chain.accounts import load_account
from relayer.errors import ConfigurationError

KEY = HexStr("0x" + "4c" * 32)
ADDRESS = Account.from_key(KEY).address
PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def keystore(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # pbkdf2 with few iterations keeps the test fast; the format is the same one `cast wallet` reads.
    encrypted = Account.encrypt(KEY, PASSWORD, kdf="pbkdf2", iterations=2)
    path = tmp_path_factory.mktemp("keys") / "deployer.json"
    path.write_text(json.dumps(encrypted))
    return path


def _assert_no_secret(error: ConfigurationError, *secrets: str) -> None:
    text = f"{error} {error.message} {error.details} {error.__cause__!r} {error.__context__!r}"
    for secret in secrets:
        assert secret not in text
        assert secret.removeprefix("0x") not in text
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__  # tracebacks never show the original


def test_nothing_set_returns_none() -> None:
    assert load_account("RELAYER_DEPLOYER", env={}) is None
    assert load_account("RELAYER_DEPLOYER", env={"OTHER_KEY": KEY, "RELAYER_DEPLOYER_KEY": ""}) is None


def test_key_from_env() -> None:
    account = load_account("RELAYER_DEPLOYER", env={"RELAYER_DEPLOYER_KEY": KEY})
    assert account is not None
    assert account.address == ADDRESS
    assert account.key.hex() == KEY.removeprefix("0x")


def test_key_is_stripped() -> None:
    account = load_account("X", env={"X_KEY": f"  {KEY}\n"})
    assert account is not None
    assert account.address == ADDRESS


def test_keystore_with_password(keystore: Path) -> None:
    env = {"X_KEYSTORE": str(keystore), "X_KEYSTORE_PASSWORD": PASSWORD}
    account = load_account("X", env=env)
    assert account is not None
    assert account.address == ADDRESS


def test_prefix_selects_the_variables(keystore: Path) -> None:
    env = {"A_KEY": KEY, "B_KEYSTORE": str(keystore), "B_KEYSTORE_PASSWORD": PASSWORD}
    account = load_account("A", env=env)
    assert account is not None
    assert account.address == ADDRESS
    assert load_account("C", env=env) is None


def test_both_set_is_an_error(keystore: Path) -> None:
    env = {"X_KEY": KEY, "X_KEYSTORE": str(keystore), "X_KEYSTORE_PASSWORD": PASSWORD}
    with pytest.raises(ConfigurationError, match="not both") as info:
        load_account("X", env=env)
    _assert_no_secret(info.value, KEY, PASSWORD)


@pytest.mark.parametrize(
    "bad_key",
    [
        "0x" + "4c" * 31,  # 31 bytes
        "0x" + "4c" * 33,
        "0x" + "00" * 32,  # zero is not a valid secp256k1 key
        "0x" + "ff" * 32,  # above the curve order
        "0x" + "4c" * 31 + "zz",
        "not a key at all but a passphrase",
    ],
)
def test_bad_key_is_a_configuration_error_without_the_key(bad_key: str) -> None:
    with pytest.raises(ConfigurationError, match="X_KEY is not a valid private key") as info:
        load_account("X", env={"X_KEY": bad_key})
    _assert_no_secret(info.value, bad_key)
    assert info.value.code == "configuration_error"


def test_keystore_without_password(keystore: Path) -> None:
    with pytest.raises(ConfigurationError, match="X_KEYSTORE_PASSWORD is not") as info:
        load_account("X", env={"X_KEYSTORE": str(keystore)})
    _assert_no_secret(info.value, KEY)


def test_wrong_password(keystore: Path) -> None:
    wrong = "Tr0ub4dor&3"
    with pytest.raises(ConfigurationError, match="cannot decrypt") as info:
        load_account("X", env={"X_KEYSTORE": str(keystore), "X_KEYSTORE_PASSWORD": wrong})
    _assert_no_secret(info.value, KEY, wrong, PASSWORD)


@pytest.mark.parametrize("content", ["", "{", "{}", "[]", '"text"', '{"version": 3}'])
def test_unreadable_keystore(tmp_path: Path, content: str) -> None:
    path = tmp_path / "keystore.json"
    path.write_text(content)
    with pytest.raises(ConfigurationError, match="cannot decrypt") as info:
        load_account("X", env={"X_KEYSTORE": str(path), "X_KEYSTORE_PASSWORD": PASSWORD})
    _assert_no_secret(info.value, PASSWORD)


def test_missing_keystore_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.json"
    with pytest.raises(ConfigurationError, match="cannot decrypt") as info:
        load_account("X", env={"X_KEYSTORE": str(path), "X_KEYSTORE_PASSWORD": PASSWORD})
    assert "FileNotFoundError" in info.value.message
    _assert_no_secret(info.value, PASSWORD)


def test_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAYER_TEST_ONLY_KEY", KEY)
    account = load_account("RELAYER_TEST_ONLY")
    assert account is not None
    assert account.address == ADDRESS
