"""Webhook rules, pure values (no SQL, no HTTP, no DNS): Standard Webhooks signing, secrets, the retry
schedule, which URLs may be called, which notice types a subscription takes.

Standard Webhooks (https://www.standardwebhooks.com, spec 1.0.0): every delivery is a POST of the notice's
JSON envelope with three headers, `webhook-id` (the notice's id, the same on every retry: the receiver's
dedupe key), `webhook-timestamp` (unix seconds of this attempt: the receiver refuses old ones, so a captured
request cannot be replayed later) and `webhook-signature` (`v1,` + base64 of HMAC-SHA256 over
`{id}.{timestamp}.{body}`, keyed with the base64-decoded part of the subscription's `whsec_` secret), so a
receiver can verify with any Standard Webhooks library.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from relayer.domain.notices import Cursor, NoticeType
from relayer.errors import InvalidFieldError, WebhookUrlRefusedError

SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
"""Standard Webhooks' prefix of a symmetric (HMAC-SHA256) secret."""

SECRET_BYTES = 32
"""Random bytes in a new secret (the spec asks for 24 to 64)."""

MAX_URL_CHARS = 2_048
"""The longest webhook URL accepted."""

TEST_TYPE = "webhook.test"
"""The `type` of the message `relayer webhooks test` and `POST /api/webhooks/{id}/test` send."""

JITTER_FRACTION = 0.1
"""A retry waits up to this share less than its scheduled delay, so receivers that failed together are not
all retried in the same instant."""

WEBHOOK_ID_PREFIX = "wh_"


class DeliveryState(StrEnum):
    """A delivery's state: `pending` until a 2xx (`delivered`) or the last attempt failed (`failed`)."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


@dataclass(frozen=True)
class Webhook:
    """A subscription: notices of `account` (None: every notice, an operator's) of `types` (None: all), POSTed
    to `url`, signed with `secret` (never in `repr`, logs or listings)."""

    id: str
    chain_id: int
    account: str | None
    url: str
    types: frozenset[NoticeType] | None
    cursor: Cursor
    created_at: float
    secret: str = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The subscription as listings show it (no secret)."""
        return {
            "id": self.id,
            "chainId": self.chain_id,
            "account": self.account,
            "url": self.url,
            "types": None if self.types is None else sorted(t.value for t in self.types),
            "createdAt": int(self.created_at),
        }


@dataclass(frozen=True)
class Delivery:
    """One notice to one subscription, as `webhooks deliveries` and the REST listing show it."""

    id: int
    webhook_id: str
    notice_id: int
    msg_id: str
    """The notice's `webhook-id` (`relayer.domain.notices.notice_id`)."""
    state: DeliveryState
    attempts: int
    next_at: float
    last_status: int | None
    last_error: str | None
    created_at: float
    updated_at: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "webhookId": self.webhook_id,
            "noticeId": self.msg_id,
            "state": self.state.value,
            "attempts": self.attempts,
            "nextAt": int(self.next_at),
            "lastStatus": self.last_status,
            "lastError": self.last_error,
            "createdAt": int(self.created_at),
            "updatedAt": int(self.updated_at),
        }


@dataclass(frozen=True)
class Due:
    """A delivery claimed for sending: where, with what secret, what (the notice's envelope JSON) and which
    attempt (`attempt`, 1 for the first: the compare-and-set token of `finish`); `account` is the
    subscription's (None: a global one), whose in-flight share it counts against."""

    delivery_id: int
    webhook_id: str
    account: str | None
    url: str
    msg_id: str
    body: bytes = field(repr=False)
    attempt: int
    secret: str = field(repr=False)


def new_secret() -> str:
    """A fresh subscription secret: `whsec_` + base64 of `SECRET_BYTES` random bytes.

    >>> s = new_secret(); s.startswith("whsec_") and len(secret_key(s)) == SECRET_BYTES
    True
    """
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def new_webhook_id() -> str:
    return WEBHOOK_ID_PREFIX + secrets.token_hex(12)


def secret_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_` secret (its base64 part, decoded).

    Raises:
        ValueError: not a `whsec_` secret of base64.
    """
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("a webhook secret starts with whsec_")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except binascii.Error:
        raise ValueError("a webhook secret is whsec_ + base64") from None
    if not key:
        raise ValueError("an empty webhook secret")
    return key


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header: `v1,` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")).

    >>> signature("whsec_" + base64.b64encode(b"k" * 24).decode(), "evt_1", 1700000000, b"{}")
    'v1,njmeZaQmiFyUsjW3C1vf6FXD1aJMKJjfnQP6BeaN0gw='
    """
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """Every header of a delivery (the three Standard Webhooks ones and the content type)."""
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, msg_id, timestamp, body),
    }


def retry_delay_s(attempts: int, base_s: float, max_s: float, jitter: float = 0.0) -> float:
    """The wait after the `attempts`-th failed attempt: `base_s` doubled per earlier failure, at most
    `max_s`, less up to `JITTER_FRACTION` of it (`jitter` in [0, 1), the caller's random draw).

    >>> [retry_delay_s(n, 1.0, 10.0) for n in (1, 2, 3, 4, 5)]
    [1.0, 2.0, 4.0, 8.0, 10.0]
    >>> retry_delay_s(1, 10.0, 60.0, jitter=0.5)
    9.5
    """
    exponent = min(max(attempts - 1, 0), 62)
    delay = min(base_s * (1 << exponent), max_s)
    return delay * (1 - JITTER_FRACTION * min(max(jitter, 0.0), 1.0))


def delivered(status: int) -> bool:
    """A 2xx answer delivers (Standard Webhooks: anything else, redirects included, is a failure)."""
    return 200 <= status <= 299


def gives_up(status: int) -> bool:
    """410 Gone: the receiver wants no more of this; the delivery fails at once, without retries."""
    return status == 410


def check_url(url: object, *, allow_private: bool) -> str:
    """A webhook URL the relayer may call, as given: http or https, a host, no credentials, at most
    `MAX_URL_CHARS`, and (unless `allow_private`) no loopback, private, link-local or otherwise non-global
    address literal nor `localhost`. A host name is checked again once resolved, before every delivery
    (`address_allowed`): DNS may change after the subscription is made.

    >>> check_url("https://hooks.example.com/relayer", allow_private=False)
    'https://hooks.example.com/relayer'
    >>> check_url("http://127.0.0.1:9000/", allow_private=True)
    'http://127.0.0.1:9000/'

    Raises:
        WebhookUrlRefusedError: naming the rule it breaks (422).
    """
    if not isinstance(url, str) or not url.strip():
        raise WebhookUrlRefusedError("url: give the receiver's http(s) URL")
    if len(url) > MAX_URL_CHARS:
        raise WebhookUrlRefusedError(f"url: at most {MAX_URL_CHARS} characters")
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        raise WebhookUrlRefusedError("url: no spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise WebhookUrlRefusedError("url: not a valid URL") from None
    if parts.scheme not in {"http", "https"}:
        raise WebhookUrlRefusedError("url: only http and https receivers", scheme=parts.scheme)
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise WebhookUrlRefusedError("url: no credentials in the URL (the signature authenticates us)")
    host = parts.hostname
    if not host:
        raise WebhookUrlRefusedError("url: no host")
    if port == 0:
        raise WebhookUrlRefusedError("url: port 0")
    if not allow_private:
        if host == "localhost" or host.endswith(".localhost"):
            raise WebhookUrlRefusedError("url: a loopback host", host=host)
        literal = ip_literal(host)
        if literal is not None and not address_allowed(literal, allow_private=False):
            raise WebhookUrlRefusedError("url: a loopback, private or link-local address", host=host)
    return url


def ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a URL's host names literally (None: a name)."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


_GLOBAL_UNICAST_V6 = ipaddress.IPv6Network("2000::/3")
"""The only IPv6 range a receiver may be in (besides the forms embedding an IPv4 address, judged by it)."""

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
"""RFC 6052's well-known NAT64 prefix: the last 32 bits are the IPv4 address the translator calls."""

_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
"""RFC 8215's local-use NAT64 prefix: where the IPv4 address sits depends on the site's prefix length, so
every address of it is refused."""

_SIIT = ipaddress.IPv6Network("::ffff:0:0:0/96")
"""RFC 2765's IPv4-translated addresses (`::ffff:0:a.b.c.d`)."""

_COMPATIBLE = ipaddress.IPv6Network("::/96")
"""The deprecated IPv4-compatible addresses (`::a.b.c.d`; `::` and `::1` included)."""


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address] | None:
    """The IPv4 addresses an IPv6 address reaches through (IPv4-mapped, 6to4, Teredo server and client,
    NAT64 64:ff9b::/96, IPv4-translated, IPv4-compatible); None when it embeds none.

    >>> embedded_ipv4(ipaddress.IPv6Address("64:ff9b::a9fe:a9fe")), embedded_ipv4(ipaddress.IPv6Address(
    ...   "2606:4700::1"))
    ([IPv4Address('169.254.169.254')], None)
    """
    low = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.ipv4_mapped is not None:
        return [ip.ipv4_mapped]
    if ip.sixtofour is not None:
        return [ip.sixtofour]
    if ip.teredo is not None:
        return list(ip.teredo)
    if ip in _NAT64 or ip in _SIIT or ip in _COMPATIBLE:
        return [low]
    return None


def address_allowed(
    address: str | ipaddress.IPv4Address | ipaddress.IPv6Address, *, allow_private: bool
) -> bool:
    """Whether a resolved receiver address may be called: a global unicast address, or any with
    `allow_private`. An IPv6 address that embeds an IPv4 one (`embedded_ipv4`: a translator or tunnel would
    carry the request to it) is judged as that IPv4 address; any other IPv6 address must be global unicast
    (2000::/3, not a special-purpose range), so site-local fec0::/10 and the local-use NAT64 prefix
    64:ff9b:1::/48 are refused.

    >>> [address_allowed(a, allow_private=False) for a in ("93.184.216.34", "10.0.0.1", "::1",
    ...  "169.254.169.254", "::ffff:127.0.0.1", "100.64.0.1", "fe80::1", "64:ff9b::7f00:1",
    ...  "2002:a9fe:a9fe::", "fec0::1", "2606:4700::1111", "64:ff9b::5db8:d822")]
    [True, False, False, False, False, False, False, False, False, False, True, True]
    """
    if allow_private:
        return True
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv4Address):
        return _ipv4_allowed(ip)
    if ip in _NAT64_LOCAL:
        return False
    inner = embedded_ipv4(ip)
    if inner is not None:
        return all(_ipv4_allowed(v4) for v4 in inner)
    return ip in _GLOBAL_UNICAST_V6 and ip.is_global and not ip.is_multicast


def _ipv4_allowed(ip: ipaddress.IPv4Address) -> bool:
    return ip.is_global and not ip.is_multicast


def parse_types(value: object) -> frozenset[NoticeType] | None:
    """A subscription's `types`: a list (or comma-separated text) of notice types; None or absent: all.

    >>> types_text(parse_types("position.decreased, order.executed"))
    'order.executed,position.decreased'

    Raises:
        InvalidFieldError: an unknown type, or an empty list (422).
    """
    if value is None:
        return None
    if isinstance(value, str):
        names: Iterable[object] = [name.strip() for name in value.split(",") if name.strip()]
    elif isinstance(value, list):
        names = value
    else:
        raise InvalidFieldError("types", "a list of notice types")
    choices = ", ".join(t.value for t in NoticeType)
    found: set[NoticeType] = set()
    for name in names:
        if not isinstance(name, str) or name not in {t.value for t in NoticeType}:
            raise InvalidFieldError("types", f"unknown notice type {name!r}: choose from {choices}")
        found.add(NoticeType(name))
    if not found:
        raise InvalidFieldError("types", f"give at least one of {choices}, or omit it for every type")
    return frozenset(found)


def types_text(types: frozenset[NoticeType] | None) -> str | None:
    """How a types filter is stored (comma-separated, sorted; None: every type)."""
    return None if types is None else ",".join(sorted(t.value for t in types))


def types_of_text(text: str | None) -> frozenset[NoticeType] | None:
    return None if text is None else frozenset(NoticeType(name) for name in text.split(",") if name)


def matches(
    types: frozenset[NoticeType] | None,
    account: str | None,
    notice_type: NoticeType,
    notice_account: str | None,
) -> bool:
    """Whether a subscription (its `account`, None: global; its `types`) takes a notice.

    >>> matches(None, "0xab", NoticeType.TRANSACTION_STATUS, "0xab"), matches(None, "0xab",
    ...   NoticeType.TRANSACTION_STATUS, "0xcd"), matches(None, None, NoticeType.ORDER_EXECUTED, None)
    (True, False, True)
    """
    if types is not None and notice_type not in types:
        return False
    return account is None or (notice_account is not None and notice_account.lower() == account.lower())
