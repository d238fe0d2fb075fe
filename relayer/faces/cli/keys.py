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
from collections.abc import Iterable
from datetime import UTC, datetime

from relayer.constants import ETH_DECIMALS
from relayer.domain import apikeys
from relayer.domain.units import format_fixed, parse_fixed
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


def create_key(
    store: KeyStore,
    *,
    account: str,
    scopes: str,
    label: str = "",
    expires_at: int | None = None,
    markets: str | Iterable[str] | None = None,
    daily_spend_wei: int | None = None,
) -> tuple[str, apikeys.ApiKey]:
    """`apikeys.create_key` on `store`, now: (the key, shown once; its record)."""
    return apikeys.create_key(
        store,
        account=account,
        scopes=scopes,
        label=label,
        now=int(time.time()),
        expires_at=expires_at,
        markets=markets,
        daily_spend_wei=daily_spend_wei,
    )


def _expiry(args: argparse.Namespace, now: int) -> int | None:
    """`--expires-in` (from now) or `--expires-at` as unix seconds (None: the key does not expire)."""
    if args.expires_in is not None:
        flag, expires_at = "--expires-in", now + apikeys.parse_duration_s(args.expires_in, "--expires-in")
    elif args.expires_at is not None:
        flag, expires_at = "--expires-at", apikeys.parse_timestamp_s(args.expires_at, "--expires-at")
    else:
        return None
    return apikeys.check_expiry(expires_at, now, flag)  # `create_key`'s rule, told which flag to name


def _daily_spend_wei(args: argparse.Namespace) -> int | None:
    """`--daily-spend-wei` (wei) or `--daily-spend` (ether, exact decimal) as wei (None: the policy's)."""
    if args.daily_spend_wei is not None:
        return apikeys.parse_wei(args.daily_spend_wei, "--daily-spend-wei")
    if args.daily_spend is not None:
        return parse_fixed(args.daily_spend, ETH_DECIMALS, "--daily-spend")
    return None


def _limits(key: apikeys.ApiKey, now: int) -> str:
    """A key's expiry, markets and daily spend as `keys create` and `keys list` show them."""
    if key.expires_at is None:
        expiry = "expires never"
    else:
        expiry = ("expired " if key.expired(now) else "expires ") + _when(key.expires_at)
    markets = "all" if key.markets is None else ",".join(sorted(key.markets))
    spend = (
        "policy default"
        if key.daily_spend_wei is None
        else f"{format_fixed(key.daily_spend_wei, ETH_DECIMALS)} ETH"
    )
    return f"{expiry}  markets {markets}  daily spend {spend}"


def cmd_create(args: argparse.Namespace) -> int:
    # The flags are read before the store opens: bad input creates no journal file.
    now = int(time.time())
    expires_at = _expiry(args, now)
    markets = None if args.markets is None else apikeys.parse_markets(args.markets, "--markets")
    daily_spend_wei = _daily_spend_wei(args)
    store = _store(args, create=True)
    try:
        key, record = create_key(
            store,
            account=args.account,
            scopes=args.scopes,
            label=args.label,
            expires_at=expires_at,
            markets=markets,
            daily_spend_wei=daily_spend_wei,
        )
    finally:
        store.close()
    print(key)
    scopes = ",".join(sorted(record.scopes))
    print(
        f"key {record.key_id} ({record.prefix}...) for {record.account}, scopes {scopes},"
        f" {_limits(record, now)}: shown once, store it now; only its hash is kept",
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
    now = int(time.time())
    for key in keys:
        if key.revoked_at:
            state = "revoked " + _when(key.revoked_at)
        else:
            state = "expired" if key.expired(now) else "active"
        print(
            f"{key.key_id:<4} {key.prefix}...  {key.label or '-':<12} {','.join(sorted(key.scopes)):<10} "
            f"{key.account}  created {_when(key.created_at)}  last used {_when(key.last_used_at)}  "
            f"{_limits(key, now)}  {state}"
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
    create.add_argument("--scopes", required=True, help="comma-separated: read, trade, admin")
    create.add_argument("--label", default="", help="a note to tell keys apart")
    expiry = create.add_mutually_exclusive_group()
    expiry.add_argument("--expires-in", help="the key expires after 30d, 12h, 90m or 3600s (default: never)")
    expiry.add_argument(
        "--expires-at",
        help="the key expires at unix seconds or ISO-8601 with an offset (2027-01-01T00:00:00Z)",
    )
    create.add_argument(
        "--markets",
        help="comma-separated market symbols the key may trade, e.g. BTCUSDT,ETHUSDT (default: all)",
    )
    spend = create.add_mutually_exclusive_group()
    spend.add_argument(
        "--daily-spend-wei",
        help="the key's gas budget per UTC day in wei (default: the sponsorship policy's)",
    )
    spend.add_argument("--daily-spend", help="the same in ether, an exact decimal such as 0.05")
    add_store_arguments(create)
    create.set_defaults(handler=cmd_create)

    listing = sub.add_parser(
        "list", help="list keys (prefix, label, scopes, account, dates, expiry, markets, daily spend)"
    )
    add_store_arguments(listing)
    listing.set_defaults(handler=cmd_list)

    revoke = sub.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("id", type=int)
    add_store_arguments(revoke)
    revoke.set_defaults(handler=cmd_revoke)
