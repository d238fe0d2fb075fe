"""`relayer keys ...`: create, list and revoke API keys (a thin adapter over `relayer.domain.apikeys` and
the key store).

The key itself is printed once, by `create`, and never stored: the key store keeps its SHA-256. Keys live in
the journal file, by default `.relayer/journal.sqlite3` in the current directory: the file `relayer serve`
(embedded chain or node, with or without relayer signers) started in the same folder reads, so a key made
here works there, at once even while it runs; the key store never takes the journal's relay lock. Wired into
`relayer/faces/cli/main.py` with `add_key_commands(subparsers)`.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime

from relayer.domain import apikeys
from relayer.errors import InvalidFieldError
from relayer.faces.cli.common import EXIT_OK, add_store_arguments, store_of
from relayer.stores.keys import KeyStore
from relayer.stores.location import open_key_store
from relayer.stores.sqlite import named_journal


def _store(args: argparse.Namespace, *, create: bool = False) -> KeyStore:
    location = store_of(args)
    if location.database_url is None and not create:
        named_journal(location.journal_path, create=False)  # a reader refuses a missing file
    return open_key_store(location, create=create)


def _when(timestamp: int | None) -> str:
    return "-" if timestamp is None else datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def create_key(store: KeyStore, *, account: str, scopes: str, label: str = "") -> tuple[str, apikeys.ApiKey]:
    """`apikeys.create_key` on `store`, now: (the key, shown once; its record)."""
    return apikeys.create_key(store, account=account, scopes=scopes, label=label, now=int(time.time()))


def cmd_create(args: argparse.Namespace) -> int:
    store = _store(args, create=True)
    try:
        key, record = create_key(store, account=args.account, scopes=args.scopes, label=args.label)
    finally:
        store.close()
    print(key)
    scopes = ",".join(sorted(record.scopes))
    print(
        f"key {record.key_id} ({record.prefix}...) for {record.account}, scopes {scopes}:"
        " shown once, store it now; only its hash is kept",
    )
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        keys = store.api_keys()
    finally:
        store.close()
    if not keys:
        print("no API keys")
    for key in keys:
        state = "revoked " + _when(key.revoked_at) if key.revoked_at else "active"
        print(
            f"{key.key_id:<4} {key.prefix}...  {key.label or '-':<12} {','.join(sorted(key.scopes)):<10} "
            f"{key.account}  created {_when(key.created_at)}  last used {_when(key.last_used_at)}  {state}"
        )
    return EXIT_OK


def cmd_revoke(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        revoked = store.revoke_api_key(args.id, int(time.time()))
    finally:
        store.close()
    if not revoked:
        raise InvalidFieldError("id", f"no active API key with id {args.id}")
    print(f"key {args.id} revoked")
    return EXIT_OK


def add_key_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = subparsers.add_parser("keys", help="create, list and revoke API keys")
    sub = keys.add_subparsers(dest="keys_command", required=True)

    create = sub.add_parser("create", help="create a key (printed once)")
    create.add_argument("--account", required=True, help="the trading account (0x address) the key acts for")
    create.add_argument("--scopes", required=True, help="comma-separated: read, trade")
    create.add_argument("--label", default="", help="a note to tell keys apart")
    add_store_arguments(create)
    create.set_defaults(handler=cmd_create)

    listing = sub.add_parser("list", help="list keys (prefix, label, scopes, account, dates)")
    add_store_arguments(listing)
    listing.set_defaults(handler=cmd_list)

    revoke = sub.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("id", type=int)
    add_store_arguments(revoke)
    revoke.set_defaults(handler=cmd_revoke)
