"""Webhooks: subscriptions by API key (or by the operator's CLI), and the dispatcher that delivers them.

Every notice (`relayer.domain.notices`) is journaled in the transaction of the change it tells; the
dispatcher, a `Periodic` task of its own started with the relay, fans them out to the subscriptions
(`WebhookStore.fan_out`), claims due deliveries and sends each on a task of its own: at most `concurrency`
in flight, at most `per_account_in_flight` per account (the global subscriptions count as one more), at most
`per_webhook_in_flight` per subscription, each attempt bounded by `timeout_s` as a whole (DNS, connect, send,
answer). A receiver that hangs or answers 500 therefore delays neither the relay loop nor other accounts'
subscriptions (nor, by default, the same account's other ones); its delivery is retried with exponential
backoff (`retry_delay_s`) until `max_attempts`, then `failed`. A claim is a lease in the database: an
instance that dies mid-delivery lets it go, and another sends it again with the same `webhook-id` (at least
once; receivers dedupe on it).

Test messages (`send_test`) go through a client of their own: one at a time per subscription and per API
key, `TEST_CONCURRENCY` per process (429 `webhook_test_busy` beyond), never taking the dispatcher's slots.
With `enabled` false the service only prunes (`start`).

The receiver's address is checked when the subscription is made and again before every attempt, after DNS
resolution (a name may come to point inside the relayer's network later): the request then goes to the
address that was checked (the `Host` header and TLS SNI keep the name), and no proxy from the environment nor
redirect is followed.

Authorization (`authorize`): a key with `trade` manages its own account's subscriptions, `read` lists them and
their deliveries; `admin` manages global subscriptions (every notice) and any account's. Another account's
subscription is `webhook_not_found` to a key without `admin`, as if it did not exist.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import anyio
import anyio.to_thread
import httpx

from relayer.config import WebhookSettings
from relayer.domain import webhooks as rules
from relayer.domain.apikeys import ApiKey, Scope
from relayer.domain.notices import NoticeType
from relayer.domain.requests import parse_owner
from relayer.domain.webhooks import DeliveryState, Due, Webhook
from relayer.errors import (
    InsufficientScopeError,
    InvalidFieldError,
    TooManyWebhooksError,
    WebhookNotFoundError,
    WebhookTestBusyError,
    WebhookUrlRefusedError,
)
from relayer.services.periodic import Periodic
from relayer.stores.journal_port import Journal
from relayer.stores.webhooks import Outcome, WebhookStore

log = logging.getLogger("relayer.webhooks")

_K = TypeVar("_K")

CLAIM_MARGIN_S = 10.0
"""A claim outlives its attempt's `timeout_s` by this much, so a live instance always finishes first."""

RESPONSE_READ_BYTES = 4_096
"""Of a receiver's answer only the status counts; at most this much of its body is read."""

SETTLE_RETRY_S = 0.1
"""After this process committed notices, a second round this much later: on PostgreSQL a notice is read only
once every transaction older than its own has ended, which may not be so at the first."""

PRUNE_INTERVAL_S = 3_600.0
"""How often old notices and finished deliveries are pruned (and once at start)."""

TEST_CONCURRENCY = 2
"""Test messages (`POST /api/webhooks/{id}/test`, `relayer webhooks test`) in flight at once per process,
on a client of their own; beyond, and beyond one per subscription and per API key, 429 `webhook_test_busy`."""

MAX_DELIVERIES_LISTED = 200
"""The most deliveries one listing returns."""

Authenticate = Callable[[str | None, Scope], ApiKey]
"""`TradingService.authenticate`: the key behind a presented secret, checked for one scope."""

Resolve = Callable[[str, int], Awaitable[list[str]]]
"""A host name and port to the addresses it resolves to (`resolve_host`; tests pass their own)."""


@dataclass(frozen=True)
class Attempt:
    """What one attempt to POST came to: the receiver's status (None: no answer) or why it failed."""

    status: int | None
    error: str | None

    @property
    def delivered(self) -> bool:
        return self.status is not None and rules.delivered(self.status)

    def to_dict(self) -> dict[str, Any]:
        return {"delivered": self.delivered, "status": self.status, "error": self.error}


async def resolve_host(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (the system resolver, off the event loop)."""
    found = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in found]


class Sender:
    """POSTs signed messages to receivers, with the address rules applied after resolution."""

    def __init__(
        self, settings: WebhookSettings, *, resolve: Resolve = resolve_host, connections: int | None = None
    ) -> None:
        self.settings = settings
        self._resolve = resolve
        self._connections = settings.concurrency if connections is None else connections
        self._client: httpx.AsyncClient | None = None
        """Made at the first send (on the loop that sends), so a sender that never sends holds nothing."""

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.settings.timeout_s),
                follow_redirects=False,
                trust_env=False,  # no proxy from the environment: the checked address is the one called
                limits=httpx.Limits(
                    max_connections=self._connections * 2,
                    max_keepalive_connections=self._connections,
                ),
            )
        return self._client

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def post(self, url: str, secret: str, msg_id: str, body: bytes) -> Attempt:
        """POST `body` to `url` signed for `msg_id` now; never raises for the receiver's failures."""
        try:
            with anyio.fail_after(self.settings.timeout_s):
                return await self._post(url, secret, msg_id, body)
        except TimeoutError:
            return Attempt(None, f"no answer within {self.settings.timeout_s}s")
        except WebhookUrlRefusedError as exc:
            return Attempt(None, f"{exc.code}: {exc.message}")
        except httpx.HTTPError as exc:
            return Attempt(None, f"{type(exc).__name__}: {str(exc)[:200]}")
        except OSError as exc:  # resolution failures
            return Attempt(None, f"{type(exc).__name__}: {str(exc)[:200]}")

    async def _post(self, url: str, secret: str, msg_id: str, body: bytes) -> Attempt:
        allow_private = self.settings.allow_private_urls
        rules.check_url(url, allow_private=allow_private)
        target, host_header, extensions = await self._pinned(url)
        headers = rules.signed_headers(secret, msg_id, int(time.time()), body)
        if host_header is not None:
            headers["host"] = host_header
        client = self._http()
        request = client.build_request("POST", target, content=body, headers=headers, extensions=extensions)
        response = await client.send(request, stream=True)
        try:
            read = 0
            async for chunk in response.aiter_raw():
                read += len(chunk)
                if read >= RESPONSE_READ_BYTES:
                    break
        finally:
            await response.aclose()
        return Attempt(response.status_code, None if rules.delivered(response.status_code) else "not 2xx")

    async def _pinned(self, url: str) -> tuple[str, str | None, dict[str, Any]]:
        """The URL to call: a host name replaced by the first address it resolves to, after checking every
        address it resolves to (the `Host` header and SNI keep the name); an address literal as it is."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        if rules.ip_literal(host) is not None:
            return url, None, {}
        port = parts.port or (443 if parts.scheme == "https" else 80)
        addresses = await self._resolve(host, port)
        if not addresses:
            raise OSError(f"{host} does not resolve")
        allow_private = self.settings.allow_private_urls
        if not all(rules.address_allowed(address, allow_private=allow_private) for address in addresses):
            raise WebhookUrlRefusedError(
                "url: the host resolves to a loopback, private or link-local address"
            )
        address = addresses[0]
        shown = f"[{address}]" if ":" in address else address
        netloc = shown if parts.port is None else f"{shown}:{parts.port}"
        extensions: dict[str, Any] = {"sni_hostname": host} if parts.scheme == "https" else {}
        return urlunsplit(parts._replace(netloc=netloc)), parts.netloc, extensions


class WebhookService:
    """Subscriptions (with authorization) and the dispatcher of one chain's webhooks."""

    def __init__(
        self,
        store: WebhookStore,
        settings: WebhookSettings,
        authenticate: Authenticate,
        *,
        resolve: Resolve = resolve_host,
    ) -> None:
        self.store = store
        self.settings = settings
        self._authenticate = authenticate
        self._resolve = resolve
        self.sender = Sender(settings, resolve=resolve)
        self._periodic: Periodic | None = None
        self._event_loop: asyncio.AbstractEventLoop | None = None
        self._listening: tuple[Journal, Callable[[], None] | None, Callable[[], None]] | None = None
        self._in_flight: dict[str, int] = {}
        self._in_flight_accounts: dict[str | None, int] = {}
        self.test_sender = Sender(settings, resolve=resolve, connections=TEST_CONCURRENCY)
        """Test messages go through a client of their own, so they never wait for (nor hold) the
        dispatcher's connections."""
        self._testing: set[str] = set()
        """Subscriptions and API keys with a test message in flight (one each at a time)."""
        self._tests_in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._finished: list[tuple[Outcome, Attempt]] = []
        """Attempts finished since the last round, recorded together at the start of the next one."""
        self._pruned_at = 0.0
        self._random = random.Random()  # noqa: S311 - jitter, not a secret

    # --- authorization ------------------------------------------------------------------------------------

    def authorize(self, presented: str | None, scope: Scope) -> ApiKey:
        """The key behind `presented` with `admin` (any subscription), else with `scope` (its own account's).

        Raises:
            UnauthenticatedError, ApiKeyExpiredError: no valid key (401).
            InsufficientScopeError: a key with neither (403, naming `scope`).
        """
        try:
            return self._authenticate(presented, Scope.ADMIN)
        except InsufficientScopeError:
            return self._authenticate(presented, scope)

    @staticmethod
    def _visible(key: ApiKey, hook: Webhook) -> bool:
        return Scope.ADMIN in key.scopes or (hook.account is not None and hook.account == key.account.lower())

    def _hook_for(self, key: ApiKey, webhook_id: str) -> Webhook:
        hook = self.store.get(webhook_id)
        if hook is None or not self._visible(key, hook):
            raise WebhookNotFoundError(f"no webhook {webhook_id[:80]!r}", webhookId=webhook_id[:80])
        return hook

    # --- subscriptions ------------------------------------------------------------------------------------

    async def create(self, presented: str | None, body: Mapping[str, Any]) -> tuple[Webhook, str]:
        """`POST /api/webhooks`: `{url, types?, account?, global?}` -> (the subscription, its secret, shown
        once). Without `account`/`global`, the key's own account (`trade`); `global: true` or another
        account needs `admin`.

        Raises:
            InvalidFieldError: an unknown field, a bad `types`, `account` or `global` (422).
            WebhookUrlRefusedError: per `rules.check_url`, or the host resolves to a private address (422).
            TooManyWebhooksError: the account holds `max_per_account` already (409).
        """
        key = await anyio.to_thread.run_sync(self.authorize, presented, Scope.TRADE)  # before any input
        unknown = sorted(set(body) - {"url", "types", "account", "global"})
        if unknown:
            raise InvalidFieldError(unknown[0], "unknown field: give url, types, and account or global")
        is_global = body.get("global", False)
        if not isinstance(is_global, bool):
            raise InvalidFieldError("global", "true or false")
        account = None if body.get("account") is None else parse_owner(body["account"], "account")
        if is_global and account is not None:
            raise InvalidFieldError("account", "give account or global, not both")
        others = is_global or (account is not None and account.lower() != key.account.lower())
        if others and Scope.ADMIN not in key.scopes:
            raise InsufficientScopeError(
                "a global subscription, or another account's, needs the 'admin' scope",
                required=Scope.ADMIN.value,
                scopes=sorted(key.scopes),
            )
        url = rules.check_url(body.get("url"), allow_private=self.settings.allow_private_urls)
        types = rules.parse_types(body.get("types"))
        owner = None if is_global else (account or key.account)
        return await self.add(owner, url, types)

    async def add(
        self, account: str | None, url: str, types: frozenset[NoticeType] | None
    ) -> tuple[Webhook, str]:
        """Add a subscription for `account` (None: global) once its URL passed the rules, resolution
        included (a name that does not resolve yet is accepted: every attempt checks again).

        Raises:
            WebhookUrlRefusedError: the URL breaks the rules (422).
            TooManyWebhooksError: `account` holds `max_per_account` already (409).
        """
        rules.check_url(url, allow_private=self.settings.allow_private_urls)
        await self._check_resolved(url)
        secret = rules.new_secret()
        hook = await anyio.to_thread.run_sync(
            lambda: self.store.create(
                webhook_id=rules.new_webhook_id(),
                account=account,
                url=url,
                secret=secret,
                types=types,
                max_per_account=self.settings.max_per_account,
            )
        )
        if hook is None:
            limit = self.settings.max_per_account
            raise TooManyWebhooksError(
                f"the account holds {limit} webhook subscriptions already: remove one first", limit=limit
            )
        log.info(
            "webhook added id=%s account=%s types=%s",
            hook.id,
            hook.account or "global",
            rules.types_text(hook.types) or "all",
        )
        return hook, secret

    async def _check_resolved(self, url: str) -> None:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if self.settings.allow_private_urls or rules.ip_literal(host) is not None:
            return
        try:
            with anyio.fail_after(self.settings.timeout_s):
                addresses = await self._resolve(host, parts.port or 443)
        except (OSError, TimeoutError):
            return
        if not all(rules.address_allowed(address, allow_private=False) for address in addresses):
            raise WebhookUrlRefusedError(
                "url: the host resolves to a loopback, private or link-local address", host=host
            )

    async def list_for(self, presented: str | None) -> list[Webhook]:
        """`GET /api/webhooks`: the key's account's subscriptions (`read`), every one with `admin`."""
        key = await anyio.to_thread.run_sync(self.authorize, presented, Scope.READ)
        account = None if Scope.ADMIN in key.scopes else key.account
        return await anyio.to_thread.run_sync(lambda: self.store.subscriptions(account=account))

    async def remove(self, presented: str | None, webhook_id: str) -> None:
        """`DELETE /api/webhooks/{id}` (`trade` for the account's own, `admin` for any).

        Raises:
            WebhookNotFoundError: none this key may see (404).
        """

        def remove() -> None:
            key = self.authorize(presented, Scope.TRADE)
            hook = self._hook_for(key, webhook_id)
            self.store.delete(hook.id)
            log.info("webhook removed id=%s", hook.id)

        await anyio.to_thread.run_sync(remove)

    async def deliveries(self, presented: str | None, webhook_id: str, limit: int = 50) -> list[Any]:
        """`GET /api/webhooks/{id}/deliveries`: its latest deliveries, newest first (`read`)."""

        def read() -> list[Any]:
            key = self.authorize(presented, Scope.READ)
            hook = self._hook_for(key, webhook_id)
            return self.store.deliveries(hook.id, limit=min(max(limit, 1), MAX_DELIVERIES_LISTED))

        return await anyio.to_thread.run_sync(read)

    async def test(self, presented: str | None, webhook_id: str) -> Attempt:
        """`POST /api/webhooks/{id}/test` (`trade`/`admin` as for removing): a signed `webhook.test` now."""

        def find() -> tuple[ApiKey, Webhook]:
            key = self.authorize(presented, Scope.TRADE)
            return key, self._hook_for(key, webhook_id)

        key, hook = await anyio.to_thread.run_sync(find)
        return await self.send_test(hook, key_id=key.key_id)

    async def send_test(self, hook: Webhook, *, key_id: object = None) -> Attempt:
        """Send `hook` a signed `webhook.test` message now (not recorded as a delivery); what it answered.
        At most one at a time per subscription and per API key (`key_id`), `TEST_CONCURRENCY` in all, on a
        client of their own: tests neither wait for nor take the dispatcher's slots.

        Raises:
            WebhookTestBusyError: a test of this subscription or by this key is in flight, or the cap (429).
        """
        marks = {f"webhook:{hook.id}"} | (set() if key_id is None else {f"key:{key_id}"})
        if marks & self._testing or self._tests_in_flight >= TEST_CONCURRENCY:
            raise WebhookTestBusyError(
                "a test message of this subscription or by this key is in flight: retry once it is answered",
                retryAfterS=int(self.settings.timeout_s) + 1,
            )
        self._testing |= marks
        self._tests_in_flight += 1
        try:
            return await self._send_test(hook)
        finally:
            self._testing -= marks
            self._tests_in_flight -= 1

    async def _send_test(self, hook: Webhook) -> Attempt:
        msg_id = "msg_test_" + secrets.token_hex(8)
        body = {
            "id": msg_id,
            "type": rules.TEST_TYPE,
            "timestamp": int(time.time()),
            "chainId": hook.chain_id,
            "data": {"webhookId": hook.id},
        }
        raw = json.dumps(body, separators=(",", ":")).encode()
        attempt = await self.test_sender.post(hook.url, hook.secret, msg_id, raw)
        log.info("webhook test id=%s status=%s", hook.id, attempt.status)
        return attempt

    # --- the dispatcher -----------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the dispatcher on the running event loop (call from async code); with `enabled` false, only
        the pruning of old notices and finished deliveries (every `PRUNE_INTERVAL_S`, and at once), so the
        notices table stays bounded on an instance that does not deliver."""
        if self._periodic is None:
            self._event_loop = asyncio.get_running_loop()
            if self.settings.enabled:
                self._periodic = Periodic("webhooks", self.round, self.settings.poll_interval_s)
            else:
                self._periodic = Periodic("notices-prune", self.prune, PRUNE_INTERVAL_S)
            self._periodic.start()

    @property
    def running(self) -> str | None:
        """What runs in the background: `"webhooks"` (the dispatcher), `"notices-prune"` (pruning only, with
        `enabled` false) or None (not started)."""
        return None if self._periodic is None or not self._periodic.running else self._periodic.name

    def listen(self, journal: Journal) -> None:
        """Run a round as soon as `journal` commits notices (`Journal.on_notices`, chained after any hook
        already there), not only every `poll_interval_s` (which still finds other instances' notices)."""
        previous = journal.on_notices

        def told() -> None:
            if previous is not None:
                previous()
            self.told()

        journal.on_notices = told
        self._listening = (journal, previous, told)

    def told(self) -> None:
        """Notices were committed in this process: run a round now (callable from any thread)."""
        loop = self._event_loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._told)
        except RuntimeError:  # the loop closed between the check and the call
            return

    def _told(self) -> None:
        self.wake()
        # PostgreSQL: a notice is read once no older transaction runs, which may not be so at once. SQLite's
        # one writer has committed it: the first round sees it.
        if self._event_loop is not None and self.store.db.dialect.shared_by_processes:
            self._event_loop.call_later(SETTLE_RETRY_S, self.wake)

    async def stop(self) -> None:
        """Stop the dispatcher and cancel deliveries in flight (their claims expire and another round, here
        or on another instance, sends them again), then close the HTTP client."""
        if self._listening is not None:
            journal, previous, told = self._listening
            if journal.on_notices is told:  # still ours (a hook chained after it restores its own)
                journal.on_notices = previous
            self._listening = None
        if self._periodic is not None:
            await self._periodic.stop()
            self._periodic = None
        self._event_loop = None
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await self._record_outcomes()  # what was delivered is not sent again after the restart
        await self.sender.aclose()
        await self.test_sender.aclose()

    def wake(self) -> None:
        """Run the next round now (on the loop's thread)."""
        if self._periodic is not None:
            self._periodic.wake()

    async def round(self) -> int:
        """One dispatcher round: record the attempts finished since the last one, fan out new notices, claim
        what is due for the free slots and start sending each on its own task; how many were started. Store
        calls run on a worker thread."""
        await self._record_outcomes()
        await anyio.to_thread.run_sync(self.store.fan_out)
        if time.monotonic() - self._pruned_at >= PRUNE_INTERVAL_S or self._pruned_at == 0.0:
            await self.prune()
        slots = self.settings.concurrency - len(self._tasks)
        busy = dict(self._in_flight)
        busy_accounts = dict(self._in_flight_accounts)
        due = await anyio.to_thread.run_sync(
            lambda: self.store.claim_due(
                slots=slots,
                busy=busy,
                per_webhook=self.settings.per_webhook_in_flight,
                lease_s=self.settings.timeout_s + CLAIM_MARGIN_S,
                busy_accounts=busy_accounts,
                per_account=self.settings.account_in_flight,
            )
        )
        for item in due:
            self._in_flight[item.webhook_id] = self._in_flight.get(item.webhook_id, 0) + 1
            self._in_flight_accounts[item.account] = self._in_flight_accounts.get(item.account, 0) + 1
            task = asyncio.get_running_loop().create_task(
                self._deliver(item), name=f"webhook-{item.delivery_id}"
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(due)

    async def prune(self) -> tuple[int, int]:
        """Delete notices and finished deliveries older than `retention_days`; (deliveries, notices)."""
        self._pruned_at = time.monotonic()
        retention_s = self.settings.retention_days * 86_400
        pruned = await anyio.to_thread.run_sync(self.store.prune, retention_s)
        if any(pruned):
            log.info("webhooks pruned deliveries=%d notices=%d", *pruned)
        return pruned

    async def _deliver(self, due: Due) -> None:
        try:
            attempt = await self.sender.post(due.url, due.secret, due.msg_id, due.body)
            state, retry_in_s = self._outcome(due, attempt)
            back = attempt.delivered and due.attempt > 1
            self._finished.append(
                (Outcome(due, state, attempt.status, attempt.error, retry_in_s, back), attempt)
            )
        except Exception:
            log.exception(
                "webhook delivery webhook=%s notice=%s failed unexpectedly", due.webhook_id, due.msg_id
            )
        finally:
            _release(self._in_flight, due.webhook_id)
            _release(self._in_flight_accounts, due.account)
            self.wake()  # a slot is free: the next round records the outcome and may claim at once

    async def _record_outcomes(self) -> None:
        """Record the attempts finished since the last round, in one transaction (until then their claims
        keep the deliveries from being sent again)."""
        if not self._finished:
            return
        finished, self._finished = self._finished, []
        kept = await anyio.to_thread.run_sync(
            lambda: self.store.finish_many([outcome for outcome, _ in finished])
        )
        for (outcome, attempt), held in zip(finished, kept, strict=True):
            log.info(
                "webhook delivery webhook=%s notice=%s attempt=%d status=%s state=%s%s",
                outcome.due.webhook_id,
                outcome.due.msg_id,
                outcome.due.attempt,
                attempt.status,
                outcome.state.value,
                "" if held else " (claim lost: already taken over)",
            )

    def _outcome(self, due: Due, attempt: Attempt) -> tuple[DeliveryState, float]:
        """Delivered; failed for good (the last attempt, or 410 Gone); or pending again after the backoff."""
        if attempt.delivered:
            return DeliveryState.DELIVERED, 0.0
        if due.attempt >= self.settings.max_attempts or (
            attempt.status is not None and rules.gives_up(attempt.status)
        ):
            return DeliveryState.FAILED, 0.0
        delay = rules.retry_delay_s(
            due.attempt, self.settings.backoff_base_s, self.settings.backoff_max_s, self._random.random()
        )
        return DeliveryState.PENDING, delay


def _release(counts: dict[_K, int], key: _K) -> None:
    """One fewer in flight for `key`."""
    left = counts.get(key, 1) - 1
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)
