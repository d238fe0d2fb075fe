"""Operator grants: what the relayer's signers may do for an account, judged from the vault's `operatorGrant`.

Pure: the grant (rights as bit flags, expiry in unix seconds, 0 = never) and a time in, answers out. The
relayer asks accounts for `RELAYER_RIGHTS` only (close, set take-profits, tighten stops: reduce-only, so a
leaked relayer key can close positions but never loosen or remove a stop), with an expiry.
"""

from __future__ import annotations

from dataclasses import dataclass

from relayer.constants import DEFAULT_OPERATOR_GRANT_S, RIGHT_NAMES

DAY_S = 86_400


@dataclass(frozen=True)
class OperatorGrant:
    """`operatorGrant(owner, operator)`: rights (bit flags `RIGHT_*`, 0 = none) until `expires_at` (inclusive,
    unix seconds; 0 = never)."""

    rights: int
    expires_at: int

    def expired(self, now_s: int) -> bool:
        """Whether the vault refuses it at a block of time `now_s` (`block.timestamp > expiresAt`)."""
        return self.expires_at != 0 and now_s > self.expires_at

    def allows(self, right: int, now_s: int) -> bool:
        """Whether an operator holding this grant may act with `right` at `now_s`.

        >>> OperatorGrant(7, 0).allows(1, 10**9), OperatorGrant(7, 100).allows(1, 101)
        (True, False)
        >>> OperatorGrant(6, 0).allows(1, 0)
        False
        """
        return self.rights & right != 0 and not self.expired(now_s)

    def lacking(self, right: int, now_s: int) -> str | None:
        """Why it does not allow `right` (`none`, `expired`, or `lacks <right>`), or None when it does.

        >>> OperatorGrant(0, 0).lacking(1, 0), OperatorGrant(1, 5).lacking(1, 6)
        ('none', 'expired')
        >>> OperatorGrant(2, 0).lacking(1, 0), OperatorGrant(3, 0).lacking(1, 0) is None
        ('lacks close', True)
        """
        if self.rights == 0:
            return "none"
        if self.expired(now_s):
            return "expired"
        if self.rights & right == 0:
            return f"lacks {right_names(right)}"
        return None


def right_names(rights: int) -> str:
    """Rights as text, e.g. `close, set_take_profit, tighten_stop` (`none` for 0).

    >>> right_names(7), right_names(8), right_names(0)
    ('close, set_take_profit, tighten_stop', 'loosen_or_cancel_stop', 'none')
    """
    names = [name for bit, name in sorted(RIGHT_NAMES.items()) if rights & bit]
    return ", ".join(names) if names else "none"


def grant_expiry(now_s: int, duration_s: int = DEFAULT_OPERATOR_GRANT_S) -> int:
    """The expiry to ask for: `duration_s` from `now_s`, rounded up to the end of that UTC day, so every
    answer given on one day carries the same calldata (REST and MCP agree, a retry is byte-identical).

    >>> grant_expiry(0, DAY_S), grant_expiry(1, DAY_S)
    (86400, 172800)
    """
    return -(-(now_s + duration_s) // DAY_S) * DAY_S
