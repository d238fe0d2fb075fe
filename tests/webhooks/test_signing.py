"""Standard Webhooks signing checked two independent ways (the `standardwebhooks` package, and the spec's
HMAC written out here), the secret format, the retry schedule, and the URL rules before and after DNS."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook as Verifier
from standardwebhooks.webhooks import WebhookVerificationError

from relayer.config import WebhookSettings
from relayer.domain import webhooks as rules
from relayer.domain.notices import Cursor, NoticeType
from relayer.errors import InvalidFieldError, WebhookUrlRefusedError
from relayer.services.webhooks import Sender
from tests.webhooks.conftest import Receiver


def test_the_signature_is_the_specs_hmac_written_out_by_hand() -> None:
    key = bytes(range(32))
    secret = "whsec_" + base64.b64encode(key).decode()
    body = b'{"id":"evt_7","type":"transaction.status","data":{"status":"mined"}}'

    headers = rules.signed_headers(secret, "evt_7", 1_700_000_123, body)

    expected = hmac.new(key, b"evt_7.1700000123." + body, hashlib.sha256).digest()
    assert headers["webhook-signature"] == "v1," + base64.b64encode(expected).decode()
    assert (headers["webhook-id"], headers["webhook-timestamp"]) == ("evt_7", "1700000123")


@given(body=st.binary(max_size=300).map(lambda b: base64.b64encode(b)), msg=st.from_regex(r"evt_[0-9]{1,9}"))
def test_standardwebhooks_verifies_what_we_sign_and_refuses_a_changed_body(body: bytes, msg: str) -> None:
    secret = rules.new_secret()
    now = int(time.time())
    headers = rules.signed_headers(secret, msg, now, body)

    assert Verifier(secret).verify(body, headers, json_parse=False) is None
    with pytest.raises(WebhookVerificationError):
        Verifier(secret).verify(body + b" ", headers, json_parse=False)
    with pytest.raises(WebhookVerificationError):  # another subscription's secret
        Verifier(rules.new_secret()).verify(body, headers, json_parse=False)
    stale = rules.signed_headers(secret, msg, now - 3_600, body)
    with pytest.raises(WebhookVerificationError):  # a replay an hour later
        Verifier(secret).verify(body, stale, json_parse=False)


def test_secrets_are_fresh_whsec_base64_of_enough_bytes() -> None:
    made = {rules.new_secret() for _ in range(50)}
    assert len(made) == 50
    for secret in made:
        assert secret.startswith("whsec_")
        assert 24 <= len(base64.b64decode(secret.removeprefix("whsec_"))) <= 64
    with pytest.raises(ValueError, match="whsec_"):
        rules.secret_key("sk_nope")
    hook = rules.Webhook("wh_1", 1, None, "https://x.example/", None, Cursor(0, 0), 0.0, secret="whsec_AAAA")
    assert "whsec_" not in repr(hook)
    assert "secret" not in hook.to_dict()


def test_the_backoff_doubles_to_its_cap_and_jitter_only_shortens() -> None:
    assert [rules.retry_delay_s(n, 2.0, 30.0) for n in range(1, 7)] == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert rules.retry_delay_s(1000, 2.0, 30.0) == 30.0
    assert 27.0 <= rules.retry_delay_s(9, 2.0, 30.0, jitter=0.999) < 30.0


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://localhost/",
        "http://api.localhost/",
        "http://10.1.2.3/",
        "http://192.168.0.1/",
        "http://172.16.5.4/",
        "http://169.254.169.254/",
        "http://100.64.0.1/",
        "http://0.0.0.0/",
        "http://[::1]/",
        "http://[fe80::1]/",
        "http://[fc00::1]/",
        "http://[::ffff:10.0.0.1]/",
        "http://user@example.com/",
        "http://:pw@example.com/",
        "gopher://example.com/",
        "file:///etc/passwd",
        "https://",
        "http://example.com:0/",
        "http://exa mple.com/",
        "",
        None,
        42,
    ],
)
def test_urls_refused_at_creation(url: object) -> None:
    with pytest.raises(WebhookUrlRefusedError):
        rules.check_url(url, allow_private=False)


def test_private_urls_pass_when_allowed_but_credentials_never_do() -> None:
    assert rules.check_url("http://127.0.0.1:8080/h", allow_private=True) == "http://127.0.0.1:8080/h"
    assert rules.check_url("https://93.184.216.34/h", allow_private=False)
    with pytest.raises(WebhookUrlRefusedError):
        rules.check_url("http://u:p@127.0.0.1/", allow_private=True)


def test_types_filter() -> None:
    assert rules.parse_types(None) is None
    assert rules.parse_types(["order.executed"]) == frozenset({NoticeType.ORDER_EXECUTED})
    for bad in ([], ["transaction.mined"], "x", 3, [1]):
        with pytest.raises(InvalidFieldError):
            rules.parse_types(bad)


def test_a_name_that_resolves_inside_is_refused_at_delivery_and_nothing_is_sent(receiver: Receiver) -> None:
    port = receiver.server.server_address[1]

    async def inside(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]  # the name was public when the subscription was made; DNS changed since

    async def run() -> tuple[str | None, int | None]:
        sender = Sender(WebhookSettings(), resolve=inside)
        try:
            attempt = await sender.post(
                f"http://hooks.example.com:{port}/x", rules.new_secret(), "evt_1", b"{}"
            )
        finally:
            await sender.aclose()
        return attempt.error, attempt.status

    _refused_unsent(*asyncio.run(run()), receiver)


def test_a_name_is_called_at_the_address_that_was_checked(receiver: Receiver) -> None:
    port = receiver.server.server_address[1]
    asked: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        return ["127.0.0.1"]

    async def run() -> int | None:
        sender = Sender(WebhookSettings(allow_private_urls=True), resolve=resolve)
        try:
            return (
                await sender.post(f"http://receiver.test:{port}/pinned", rules.new_secret(), "evt_2", b"{}")
            ).status
        finally:
            await sender.aclose()

    assert asyncio.run(run()) == 200
    (got,) = receiver.at("/pinned")
    assert asked == ["receiver.test"]
    assert got.headers["host"] == f"receiver.test:{port}"


def test_a_redirect_is_not_followed_and_counts_as_a_failure(receiver: Receiver) -> None:
    receiver.script("/moved", 307)

    async def run() -> tuple[bool, int | None]:
        sender = Sender(WebhookSettings(allow_private_urls=True))
        try:
            attempt = await sender.post(receiver.url("/moved"), rules.new_secret(), "evt_3", b"{}")
        finally:
            await sender.aclose()
        return attempt.delivered, attempt.status

    assert asyncio.run(run()) == (False, 307)
    assert len(receiver.received) == 1


EMBEDDING_INSIDE = [
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254 (cloud metadata)
    "64:ff9b:1::a00:1",  # local-use NAT64 (10.0.0.1)
    "2002:7f00:1::",  # 6to4 of 127.0.0.1
    "2002:a9fe:a9fe::",  # 6to4 of 169.254.169.254
    "::127.0.0.1",  # IPv4-compatible
    "::ffff:0:7f00:1",  # SIIT IPv4-translated
    "::ffff:169.254.169.254",  # IPv4-mapped
    "2001:0:7f00:1:0:0:3fff:fffe",  # Teredo, server 127.0.0.1
    "2001:0:5db8:d822:0:0:f5ff:fffe",  # Teredo, client 10.0.0.1
    "fec0::1",  # site-local
    "fd00::1",  # unique local
    "ff02::1",  # multicast
    "100::1",  # discard-only
]


@pytest.mark.parametrize("address", EMBEDDING_INSIDE)
def test_ipv6_forms_reaching_inside_are_refused_at_creation(address: str) -> None:
    assert not rules.address_allowed(address, allow_private=False)
    with pytest.raises(WebhookUrlRefusedError):
        rules.check_url(f"http://[{address}]/latest/meta-data/", allow_private=False)


@pytest.mark.parametrize("address", EMBEDDING_INSIDE)
def test_a_name_resolving_to_an_ipv6_form_reaching_inside_is_refused_at_creation_and_delivery(
    address: str, receiver: Receiver
) -> None:
    async def inside(host: str, port: int) -> list[str]:
        return [address]

    async def run() -> tuple[str | None, int | None]:
        from relayer.services.webhooks import WebhookService

        service = WebhookService(None, WebhookSettings(), _no_key, resolve=inside)  # type: ignore[arg-type]
        with pytest.raises(WebhookUrlRefusedError):  # refused before the store is touched
            await service.add(None, "http://hooks.example.com/x", None)
        sender = Sender(WebhookSettings(), resolve=inside)
        try:
            attempt = await sender.post("http://hooks.example.com/x", rules.new_secret(), "evt_1", b"{}")
        finally:
            await sender.aclose()
        return attempt.error, attempt.status

    _refused_unsent(*asyncio.run(run()), receiver)


@pytest.mark.parametrize("address", ["2606:4700:4700::1111", "64:ff9b::5db8:d822", "2002:5db8:d822::1"])
def test_global_ipv6_and_forms_embedding_a_public_ipv4_pass(address: str) -> None:
    assert rules.address_allowed(address, allow_private=False)
    assert rules.check_url(f"https://[{address}]/h", allow_private=False)


def _no_key(presented: str | None, scope: object) -> object:
    raise AssertionError("no key is asked for")


def _refused_unsent(error: str | None, status: int | None, receiver: Receiver) -> None:
    """The attempt was refused by the address rules before anything reached the receiver."""
    assert status is None
    assert error is not None
    assert error.startswith("webhook_url_refused")
    assert receiver.received == []
