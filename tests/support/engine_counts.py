"""Cumulative engine counts for tests: Engine.take_counts() drains, tests often want totals."""

from __future__ import annotations

import weakref

from runtime.engine.engine import Engine
from runtime.ops.counts import Counts

_TOTALS: weakref.WeakKeyDictionary[Engine, Counts] = weakref.WeakKeyDictionary()


def totals(engine: Engine) -> Counts:
    """Everything the engine counted since it was built (or since its first `totals` call drained it)."""
    counts = _TOTALS.setdefault(engine, Counts())
    counts.merge(engine.take_counts())
    return counts
