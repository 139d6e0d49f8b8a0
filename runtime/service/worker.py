"""The worker thread: batches from the input queue → engines → publisher → acks, and the
periodic work (gauges, idle eviction, checkpoints, stats, the systemd watchdog).

It owns the engines' state: only this thread steps, evicts, resets, snapshots or swaps them.
A batch runs in arrival order, messages grouped per model, a reset between the messages before
and after it. One `Counts` per model group is merged into the service's Tally.

Batching adapts to load: the worker takes whatever is queued (up to max_batch) without waiting,
so a quiet gateway steps a message as soon as it arrives, and under load the batch is what
arrived while the previous one ran. Only after a full batch (max_batch: the worker is behind)
does it wait up to max_wait_ms to fill the next one. A batch's alerts are handed to the MQTT
client right after its step, and its deliveries acknowledged together after that.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, MutableMapping

import numpy as np

from edge_config.schema import RuntimeConfig
from runtime.engine.engine import Engine
from runtime.engine.types import Message, Outcome
from runtime.ingest.intake import Reset
from runtime.ingest.queue import InputQueue
from runtime.ops.counts import Counts, Tally
from runtime.ops.metrics import Metrics
from runtime.ops.sdnotify import WatchdogPinger
from runtime.service.acks import Acks
from runtime.service.publisher import Publisher
from runtime.service.router import QueueItem
from runtime.service.swap import Swap, SwapSlot, apply_swap
from runtime.state.schedule import Checkpointing

__all__ = ["OutcomeHook", "Worker"]

log = logging.getLogger("edgewatch.service")
outcome_log = logging.getLogger("edgewatch.outcomes")
"""One DEBUG line per delivery and what became of it (`edgewatch -v serve`, or this logger alone)."""

OutcomeHook = Callable[[str, Outcome], None]
"""Called on the worker thread with (model name, outcome) after the outcome's alerts were handed
to the MQTT client: for tests and embedding, never needed by the daemon."""

_IDLE_POLL_S = 0.1  # the loop's longest sleep: periodic work and the watchdog need it to turn
_GAUGES_EVERY_S = 1.0
_CATCH_UP_EVERY_S = 0.2  # unsent retained statuses, and all of them after a lost session
_CAP_LOG_EVERY_S = 60.0


class _Every:
    """Runs `action(now)` at most every `interval_s` (monotonic), checked from the loop."""

    def __init__(self, interval_s: float, action: Callable[[float], None], *, first: float) -> None:
        self._interval = interval_s
        self._action = action
        self._next = first

    def __call__(self, now: float) -> None:
        if now >= self._next:
            self._next = now + self._interval
            self._action(now)


class Worker:
    def __init__(
        self,
        runtime: RuntimeConfig,
        *,
        queue: InputQueue[QueueItem],
        engines: MutableMapping[str, Engine],
        publisher: Publisher,
        acks: Acks,
        tally: Tally,
        metrics: Metrics,
        checkpoints: Checkpointing | None,
        swaps: SwapSlot,
        on_swapped: Callable[[Swap], None],
        publish_stats: Callable[[], None],
        watchdog: WatchdogPinger,
        hook: OutcomeHook | None = None,
    ) -> None:
        self._rt = runtime
        self._queue = queue
        self.engines = engines
        self._publisher = publisher
        self._acks = acks
        self._tally = tally
        self._metrics = metrics
        self._checkpoints = checkpoints
        self._swaps = swaps
        self._on_swapped = on_swapped
        self._watchdog = watchdog
        self._hook = hook
        self.draining = threading.Event()
        """Set by the service at stop: the loop finishes what is queued, checkpoints, returns."""
        self._thread = threading.Thread(target=self._loop, name="edgewatch-worker", daemon=True)
        now = time.monotonic()
        self._periodic = [
            _Every(_GAUGES_EVERY_S, self._gauges, first=now),
            _Every(min(runtime.idle_ttl_s / 10, 60.0), self._evict, first=now),
            _Every(_CATCH_UP_EVERY_S, self._catch_up, first=now),
        ]
        if runtime.stale_after_s is not None:
            self._periodic.append(_Every(min(runtime.stale_after_s / 4, 30.0), self._stale, first=now))
        self._capped = 0  # messages of new streams refused at max_streams since the last log line
        self._cap_logged = -_CAP_LOG_EVERY_S
        if runtime.stats_interval_s:
            self._periodic.append(
                _Every(runtime.stats_interval_s, lambda _now: publish_stats(), first=now + runtime.stats_interval_s)
            )

    # --- thread --------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    @property
    def started(self) -> bool:
        return self._thread.ident is not None

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _loop(self) -> None:
        rt = self._rt
        batch: list[QueueItem] = []
        try:
            while True:
                wait = rt.max_wait_ms / 1000 if len(batch) >= rt.max_batch else 0.0
                batch = self._queue.get_batch(rt.max_batch, wait, _IDLE_POLL_S)
                if batch:
                    self.process(batch)
                now = time.monotonic()
                self._watchdog.maybe_ping()
                if self._swaps.pending:
                    self.apply_pending_swap()
                for task in self._periodic:
                    task(now)
                if self._checkpoints is not None and self._checkpoints.due(now):
                    self._checkpoint(now)
                if self.draining.is_set() and not batch and len(self._queue) == 0:
                    if self._checkpoints is not None:  # drained and acked: the last state of a clean stop
                        self._checkpoint(time.monotonic())
                    return
        except Exception:
            log.exception("the worker failed")  # the service notices the dead thread and exits 1

    # --- a batch -------------------------------------------------------------------------------
    def process(self, batch: list[QueueItem]) -> None:
        """Run the batch in arrival order: messages per model, resets between them."""
        self._tally.add("batches")
        self._metrics.batch_size.observe(len(batch))
        pending: dict[str, list[Message]] = {}
        for item in batch:
            if isinstance(item, Reset):
                self._step(pending)
                pending = {}
                self._reset(item)
            else:
                pending.setdefault(item.model, []).append(item)
        self._step(pending)

    def _step(self, pending: dict[str, list[Message]]) -> None:
        for model, messages in pending.items():
            counts = Counts()
            engine = self.engines[model]
            try:
                outcomes = engine.process(messages)
            except Exception:
                log.exception(
                    "model %r failed on a batch of %d messages; they are acknowledged and dropped", model, len(messages)
                )
                counts.add_reason("rejected", "engine-error", len(messages))
                outcomes = []
            counts.merge(engine.take_counts())
            if counts.rejected.get("max-streams"):
                self._at_stream_cap(counts.rejected["max-streams"])
            for outcome in outcomes:
                self._publisher.outcome(outcome, counts)
            self._publisher.scores(engine, outcomes, time.monotonic())
            if outcome_log.isEnabledFor(logging.DEBUG):  # written before the acks below
                for o in outcomes:
                    m = o.message
                    outcome_log.debug(
                        "outcome model=%s stream=%s seq=%s status=%s steps=%d",
                        model,
                        m.stream,
                        m.seq,
                        o.status,
                        o.steps,
                    )
            self._after_publish(model, outcomes)
            self._tally.merge(counts)
            self._acks.settle_messages(messages)  # only now: processed, and its alerts handed to paho

    def _after_publish(self, model: str, outcomes: list[Outcome]) -> None:
        received = [o.message.received for o in outcomes if o.status == "processed"]
        self._metrics.latency.observe_many(time.monotonic() - np.array(received, dtype=np.float64))
        if self._hook is not None:
            for outcome in outcomes:
                try:
                    self._hook(model, outcome)
                except Exception:
                    log.exception("the outcome hook failed")

    def _reset(self, reset: Reset) -> None:
        known = [name for name, engine in self.engines.items() if engine.reset(reset.stream)]
        counts = Counts()
        for engine in self.engines.values():
            counts.merge(engine.take_counts())
        if known:
            counts.resets += 1
            log.info("stream %s reset by a control message (model %s)", reset.stream, ", ".join(known))
        else:
            log.info("reset for unknown stream %s ignored", reset.stream)
        self._tally.merge(counts)
        self._acks.settle(reset.delivery)

    # --- periodic ------------------------------------------------------------------------------
    def _gauges(self, _now: float) -> None:
        self._metrics.queue_depth.set(len(self._queue))
        self._metrics.active_streams.set(sum(len(e.store) for e in self.engines.values()))
        census = [e.baselines.census() for e in self.engines.values()]
        self._metrics.learning_streams.set(sum(learning for learning, _ in census))
        self._metrics.out_of_range_streams.set(sum(out for _, out in census))

    def _at_stream_cap(self, refused: int) -> None:
        """One warning line at once, then at most one a minute, while new streams are refused."""
        self._capped += refused
        now = time.monotonic()
        if now - self._cap_logged < _CAP_LOG_EVERY_S:
            return
        log.warning(
            "stream cap reached: %d message(s) of new streams refused since the last line (runtime.max_streams %d "
            "held; a stream frees its slot after runtime.idle_ttl_s %.0f s of silence; counted as rejected "
            "max-streams)",
            self._capped,
            self._rt.max_streams,
            self._rt.idle_ttl_s,
        )
        self._capped, self._cap_logged = 0, now

    def _catch_up(self, _now: float) -> None:
        counts = Counts()
        if self._publisher.catch_up(counts):
            self._tally.merge(counts)

    def _evict(self, _now: float) -> None:
        counts = Counts()
        with_alert = 0
        for engine in self.engines.values():
            for eviction in engine.evict_idle():
                with_alert += eviction.cleared is not None
                self._publisher.eviction(eviction, counts, model=engine.name)
            counts.merge(engine.take_counts())
        if with_alert:
            log.info(
                "evicted %d idle stream(s), retained statuses removed; %d had an open alert: cleared (reason evicted)",
                counts.evicted,
                with_alert,
            )
        self._tally.merge(counts)

    def _stale(self, _now: float) -> None:
        counts = Counts()
        for engine in self.engines.values():
            for stream, status in engine.stale_statuses():
                self._publisher.status(stream, status, counts, model=engine.name)
            counts.merge(engine.take_counts())
        self._tally.merge(counts)

    def _checkpoint(self, now: float) -> None:
        assert self._checkpoints is not None
        if self._checkpoints.save(self.engines, now):
            self._metrics.snapshot_seconds.set(self._checkpoints.snapshot_seconds)

    # --- reload --------------------------------------------------------------------------------
    def apply_pending_swap(self) -> None:
        """Swap in the models of a pending reload (on the thread that owns the engines)."""
        swap = self._swaps.take()
        if swap is None:
            return
        counts = Counts()
        apply_swap(swap, self.engines, counts)
        self._tally.merge(counts)
        self._on_swapped(swap)
        if self._checkpoints is not None:  # a crash now must not restart from the old model's file
            self._checkpoints.save(self.engines, time.monotonic(), force=True)
        swap.done.set()
