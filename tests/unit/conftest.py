"""Hypothesis without its per-example deadline: the house rule is no timed assertions, and ABI encoding on a
busy 2-core CI box can exceed 200 ms without anything being wrong."""

from __future__ import annotations

from hypothesis import settings

settings.register_profile("relayer-unit", deadline=None)
settings.load_profile("relayer-unit")
