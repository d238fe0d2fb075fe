"""The webhook outbox: subscriptions, their fan-out from the notices, deliveries claimed, sent and finished.

`WebhookStore` runs on the database port (`relayer.stores.sql.Database`), SQLite and PostgreSQL alike, bound
to one chain like the journal (a subscription belongs to the chain it was made on). The rules
(`relayer.domain.webhooks`) stay in the core; this module only keeps them durable:

- `fan_out`: for each subscription behind the latest settled notice, in one transaction with its row locked
  (PostgreSQL: `FOR UPDATE SKIP LOCKED`, so instances split the subscriptions; SQLite: one writer), a
  `deliveries` row per matching notice after its cursor (`UNIQUE (webhook_id, notice_id)` and `ON CONFLICT
  DO NOTHING`: running it twice adds nothing), and the cursor moved past what was read.
- `claim_due` / `finish`: a due delivery is claimed for `lease_s` (`claimed_until`, the database's clock;
  PostgreSQL: `FOR UPDATE SKIP LOCKED`), its attempt counted; `finish` compare-and-sets on that attempt, so
  an instance whose claim expired (it hung or died, and another retried) changes nothing.
- `prune`: finished deliveries and notices older than the retention (a notice with a pending delivery stays).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from relayer.domain.notices import Cursor, NoticeType, StoredNotice, notice_id
from relayer.domain.webhooks import (
    Delivery,
    DeliveryState,
    Due,
    Webhook,
    types_of_text,
    types_text,
)
from relayer.stores import notice_rows
from relayer.stores.sql import Database, Row, Session, marks

FAN_OUT_BATCH = 500
"""Notices fanned out to one subscription per transaction (the next round takes the rest)."""

CLAIM_CANDIDATES_PER_SLOT = 4
"""Due deliveries read per free slot when claiming, so that a subscription at its in-flight cap does not
crowd out the others in one read."""


@dataclass(frozen=True)
class Outcome:
    """What one attempt of a claimed delivery came to (`WebhookStore.finish_many`)."""

    due: Due
    state: DeliveryState
    status: int | None
    error: str | None
    retry_in_s: float = 0.0
    receiver_back: bool = False


class WebhookStore:
    """Subscriptions and deliveries of one chain on a `Database`; safe to share between threads."""

    def __init__(self, database: Database, chain_id: int) -> None:
        self.db = database
        self.chain_id = chain_id
        self._now = database.dialect.now_s
        self._skip_locked = database.dialect.skip_locked
        self._database_id: str | None = None

    @property
    def database_id(self) -> str | None:
        """The database's random id (schema 8's `meta` row), read once; part of every `webhook-id`."""
        if self._database_id is None:
            with self.db.session() as session:
                self._database_id = notice_rows.database_id(session)
        return self._database_id

    # --- subscriptions ------------------------------------------------------------------------------------

    def create(
        self,
        *,
        webhook_id: str,
        account: str | None,
        url: str,
        secret: str,
        types: frozenset[NoticeType] | None,
        max_per_account: int | None = None,
    ) -> Webhook | None:
        """Add a subscription whose cursor starts at the latest settled notice: it hears only what happens
        from now on. None when `account` already holds `max_per_account` (global ones are not counted).

        The count is read in the inserting transaction (SQLite: one writer; PostgreSQL: two creates racing
        for the last place may both pass it, by one).
        """
        who = None if account is None else account.lower()
        with self.db.transaction() as session:
            if who is not None and max_per_account is not None:
                row = session.row(
                    "SELECT COUNT(*) AS n FROM webhooks WHERE chain_id = ? AND account = ?",
                    (self.chain_id, who),
                )
                if row is not None and int(row["n"]) >= max_per_account:
                    return None
            cursor = self._latest(session)
            session.execute(
                "INSERT INTO webhooks (id, chain_id, account, url, secret, types, cursor_txn, cursor_id,"  # noqa: S608
                f" created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, {self._now})",
                (webhook_id, self.chain_id, who, url, secret, types_text(types), cursor.txn, cursor.id),
            )
            row = session.row("SELECT * FROM webhooks WHERE id = ?", (webhook_id,))
        assert row is not None
        return _webhook(row)

    def get(self, webhook_id: str) -> Webhook | None:
        row = self.db.row("SELECT * FROM webhooks WHERE id = ? AND chain_id = ?", (webhook_id, self.chain_id))
        return None if row is None else _webhook(row)

    def subscriptions(self, *, account: str | None = None) -> list[Webhook]:
        """The chain's subscriptions, oldest first: `account`'s only, or (None) every one, global included."""
        if account is None:
            rows = self.db.rows(
                "SELECT * FROM webhooks WHERE chain_id = ? ORDER BY created_at, id", (self.chain_id,)
            )
        else:
            rows = self.db.rows(
                "SELECT * FROM webhooks WHERE chain_id = ? AND account = ? ORDER BY created_at, id",
                (self.chain_id, account.lower()),
            )
        return [_webhook(row) for row in rows]

    def delete(self, webhook_id: str) -> bool:
        """Remove a subscription and its deliveries (one in flight is then finished into nothing)."""
        with self.db.transaction() as session:
            gone = session.execute(
                "DELETE FROM webhooks WHERE id = ? AND chain_id = ?", (webhook_id, self.chain_id)
            )
            if gone:
                session.execute("DELETE FROM deliveries WHERE webhook_id = ?", (webhook_id,))
        return gone == 1

    # --- fan-out ------------------------------------------------------------------------------------------

    def fan_out(self, batch: int = FAN_OUT_BATCH) -> int:
        """Queue a delivery of every notice each subscription has not been given yet; how many were queued.

        Two reads when nothing happened (the latest settled notice, the subscriptions behind it).
        """
        with self.db.session() as session:
            horizon = self._latest(session)
            behind = session.rows(
                "SELECT id FROM webhooks WHERE chain_id = ? AND (cursor_txn < ? OR (cursor_txn = ? AND"
                " cursor_id < ?)) ORDER BY id",
                (self.chain_id, horizon.txn, horizon.txn, horizon.id),
            )
        queued = 0
        for row in behind:
            queued += self._fan_out_one(str(row["id"]), horizon, batch)
        return queued

    def _fan_out_one(self, webhook_id: str, horizon: Cursor, batch: int) -> int:
        with self.db.transaction() as session:
            row = session.row(f"SELECT * FROM webhooks WHERE id = ?{self._skip_locked}", (webhook_id,))  # noqa: S608
            if row is None:
                return 0  # removed, or another instance is fanning it out
            hook = _webhook(row)
            if hook.cursor >= horizon:
                return 0
            where, args = notice_rows.after(self.db.dialect, hook.cursor, horizon)
            where += " AND chain_id = ?"
            args.append(self.chain_id)
            if hook.account is not None:
                where += " AND account = ?"
                args.append(hook.account)
            if hook.types is not None:
                where += f" AND type IN ({marks(len(hook.types))})"
                args.extend(sorted(t.value for t in hook.types))
            notices = session.rows(
                f"SELECT txn, id FROM notices WHERE {where} ORDER BY txn, id LIMIT ?",  # noqa: S608
                [*args, batch],
            )
            if notices:
                values = ", ".join(
                    [f"(?, ?, 'pending', 0, {self._now}, {self._now}, {self._now})"] * len(notices)
                )
                session.execute(
                    "INSERT INTO deliveries (webhook_id, notice_id, state, attempts, next_at, created_at,"  # noqa: S608
                    f" updated_at) VALUES {values} ON CONFLICT (webhook_id, notice_id) DO NOTHING",
                    [value for notice in notices for value in (webhook_id, int(notice["id"]))],
                )
            # A full batch may have left matching notices before the horizon: continue after the last read.
            last = notices[-1] if len(notices) == batch else None
            cursor = horizon if last is None else Cursor(int(last["txn"]), int(last["id"]))
            session.execute(
                "UPDATE webhooks SET cursor_txn = ?, cursor_id = ? WHERE id = ?",
                (cursor.txn, cursor.id, webhook_id),
            )
            return len(notices)

    def _latest(self, session: Session) -> Cursor:
        """The latest notice of the chain that no running transaction can still precede."""
        return notice_rows.latest(session, self.db.dialect, self.chain_id)

    # --- deliveries ---------------------------------------------------------------------------------------

    def claim_due(
        self,
        *,
        slots: int,
        busy: Mapping[str, int],
        per_webhook: int,
        lease_s: float,
        busy_accounts: Mapping[str | None, int] | None = None,
        per_account: int | None = None,
    ) -> list[Due]:
        """Claim up to `slots` due deliveries for `lease_s`, at most `per_webhook` in flight per subscription
        counting `busy` (this instance's in-flight deliveries per subscription) and at most `per_account` per
        account counting `busy_accounts` (None: the global subscriptions, together), and count their attempt.

        The due deliveries are read first without a write transaction: an idle round (nothing due) takes no
        lock (SQLite: no `BEGIN IMMEDIATE`); only when some are found are they read again and claimed in one.
        """
        if slots <= 0:
            return []
        accounts = dict(busy_accounts or {})
        cap = per_account if per_account is not None else slots
        skip, skip_args = self._skips(busy, per_webhook, accounts, cap)
        now = self._now
        due_sql = (
            "SELECT id, webhook_id FROM deliveries WHERE state = 'pending'"  # noqa: S608
            f" AND next_at <= {now} AND (claimed_until IS NULL OR claimed_until < {now})"
            f" AND webhook_id IN (SELECT id FROM webhooks WHERE chain_id = ?){skip}"
            " ORDER BY next_at, id LIMIT ?"
        )
        due_args = [self.chain_id, *skip_args, slots * CLAIM_CANDIDATES_PER_SLOT]
        with self.db.session() as session:
            if not session.rows(due_sql, due_args):
                return []
        with self.db.transaction() as session:
            candidates = session.rows(f"{due_sql}{self._skip_locked}", due_args)
            owners: dict[str, str | None] = {}
            if candidates:
                hooks = sorted({str(row["webhook_id"]) for row in candidates})
                owners = {
                    str(row["id"]): row["account"]
                    for row in session.rows(
                        f"SELECT id, account FROM webhooks WHERE id IN ({marks(len(hooks))})",  # noqa: S608
                        hooks,
                    )
                }
            taken: list[int] = []
            counts = dict(busy)
            for row in candidates:
                webhook = str(row["webhook_id"])
                if webhook not in owners:
                    continue  # removed meanwhile
                owner = owners[webhook]
                if counts.get(webhook, 0) >= per_webhook or accounts.get(owner, 0) >= cap:
                    continue
                counts[webhook] = counts.get(webhook, 0) + 1
                accounts[owner] = accounts.get(owner, 0) + 1
                taken.append(int(row["id"]))
                if len(taken) == slots:
                    break
            if not taken:
                return []
            session.execute(
                f"UPDATE deliveries SET claimed_until = {now} + ?, attempts = attempts + 1,"  # noqa: S608
                f" updated_at = {now} WHERE id IN ({marks(len(taken))})",
                [lease_s, *taken],
            )
            rows = session.rows(
                "SELECT d.id AS delivery_id, d.webhook_id, d.attempts, w.url, w.secret,"  # noqa: S608
                " w.account AS webhook_account, n.id AS notice_id,"
                " n.txn, n.chain_id, n.type, n.account, n.record_id, n.payload, n.created_at"
                " FROM deliveries d JOIN webhooks w ON w.id = d.webhook_id"
                " LEFT JOIN notices n ON n.id = d.notice_id"
                f" WHERE d.id IN ({marks(len(taken))}) ORDER BY d.id",
                taken,
            )
            lost = [int(row["delivery_id"]) for row in rows if row["notice_id"] is None]
            if lost:  # pruned under it (cannot happen while pending, but never resend nothing forever)
                session.execute(
                    "UPDATE deliveries SET state = 'failed', last_error = 'notice pruned',"  # noqa: S608
                    f" claimed_until = NULL WHERE id IN ({marks(len(lost))})",
                    lost,
                )
        return [_due(row, self.database_id) for row in rows if row["notice_id"] is not None]

    def _skips(
        self, busy: Mapping[str, int], per_webhook: int, accounts: Mapping[str | None, int], cap: int
    ) -> tuple[str, list[Any]]:
        """The conditions leaving out subscriptions and accounts at their in-flight cap (so that their due
        deliveries do not crowd the others out of one read)."""
        skip = ""
        args: list[Any] = []
        full = sorted(webhook for webhook, count in busy.items() if count >= per_webhook)
        if full:
            skip += f" AND webhook_id NOT IN ({marks(len(full))})"
            args.extend(full)
        named = sorted(
            str(account) for account, count in accounts.items() if account is not None and count >= cap
        )
        if named:
            skip += (
                " AND webhook_id NOT IN (SELECT id FROM webhooks WHERE chain_id = ? AND account IN"  # noqa: S608
                f" ({marks(len(named))}))"
            )
            args.extend([self.chain_id, *named])
        if accounts.get(None, 0) >= cap:
            skip += " AND webhook_id NOT IN (SELECT id FROM webhooks WHERE chain_id = ? AND account IS NULL)"
            args.append(self.chain_id)
        return skip, args

    def finish(
        self,
        due: Due,
        *,
        state: DeliveryState,
        status: int | None,
        error: str | None,
        retry_in_s: float = 0.0,
        receiver_back: bool = False,
    ) -> bool:
        """Record an attempt's outcome: `delivered`, `failed` for good, or `pending` again in `retry_in_s`.
        `receiver_back` (a retry that delivered): the subscription's other deliveries waiting out a backoff
        are made due now, so a receiver that was down drains at once instead of at each one's next retry.
        False when the claim was lost meanwhile (another instance took the delivery over, or it was
        removed)."""
        return self.finish_many([Outcome(due, state, status, error, retry_in_s, receiver_back)])[0]

    def finish_many(self, outcomes: Sequence[Outcome]) -> list[bool]:
        """`finish` for several attempts in one transaction (the dispatcher records a round's outcomes
        together: one commit, not one per delivery); for each, whether its claim still held."""
        now = self._now
        kept: list[bool] = []
        with self.db.transaction() as session:
            for outcome in outcomes:
                changed = session.execute(
                    f"UPDATE deliveries SET state = ?, last_status = ?, last_error = ?, next_at = {now} + ?,"  # noqa: S608
                    f" claimed_until = NULL, updated_at = {now}"
                    " WHERE id = ? AND state = 'pending' AND attempts = ?",
                    (
                        outcome.state.value,
                        outcome.status,
                        None if outcome.error is None else outcome.error[:500],
                        outcome.retry_in_s,
                        outcome.due.delivery_id,
                        outcome.due.attempt,
                    ),
                )
                if changed == 1 and outcome.receiver_back:
                    session.execute(
                        f"UPDATE deliveries SET next_at = {now} WHERE webhook_id = ? AND state = 'pending'"  # noqa: S608
                        f" AND next_at > {now}",
                        (outcome.due.webhook_id,),
                    )
                kept.append(changed == 1)
        return kept

    def deliveries(self, webhook_id: str, *, limit: int = 50) -> list[Delivery]:
        """A subscription's deliveries, newest first."""
        rows = self.db.rows(
            "SELECT * FROM deliveries WHERE webhook_id = ? ORDER BY id DESC LIMIT ?", (webhook_id, limit)
        )
        return [_delivery(row, self.database_id) for row in rows]

    def counts(self) -> dict[str, int]:
        """Deliveries of the chain's subscriptions per state (for reports and the bench)."""
        rows = self.db.rows(
            "SELECT state, COUNT(*) AS n FROM deliveries WHERE webhook_id IN"
            " (SELECT id FROM webhooks WHERE chain_id = ?) GROUP BY state",
            (self.chain_id,),
        )
        return {str(row["state"]): int(row["n"]) for row in rows}

    def prune(self, retention_s: float) -> tuple[int, int]:
        """Delete finished deliveries and notices older than `retention_s` (a notice a pending delivery still
        needs stays); (deliveries, notices) deleted."""
        now = self._now
        with self.db.transaction() as session:
            deliveries = session.execute(
                f"DELETE FROM deliveries WHERE state IN ('delivered', 'failed') AND updated_at < {now} - ?"  # noqa: S608
                " AND webhook_id IN (SELECT id FROM webhooks WHERE chain_id = ?)",
                (retention_s, self.chain_id),
            )
            notices = session.execute(
                f"DELETE FROM notices WHERE chain_id = ? AND created_at < {now} - ? AND NOT EXISTS"  # noqa: S608
                " (SELECT 1 FROM deliveries d WHERE d.notice_id = notices.id AND d.state = 'pending')",
                (self.chain_id, retention_s),
            )
        return deliveries, notices


def envelope_body(notice: StoredNotice) -> bytes:
    """A notice's delivery body: its envelope as compact JSON (the exact bytes signed)."""
    return json.dumps(notice.envelope(), separators=(",", ":")).encode()


def _webhook(row: Row) -> Webhook:
    return Webhook(
        id=str(row["id"]),
        chain_id=int(row["chain_id"]),
        account=row["account"],
        url=str(row["url"]),
        types=types_of_text(row["types"]),
        cursor=Cursor(int(row["cursor_txn"]), int(row["cursor_id"])),
        created_at=row["created_at"],
        secret=str(row["secret"]),
    )


def _delivery(row: Row, database_id: str | None) -> Delivery:
    return Delivery(
        id=int(row["id"]),
        webhook_id=str(row["webhook_id"]),
        notice_id=int(row["notice_id"]),
        msg_id=notice_id(database_id, int(row["notice_id"])),
        state=DeliveryState(row["state"]),
        attempts=int(row["attempts"]),
        next_at=row["next_at"],
        last_status=None if row["last_status"] is None else int(row["last_status"]),
        last_error=row["last_error"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _due(row: Row, database_id: str | None) -> Due:
    notice = notice_rows.stored_notice(row, database_id, id_column="notice_id")
    return Due(
        delivery_id=int(row["delivery_id"]),
        webhook_id=str(row["webhook_id"]),
        account=row["webhook_account"],
        url=str(row["url"]),
        msg_id=notice.id,
        body=envelope_body(notice),
        attempt=int(row["attempts"]),
        secret=str(row["secret"]),
    )
