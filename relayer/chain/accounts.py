"""Loading signing keys from the environment or an encrypted keystore, never from a command-line argument.

A key given on the command line lands in shell history and `ps`; an env var or a keystore file does not.
Nothing here logs or returns the key in text: callers get a `LocalAccount`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount

from relayer.errors import ConfigurationError


def load_account(prefix: str, *, env: dict[str, str] | None = None) -> LocalAccount | None:
    """The account named by `<prefix>_KEY`, or by `<prefix>_KEYSTORE` + `<prefix>_KEYSTORE_PASSWORD`.

    Returns None when neither is set, so the caller can fall back (e.g. to a test key on the embedded chain).

    Raises:
        ConfigurationError: when a key is malformed or the keystore cannot be decrypted (the message never
            contains the key or the password).
    """
    source = os.environ if env is None else env
    key = source.get(f"{prefix}_KEY")
    keystore = source.get(f"{prefix}_KEYSTORE")
    if key and keystore:
        raise ConfigurationError(f"set {prefix}_KEY or {prefix}_KEYSTORE, not both")
    if key:
        try:
            account: LocalAccount = Account.from_key(key.strip())
        except Exception:  # eth-account's message may echo key material: replace it, drop the chain
            raise ConfigurationError(f"{prefix}_KEY is not a valid private key") from None
        return account
    if keystore:
        password = source.get(f"{prefix}_KEYSTORE_PASSWORD")
        if password is None:
            raise ConfigurationError(f"{prefix}_KEYSTORE is set but {prefix}_KEYSTORE_PASSWORD is not")
        try:
            encrypted = json.loads(Path(keystore).read_text())
            decrypted: LocalAccount = Account.from_key(Account.decrypt(encrypted, password))
        except (OSError, ValueError, KeyError, TypeError) as exc:  # unreadable, not a keystore, bad password
            raise ConfigurationError(
                f"cannot decrypt the keystore {keystore}: {type(exc).__name__}"
            ) from None
        return decrypted
    return None
