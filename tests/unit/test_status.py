"""The relay record's status sets: one home (`relayer.domain.status`), and the SQL that must agree with it."""

from __future__ import annotations

import re

import pytest

from relayer.domain.status import (
    ALLOWED,
    FINAL,
    PENDING,
    SETTLED,
    SUCCEEDED,
    UNSUCCESSFUL,
    TxStatus,
)
from relayer.stores.sqlite import MIGRATIONS

EVERY = frozenset(TxStatus)


def test_the_sets_partition_the_statuses_as_documented() -> None:
    assert {TxStatus.MINED, TxStatus.CONFIRMED} == SUCCEEDED
    assert {TxStatus.FAILED, TxStatus.REPLACED, TxStatus.EXPIRED} == UNSUCCESSFUL
    assert not SUCCEEDED & UNSUCCESSFUL
    assert SETTLED == SUCCEEDED | UNSUCCESSFUL == EVERY - {TxStatus.QUEUED, TxStatus.SUBMITTED}
    assert UNSUCCESSFUL | {TxStatus.CONFIRMED} == FINAL
    assert PENDING == EVERY - FINAL
    assert FINAL <= SETTLED


def test_final_means_no_way_out_of_it() -> None:
    assert {status for status in TxStatus if not ALLOWED[status]} == FINAL


@pytest.mark.parametrize("status", list(TxStatus), ids=str)
def test_each_property_is_its_set(status: TxStatus) -> None:
    assert status.is_final == (status in FINAL)
    assert status.is_pending == (status in PENDING)
    assert status.is_succeeded == (status in SUCCEEDED)
    assert status.is_unsuccessful == (status in UNSUCCESSFUL)
    assert status.is_settled == (status in SETTLED)


def test_the_migrations_live_request_literal_is_the_unsuccessful_set() -> None:
    """Migrations are history and keep their SQL as written: `records_live_request` treats every status but
    `UNSUCCESSFUL` as live. If the enum's set ever changes, this fails, and a new migration must follow."""
    statements = [statement for _, steps in MIGRATIONS for statement in steps]
    literals = [
        re.findall(r"'([a-z]+)'", match)
        for statement in statements
        for match in re.findall(r"status NOT IN \(([^)]*)\)", statement)
    ]
    assert len(literals) == 2  # migration 1, and migration 3 that rebuilt the index per chain
    for values in literals:
        assert frozenset(TxStatus(value) for value in values) == UNSUCCESSFUL
