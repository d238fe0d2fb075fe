"""`relayer webhooks add|list|remove|test|deliveries`: the operator's webhook subscriptions, on the database
(a thin adapter over `relayer.services.webhooks`, like `relayer keys`).

A subscription belongs to a chain: the one chain a relay has started on with this database, or `--chain-id`
when it knows several. `add` prints `<id> <secret>` on its first line (the secret is shown once, never
stored elsewhere nor logged); a running `relayer serve` delivers to it from its next round. `test` sends one
signed `webhook.test` message now and prints the receiver's status (exit 1 unless it answered 2xx). The URL
rules are the server's, with `RELAYER_WEBHOOKS_*` from the environment (`ALLOW_PRIVATE_URLS` for a receiver
on a private network). Wired into `relayer/faces/cli/main.py` with `add_webhook_commands(subparsers)`.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

import anyio

from relayer.config import WebhookSettings
from relayer.domain import webhooks as rules
from relayer.domain.apikeys import ApiKey, Scope
from relayer.domain.requests import parse_owner
from relayer.errors import ConfigurationError, UnauthenticatedError, WebhookNotFoundError
from relayer.faces.cli.common import EXIT_ERROR, EXIT_OK, Subparsers, add_store_arguments, opened_journal
from relayer.services.webhooks import WebhookService
from relayer.stores.journal import SqlJournal
from relayer.stores.webhooks import WebhookStore

T = TypeVar("T")


def _operator(presented: str | None, scope: Scope) -> ApiKey:
    raise UnauthenticatedError("the CLI acts as the operator, not by API key")


def chain_of(journal: SqlJournal, chain_id: int | None) -> int:
    """The chain the command's subscriptions belong to: `--chain-id`, else the database's only one.

    Raises:
        ConfigurationError: no relay ever started on the database, or several chains and no `--chain-id`.
    """
    known = sorted({binding.chain_id for binding in journal.known_chains()})
    if chain_id is not None:
        if chain_id not in known:
            raise ConfigurationError(
                f"no relay has run on chain {chain_id} with this database (known: {known})"
            )
        return chain_id
    if not known:
        raise ConfigurationError(
            "no relay has started on this database yet: a subscription belongs to a chain; start `relayer"
            " serve` with a signer once"
        )
    if len(known) > 1:
        raise ConfigurationError(f"this database holds several chains: pass --chain-id (one of {known})")
    return known[0]


@contextmanager
def _service(args: argparse.Namespace) -> Iterator[WebhookService]:
    settings = WebhookSettings.from_env(os.environ)
    with opened_journal(args) as journal:
        store = WebhookStore(journal.db, chain_of(journal, args.chain_id))
        yield WebhookService(store, settings, _operator)


def _run(service: WebhookService, call: Callable[[], Awaitable[T]]) -> T:
    async def run() -> T:
        try:
            return await call()
        finally:
            await service.stop()  # closes its HTTP client

    return anyio.run(run)


def _when(unix_s: float) -> str:
    return datetime.fromtimestamp(unix_s, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _found(service: WebhookService, webhook_id: str) -> rules.Webhook:
    hook = service.store.get(webhook_id)
    if hook is None:
        raise WebhookNotFoundError(f"no webhook {webhook_id!r} on chain {service.store.chain_id}")
    return hook


def cmd_add(args: argparse.Namespace) -> int:
    account = None if args.global_ else parse_owner(args.account, "--account")
    types = rules.parse_types(args.types)
    with _service(args) as service:
        hook, secret = _run(service, lambda: service.add(account, args.url, types))
    print(f"{hook.id} {secret}")
    print(
        f"webhook {hook.id} for {hook.account or 'every account (global)'}, types"
        f" {rules.types_text(hook.types) or 'all'}, to {hook.url}: the secret is shown once, store it now"
    )
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    account = None if args.account is None else parse_owner(args.account, "--account")
    with _service(args) as service:
        hooks = service.store.subscriptions(account=account)
        counts = {hook.id: _states(service, hook.id) for hook in hooks}
    if not hooks:
        print("no webhooks")
    for hook in hooks:
        print(
            f"{hook.id}  {hook.account or 'global':<42}  {rules.types_text(hook.types) or 'all':<40}"
            f"  created {_when(hook.created_at)}  {counts[hook.id]}  {hook.url}"
        )
    return EXIT_OK


def _states(service: WebhookService, webhook_id: str) -> str:
    found: dict[str, int] = {}
    for delivery in service.store.deliveries(webhook_id, limit=1_000):
        found[delivery.state.value] = found.get(delivery.state.value, 0) + 1
    return " ".join(f"{state} {count}" for state, count in sorted(found.items())) or "no deliveries"


def cmd_remove(args: argparse.Namespace) -> int:
    with _service(args) as service:
        _found(service, args.id)
        service.store.delete(args.id)
    print(f"webhook {args.id} removed")
    return EXIT_OK


def cmd_test(args: argparse.Namespace) -> int:
    with _service(args) as service:
        hook = _found(service, args.id)
        attempt = _run(service, lambda: service.send_test(hook))
    shown = "no answer" if attempt.status is None else f"status {attempt.status}"
    print(
        f"{shown}: {'delivered' if attempt.delivered else 'not delivered'}"
        + (f" ({attempt.error})" if attempt.error and not attempt.delivered else "")
    )
    return EXIT_OK if attempt.delivered else EXIT_ERROR


def cmd_deliveries(args: argparse.Namespace) -> int:
    with _service(args) as service:
        _found(service, args.id)
        found = service.store.deliveries(args.id, limit=args.limit)
    if not found:
        print("no deliveries")
    for delivery in found:
        shown: dict[str, Any] = delivery.to_dict()
        print(
            f"{shown['noticeId']:<24} {shown['state']:<9} attempts {shown['attempts']:<3} last"
            f" {shown['lastStatus'] or '-'}  updated {_when(delivery.updated_at)}  {shown['lastError'] or ''}"
        )
    return EXIT_OK


def add_webhook_commands(subparsers: Subparsers) -> None:
    """Add `webhooks add|list|remove|test|deliveries` to the `relayer` command's subparsers."""
    webhooks = subparsers.add_parser("webhooks", help="webhook subscriptions (Standard Webhooks, signed)")
    sub = webhooks.add_subparsers(dest="webhooks_command", required=True)

    def command(
        name: str, handler: Callable[[argparse.Namespace], int], help: str
    ) -> argparse.ArgumentParser:
        parser = sub.add_parser(name, help=help)
        parser.add_argument("--chain-id", type=int, help="the chain (default: the database's only one)")
        add_store_arguments(parser)
        parser.set_defaults(handler=handler)
        return parser

    add = command("add", cmd_add, "subscribe a URL; prints `<id> <secret>` (the secret once)")
    whose = add.add_mutually_exclusive_group(required=True)
    whose.add_argument("--account", help="an account's notices (0x address)")
    whose.add_argument("--global", dest="global_", action="store_true", help="every notice (operators)")
    add.add_argument("--url", required=True, help="the receiver, http(s)://...")
    add.add_argument(
        "--types", help="comma-separated: transaction.status, position.decreased, order.executed"
    )

    listing = command("list", cmd_list, "list subscriptions (never their secrets) and their deliveries")
    listing.add_argument("--account", help="only this account's")

    remove = command("remove", cmd_remove, "remove a subscription and its deliveries")
    remove.add_argument("id")

    test = command("test", cmd_test, "send a signed webhook.test message now and print the status")
    test.add_argument("id")

    deliveries = command("deliveries", cmd_deliveries, "a subscription's latest deliveries")
    deliveries.add_argument("id")
    deliveries.add_argument("--limit", type=int, default=20)
