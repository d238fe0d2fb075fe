"""The gas sponsorship policy: who the relayer pays gas for and how much, as pure rules.

A relayer pays gas for others, so it is attacked for its gas. Every call the relayer signs and pays for is
charged, before it is signed, against budgets in fixed windows (`Window`):

- a signed request's **owner** (`owner:<address>`): requests per window and gas in wei per UTC day;
- an **API key**'s calls (`key:<id>`): the same, the key's own daily spend where it has one (a key is issued
  by the operator to one account: its calls count against the key, not against the owner's budget for
  signed requests);
- every signed request together (`signed`): gas in wei per UTC day, a share of the cap, so throwaway
  owners cannot spend all of it and lock the operator's API-key accounts out until midnight;
- the relayer as a whole (`global`): gas in wei per UTC day, the daily spend cap.

Keeper executions are counted (`keeper`, `global`, and the position owner's day, so an owner who sets orders
on chain and has the keeper execute them spends its own budget for signed requests) but never refused: a
take-profit or stop-loss must fire whatever anyone spent.

The charge reserved at signing is the worst case (gas limit x the max fee per gas it was signed with); once
the record is final it is settled at what the chain took (gas used x the effective gas price; a fee bump first
raises the reservation to the bump's worst case, never refused). A nonce filled by a no-op is charged the
no-op's receipt, to the owner (or key) or to the relayer alone as the policy says
(`expired_noop_charged_to`).

Windows are fixed and aligned to the unix epoch: a window of `window_s` seconds starts at a multiple of it,
so every instance agrees on it without talking, and "resets at" is exact.

>>> window_start(1_700_000_123, 60)
1700000100
>>> window_start(1_700_000_123, DAY_S)
1699920000
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from relayer.domain.status import AttemptKind
from relayer.errors import QuotaExceededError, SponsorshipRefusedError

if TYPE_CHECKING:  # records keep a `Charge`; this module only reads them
    from relayer.domain.records import RelayRecord

DAY_S = 86_400
"""The gas budgets' window: one UTC day, in seconds."""

Who = Literal["anyone", "allowlist", "api_keys"]
NoopPayer = Literal["owner", "relayer"]
GLOBAL_SCOPE = "global"
SIGNED_SCOPE = "signed"
KEEPER_SCOPE = "keeper"


@dataclass(frozen=True)
class Policy:
    """The sponsorship policy, as `SponsorshipSettings` (`RELAYER_SPONSOR_*`) gives it. A limit of 0 turns
    that budget off (counted, never refused)."""

    who: Who = "anyone"
    allowlist: frozenset[str] = frozenset()
    """Lower-case owner addresses sponsored when `who` is "allowlist"."""
    window_s: int = 60
    owner_requests_per_window: int = 60
    owner_gas_wei_per_day: int = 10**17
    key_requests_per_window: int = 600
    key_gas_wei_per_day: int = 10**18
    daily_cap_wei: int = 10 * 10**18
    signed_daily_cap_wei: int = 5 * 10**18
    expired_noop_charged_to: NoopPayer = "owner"

    def to_dict(self, *, with_allowlist: bool = True) -> dict[str, Any]:
        """The policy as `relayer policy show` prints it (wei as decimal strings); `/health`, which anyone may
        read, shows only how many owners are allowlisted (`with_allowlist=False`), not who they are."""
        listed: dict[str, Any] = {"allowlistSize": len(self.allowlist)}
        if with_allowlist:
            listed = {"allowlist": sorted(self.allowlist)}
        return {
            "who": self.who,
            **listed,
            "windowS": self.window_s,
            "ownerRequestsPerWindow": self.owner_requests_per_window,
            "ownerGasWeiPerDay": str(self.owner_gas_wei_per_day),
            "keyRequestsPerWindow": self.key_requests_per_window,
            "keyGasWeiPerDay": str(self.key_gas_wei_per_day),
            "dailyCapWei": str(self.daily_cap_wei),
            "signedDailyCapWei": str(self.signed_daily_cap_wei),
            "expiredNoopChargedTo": self.expired_noop_charged_to,
        }


@dataclass(frozen=True)
class Sponsored:
    """Who a sponsored call is for: the account it acts for, and the API key that asked (None: a signed
    request, or the keeper)."""

    account: str | None
    key_id: int | None = None
    key_daily_spend_wei: int | None = None
    keeper: bool = False


@dataclass(frozen=True)
class Window:
    """One budget row: `scope` over the window of `window_s` seconds starting at `start`, with its limits
    (0: none) and whether a no-op's cost is settled into it (`payer`)."""

    scope: str
    window_s: int
    start: int
    max_requests: int = 0
    max_wei: int = 0
    payer: bool = True

    @property
    def resets_at(self) -> int:
        return self.start + self.window_s

    @property
    def budget(self) -> str:
        return "requests" if self.max_requests else "gas_wei"

    def key(self) -> tuple[str, int, int]:
        return (self.scope, self.window_s, self.start)


@dataclass(frozen=True)
class Usage:
    """What a window holds: requests counted and wei spent (reserved or settled)."""

    requests: int = 0
    spent_wei: int = 0


@dataclass(frozen=True)
class Charge:
    """A record's reservation: `wei` (its worst case) added to each of `windows`, with one request."""

    wei: int
    windows: tuple[Window, ...]

    def to_json(self) -> str:
        return json.dumps(
            {
                "wei": str(self.wei),
                "windows": [
                    [w.scope, w.window_s, w.start, w.max_requests, str(w.max_wei), w.payer]
                    for w in self.windows
                ],
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> Charge:
        data = json.loads(text)
        windows = tuple(
            Window(str(s), int(ws), int(st), int(mr), int(mw), bool(p))
            for s, ws, st, mr, mw, p in data["windows"]
        )
        return cls(int(data["wei"]), windows)

    def with_wei(self, wei: int) -> Charge:
        return Charge(wei, self.windows)


def window_start(now_s: int, window_s: int) -> int:
    """The start of the fixed window of `window_s` seconds holding `now_s`."""
    return now_s - now_s % window_s


def check_sponsored(policy: Policy, sponsored: Sponsored) -> None:
    """Whether the policy pays gas for this caller at all. API-key accounts (keys are issued by the operator)
    and the keeper always are; a signed request's owner as `who` says.

    Raises:
        SponsorshipRefusedError: naming the rule.
    """
    if sponsored.key_id is not None or sponsored.keeper:
        return
    if policy.who == "api_keys":
        raise SponsorshipRefusedError(
            "this relayer pays gas only for API-key accounts; send the transaction yourself", who=policy.who
        )
    if policy.who == "allowlist" and (sponsored.account or "").lower() not in policy.allowlist:
        raise SponsorshipRefusedError(
            "this relayer pays gas only for allowlisted owners", who=policy.who, owner=sponsored.account
        )


def windows_for(policy: Policy, sponsored: Sponsored, now_s: int) -> tuple[Window, ...]:
    """Every budget window a call for `sponsored` at `now_s` counts in, with the limits that apply."""
    day = window_start(now_s, DAY_S)
    noop_payer = policy.expired_noop_charged_to == "owner"
    if sponsored.keeper:  # counted, the owner's day too (its orders' executions), never refused
        counted = [Window(KEEPER_SCOPE, DAY_S, day), Window(GLOBAL_SCOPE, DAY_S, day)]
        if sponsored.account is not None:
            counted.insert(0, Window(f"owner:{sponsored.account.lower()}", DAY_S, day))
        return tuple(counted)
    windows: list[Window] = []
    if sponsored.key_id is None and sponsored.account is not None:  # a signed request's owner
        owner = f"owner:{sponsored.account.lower()}"
        minute = window_start(now_s, policy.window_s)
        windows.append(Window(owner, policy.window_s, minute, max_requests=policy.owner_requests_per_window))
        windows.append(Window(owner, DAY_S, day, max_wei=policy.owner_gas_wei_per_day, payer=noop_payer))
        windows.append(Window(SIGNED_SCOPE, DAY_S, day, max_wei=policy.signed_daily_cap_wei))
    if sponsored.key_id is not None:
        key = f"key:{sponsored.key_id}"
        minute = window_start(now_s, policy.window_s)
        daily = (
            policy.key_gas_wei_per_day
            if sponsored.key_daily_spend_wei is None
            else sponsored.key_daily_spend_wei
        )
        windows.append(Window(key, policy.window_s, minute, max_requests=policy.key_requests_per_window))
        windows.append(Window(key, DAY_S, day, max_wei=daily, payer=noop_payer))
    windows.append(Window(GLOBAL_SCOPE, DAY_S, day, max_wei=policy.daily_cap_wei))
    return tuple(windows)


def refusal(window: Window, usage: Usage, charge_wei: int, now_s: int) -> QuotaExceededError | None:
    """The error when adding one request of `charge_wei` to `window` (holding `usage`) would pass a limit.

    >>> w = Window("owner:0xab", 60, 120, max_requests=2)
    >>> refusal(w, Usage(1, 0), 5, 130) is None
    True
    >>> refusal(w, Usage(2, 0), 5, 130).details["retryAfterS"]
    50
    """
    if window.max_requests and usage.requests + 1 > window.max_requests:
        message = f"{window.scope} may make {window.max_requests} sponsored requests per {window.window_s} s"
        return _exceeded(window, "requests", window.max_requests, usage.requests, message, now_s)
    if window.max_wei and usage.spent_wei + charge_wei > window.max_wei:
        what = {
            GLOBAL_SCOPE: "the relayer's daily spend cap",
            SIGNED_SCOPE: "the daily spend cap of signed requests",
        }.get(window.scope, f"{window.scope}'s gas budget")
        message = (
            f"{what} of {window.max_wei} wei per day would be passed (used {usage.spent_wei},"
            f" this call may cost up to {charge_wei})"
        )
        return _exceeded(window, "gas_wei", window.max_wei, usage.spent_wei, message, now_s)
    return None


def _exceeded(
    window: Window, budget: str, limit: int, used: int, message: str, now_s: int
) -> QuotaExceededError:
    return QuotaExceededError(
        message,
        scope=window.scope,
        budget=budget,
        limit=limit,
        used=used,
        resets_at=window.resets_at,
        now=now_s,
    )


def first_refusal(
    charge: Charge, usages: dict[tuple[str, int, int], Usage], now_s: int
) -> QuotaExceededError | None:
    """The first window of `charge` that would pass a limit (None: all hold)."""
    for window in charge.windows:
        error = refusal(window, usages.get(window.key(), Usage()), charge.wei, now_s)
        if error is not None:
            return error
    return None


@dataclass(frozen=True)
class Settlement:
    """A final record's charge and what each of its windows is settled at (`settlement`)."""

    record_id: str
    chain_id: int
    charge: Charge
    settled: dict[tuple[str, int, int], int]


def settlement(charge: Charge, *, actual_wei: int, noop: bool) -> dict[tuple[str, int, int], int]:
    """What each window of a final record's charge is settled at: the chain's actual cost, except that a
    nonce filled by a no-op is charged only to the windows that pay for no-ops (the owner's or key's when the
    policy says "owner"; always the relayer's own). The change to apply is `settled - charge.wei`.

    >>> c = Charge(100, (Window("owner:0xab", 86400, 0, payer=False), Window("global", 86400, 0)))
    >>> settlement(c, actual_wei=30, noop=True)
    {('owner:0xab', 86400, 0): 0, ('global', 86400, 0): 30}
    """
    return {w.key(): (actual_wei if (w.payer or not noop) else 0) for w in charge.windows}


def final_cost(record: RelayRecord) -> tuple[int, bool]:
    """What a final record cost the relayer, in wei, and whether that was a no-op filling its nonce: the
    receipt of whichever of its transactions was mined (gas used x effective gas price); 0 when none of
    ours was (replaced by someone else's)."""
    mined = record.mined
    if mined is None:
        return 0, False
    noop = any(a.tx_hash == mined.tx_hash and a.kind is AttemptKind.NOOP for a in record.attempts)
    return mined.gas_used * mined.effective_gas_price_wei, noop


def global_day(now_s: int) -> Window:
    """The relayer's own spend window of today (UTC)."""
    return Window(GLOBAL_SCOPE, DAY_S, window_start(now_s, DAY_S))


def spend_today(
    policy: Policy,
    usage_of: Callable[[int, Iterable[Window]], dict[tuple[str, int, int], Usage]],
    chain_id: int,
    now_s: int,
) -> dict[str, Any]:
    """The relayer's spend today on `chain_id` against the daily cap, as `/health` and `relayer policy show`
    report it (`usage_of` is the journal's `spend_usage`)."""
    window = global_day(now_s)
    used = usage_of(chain_id, [window]).get(window.key(), Usage())
    cap = policy.daily_cap_wei
    return {
        "chainId": chain_id,
        "dayStart": window.start,
        "resetsAt": window.resets_at,
        "requests": used.requests,
        "spentWei": str(used.spent_wei),
        "dailyCapWei": str(cap),
        "capReached": bool(cap) and used.spent_wei >= cap,
    }
