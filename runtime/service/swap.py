"""A SIGHUP reload handed from the main thread to the worker, which owns the engines' state.

The main thread prepares the new models (runtime.model.reload: verified and warmed up, slow);
the worker takes the swap between two batches, carries every stream's state into the new
engines (runtime.state.transfer) and swaps them in.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import MutableMapping

from runtime.engine.engine import Engine
from runtime.model.reload import ReloadPlan
from runtime.ops.counts import Counts
from runtime.state.transfer import transfer_state

__all__ = ["Swap", "SwapSlot"]

log = logging.getLogger("edgewatch.service")


class Swap:
    """One reload plan, and an event set once the worker applied it."""

    def __init__(self, plan: ReloadPlan) -> None:
        self.plan = plan
        self.done = threading.Event()


class SwapSlot:
    """At most one pending swap, handed from the main thread to the worker."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._swap: Swap | None = None

    def offer(self, plan: ReloadPlan) -> Swap:
        swap = Swap(plan)
        with self._lock:
            self._swap = swap
        return swap

    @property
    def pending(self) -> bool:
        return self._swap is not None

    def take(self) -> Swap | None:
        with self._lock:
            swap, self._swap = self._swap, None
        return swap


def apply_swap(swap: Swap, engines: MutableMapping[str, Engine], counts: Counts) -> None:
    """On the worker: carry every stream into the new engines and swap them in (counted)."""
    for name, loaded in swap.plan.models.items():
        old, new = engines[name], loaded.engine
        carried = transfer_state(old, new)
        engines[name] = new
        counts.restored += carried.streams
        if carried.model_state:
            how = f"state kept for {carried.streams} streams"
        else:
            counts.rewarming += carried.streams
            shapes_differ = old.artifact.manifest.state != new.artifact.manifest.state
            why = "state shapes differ" if shapes_differ else "other weights"
            how = f"{why}: {carried.streams} streams keep their seq and alerts and warm up again"
        log.info(
            "reload: model %r now %s (sha256 %s…, was %s…): %s",
            name,
            new.artifact.manifest.name,
            new.artifact.sha256[:12],
            old.artifact.sha256[:12],
            how,
        )
