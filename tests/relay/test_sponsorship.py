"""The gas sponsorship policy (`relayer.domain.sponsorship`): who the relayer pays gas for, per-owner and
global budgets held in the journal, refused before anything is signed, on both chains and both stores.

The attack this answers: one throwaway account opens one tiny position, then signs and relays set-trigger
requests in a loop, each paid by the relayer, until it is empty (60 of 60 relayed before this policy).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient

from relayer.chain.connect import Chain
from relayer.chain.transact import build_transaction
from relayer.chain.vault import VaultReader, call_chain
from relayer.domain.sponsorship import DAY_S, Policy, Sponsored, final_cost, window_start, windows_for
from relayer.domain.typed_data import parse_typed_data_query
from relayer.services.relay.service import RelayService
from tests.blocking import Blocking
from tests.relay.conftest import FakeClock, http_client, settle

TRIGGER = {"isTakeProfit": "true", "closeBps": "5000"}


def _fund(chain: Chain, funder: LocalAccount, to: str, wei: int) -> None:
    tx = dict(build_transaction(chain.w3, funder.address, to, b""))
    tx.update(value=wei, gas=21_000)
    tx.pop("data", None)
    signed = funder.sign_transaction(tx)
    tx_hash = call_chain(lambda: chain.w3.eth.send_raw_transaction(signed.raw_transaction))
    call_chain(lambda: chain.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=60))


def _relay_trigger(
    client: TestClient, service: Blocking[RelayService], owner: LocalAccount, position_id: bytes, nonce: int
) -> Any:
    """One signed set-trigger request of `owner` (vault nonce `nonce`) relayed; settled when accepted, so the
    next one's nonce is the chain's. Each nonce moves the take-profit (99,000 + nonce): the same trigger
    again changes nothing and is refused (`nothing_to_change`)."""
    wanted = {
        "kind": "trigger",
        "positionId": "0x" + position_id.hex(),
        "nonce": str(nonce),
        "price": str(99_000 + nonce),
        **TRIGGER,
    }
    answer = service.typed_data_for(parse_typed_data_query(wanted))
    signed = Account.sign_typed_data(owner.key, full_message=answer["typedData"])
    body = {
        "kind": "trigger",
        "request": answer["typedData"]["message"],
        "signature": "0x" + signed.signature.hex(),
    }
    response = client.post("/api/relay/signed", json=body)
    if response.status_code == 202:
        settle(service)
    return response


def _paid_wei(service: Blocking[RelayService]) -> int:
    """What the relayer's signers paid, from the receipts the journal keeps."""
    return sum(final_cost(record)[0] for record in service.journal.all() if record.kind.is_ours)


def test_an_owner_gets_its_requests_per_window_then_429_with_when_it_resets(
    accounts: list[LocalAccount],
    open_position: Callable[..., bytes],
    make_service: Callable[..., Blocking[RelayService]],
    clock: FakeClock,
) -> None:
    service = make_service(policy=Policy(owner_requests_per_window=2, window_s=60))
    client = http_client(service)
    owner = accounts[2]
    position_id = open_position(owner=owner)
    for nonce in range(2):
        assert _relay_trigger(client, service, owner, position_id, nonce).status_code == 202
    before = len(service.journal.all())

    refused = _relay_trigger(client, service, owner, position_id, 2)

    assert refused.status_code == 429, refused.text
    error = refused.json()["error"]
    assert error["code"] == "quota_exceeded"
    resets_at = window_start(int(clock()), 60) + 60
    assert error["details"] == {
        "scope": f"owner:{owner.address.lower()}",
        "budget": "requests",
        "limit": "2",
        "used": "2",
        "resetsAt": resets_at,
        "retryAfterS": resets_at - int(clock()),
    }
    assert len(service.journal.all()) == before  # nothing signed, nothing journaled
    # Another owner is not affected; the same owner is served again in the next window.
    other = accounts[3]
    assert _relay_trigger(client, service, other, open_position(owner=other), 0).status_code == 202
    clock.advance(60)
    assert _relay_trigger(client, service, owner, position_id, 2).status_code == 202


def test_the_budget_holds_across_a_restart_and_is_settled_at_what_the_chain_took(
    clock: FakeClock,
    accounts: list[LocalAccount],
    open_position: Callable[..., bytes],
    make_service: Callable[..., Blocking[RelayService]],
) -> None:
    policy = Policy(owner_requests_per_window=3)
    service = make_service(policy=policy)
    owner = accounts[2]
    position_id = open_position(owner=owner)
    for nonce in range(3):
        assert _relay_trigger(http_client(service), service, owner, position_id, nonce).status_code == 202
    scope = f"owner:{owner.address.lower()}"
    now_s = int(clock())
    day = (scope, DAY_S, window_start(now_s, DAY_S))
    usage = service.journal.spend_usage(service.chain.chain_id, [w for w in _windows(policy, owner, now_s)])
    assert usage[day].requests == 3
    assert usage[day].spent_wei == _paid_wei(
        service
    )  # settled: the receipts' gas x price, not the reservation
    assert service.health()["sponsorship"]["today"]["spentWei"] == str(_paid_wei(service))

    restarted = make_service(policy=policy)  # the same journal: the count is in the database, not in memory
    refused = _relay_trigger(http_client(restarted), restarted, owner, position_id, 3)
    assert refused.status_code == 429
    assert refused.json()["error"]["details"]["used"] == "3"


def _windows(policy: Policy, owner: LocalAccount, now_s: int) -> list[Any]:
    return list(windows_for(policy, Sponsored(owner.address), now_s))


@pytest.mark.parametrize(
    ("policy", "allowed"),
    [
        (Policy(who="api_keys"), False),
        (Policy(who="allowlist", allowlist=frozenset({"0x" + "11" * 20})), False),
        (Policy(who="allowlist"), True),  # filled in below with the owner's address
    ],
)
def test_who_is_sponsored(
    accounts: list[LocalAccount],
    open_position: Callable[..., bytes],
    make_service: Callable[..., Blocking[RelayService]],
    policy: Policy,
    allowed: bool,
) -> None:
    owner = accounts[2]
    if allowed:
        policy = Policy(who="allowlist", allowlist=frozenset({owner.address.lower()}))
    service = make_service(policy=policy)
    response = _relay_trigger(http_client(service), service, owner, open_position(owner=owner), 0)
    health = service.health()["sponsorship"]["policy"]
    assert "allowlist" not in health  # anyone may read /health: it says how many, not who
    assert health["allowlistSize"] == len(policy.allowlist)
    if allowed:
        assert response.status_code == 202, response.text
    else:
        assert response.status_code == 403, response.text
        assert response.json()["error"]["code"] == "sponsorship_refused"
        assert service.journal.all() == []


def test_ten_throwaway_owners_draining_as_fast_as_they_can_spend_at_most_the_daily_cap(
    chain: Chain,
    vault: VaultReader,
    accounts: list[LocalAccount],
    open_position: Callable[..., bytes],
    make_service: Callable[..., Blocking[RelayService]],
) -> None:
    """The drain attack with ten owners: each relays set-trigger requests until refused. The relayer pays at
    most the cap (settled figures), and refuses with `quota_exceeded` rather than running dry."""
    service = make_service()
    client = http_client(service)
    owner0 = accounts[2]
    assert _relay_trigger(client, service, owner0, open_position(owner=owner0), 0).status_code == 202
    already = one_wei = _paid_wei(service)  # what one set-trigger costs on this chain
    cap_wei = 12 * one_wei
    service.inner.policy = Policy(
        owner_gas_wei_per_day=6 * one_wei, daily_cap_wei=cap_wei, owner_requests_per_window=0
    )
    owners = [Account.create() for _ in range(10)]
    for owner in owners:
        _fund(chain, accounts[0], owner.address, 10**18)
    positions = [open_position(owner=owner, size="0.001") for owner in owners]

    relayed = refused = 0
    codes: set[tuple[str, str]] = set()
    for _round in range(8):  # every owner, in turn, until all are refused
        for owner, position_id in zip(owners, positions, strict=True):
            nonce = vault.contract.functions.nonces(owner.address).call()
            response = _relay_trigger(client, service, owner, position_id, nonce)
            if response.status_code == 202:
                relayed += 1
            else:
                assert response.status_code == 429, response.text
                details = response.json()["error"]["details"]
                codes.add((details["scope"].split(":")[0], details["budget"]))
                refused += 1
    settle(service)
    paid = _paid_wei(service) - already
    print(f"\ndrain: relayed {relayed}, refused {refused}, paid {paid + already} wei of a {cap_wei} wei cap")
    assert paid + already <= cap_wei  # the cap holds, settled figures
    assert relayed >= 8  # the budget was usable, not refused from the start
    assert ("global", "gas_wei") in codes  # the cap stopped them, before any owner's own budget
    today = service.health()["sponsorship"]["today"]
    assert today["capReached"] is (int(today["spentWei"]) >= cap_wei)
