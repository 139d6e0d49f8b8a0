"""The daemon's lifecycle: build the parts, start them, serve until a signal, stop cleanly.

    Service(config)  models loaded, verified and warmed up (runtime.model.loading); state restored
                     from checkpoints; intake, queue, bus, router, publisher, worker wired
    start()          metrics endpoint, worker, bus (connects in the background); READY=1
    run()            start(), then wait for SIGTERM/SIGINT (stop) or SIGHUP (reload)
    reload()         re-read the config file, verify the changed models off the worker, hand them over
    stop()           stop taking input (a persistent session keeps its subscriptions), drain the
                     queue (every delivery processed and acked), last checkpoint, `stopped`, disconnect

The bus and the engines can be injected (a fake bus and engines over a fake backend for unit
tests of routing, acks and publishing; runtime.mqtt.fake). docs/RUNTIME.md has the topics, the
ack rules and what each counter counts.
"""

from __future__ import annotations

import gc
import json
import logging
import signal
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import FrameType

from edge_config.schema import GatewayConfig
from runtime.engine.engine import Engine
from runtime.engine.streams import no_hugepage_slabs
from runtime.ingest.intake import Intake, IntakeBounds
from runtime.ingest.payload import FeatureLayout, PayloadLimits
from runtime.ingest.queue import InputQueue
from runtime.model.loading import load_model
from runtime.model.reload import ReloadPlan, prepare_reload
from runtime.mqtt.bus import Bus
from runtime.mqtt.delivery import Delivery
from runtime.mqtt.protocol import BusFactory, MessageBus, OutboxLimits
from runtime.mqtt.topics import OutputTopics, StreamIdResolver
from runtime.ops.counts import Counts, Tally
from runtime.ops.metrics import HealthServer, Metrics
from runtime.ops.sdnotify import Notifier, WatchdogPinger
from runtime.service.acks import Acks
from runtime.service.publisher import Publisher
from runtime.service.router import QueueItem, Router
from runtime.service.scores import ScoreStream
from runtime.service.swap import Swap, SwapSlot
from runtime.service.worker import OutcomeHook, Worker
from runtime.state.schedule import Checkpointing

__all__ = ["OutcomeHook", "Service"]

log = logging.getLogger("edgewatch.service")

_UNSUBSCRIBE_GRACE_S = 1.0  # deliveries already on the wire when we unsubscribe
_SWAP_TIMEOUT_S = 30.0  # a reload waits this long for the worker to swap the models in
_LAST_CHECKPOINT_TIMEOUT_S = 60.0  # a clean stop waits this long for the last checkpoint write
_RECEIVE_WINDOW = 1024
"""MQTT 5 ReceiveMaximum: QoS 1 deliveries unacknowledged with us at once. The broker's PUBACKs
for our alerts queue behind what it has in flight to us, so a window of queue_max (seconds of
backlog under a flood) let broker.ack_timeout_s break healthy connections (measured: 2 of 2
floods on a loaded 2-core machine, then redeliveries); 1,024 is well under a second of work."""


class Service:
    def __init__(
        self,
        config: GatewayConfig,
        *,
        outcome_hook: OutcomeHook | None = None,
        config_path: Path | None = None,
        bus_factory: BusFactory = Bus,
        engines: Mapping[str, Engine] | None = None,
    ) -> None:
        """config_path: the file `config` came from; SIGHUP (or `reload()`) reads it again.
        engines: already built engines by model name (tests); None loads every configured model."""
        rt = config.runtime
        no_hugepage_slabs()  # before any state slab: untouched slots stay out of RSS
        self.config = config
        self.config_path = config_path
        self.tally = Tally()
        self.metrics = Metrics()
        self.engines: dict[str, Engine] = dict(engines) if engines is not None else self._load_models(config)
        self.checkpoints = Checkpointing(rt.checkpoint_path, rt.checkpoint_interval_s) if rt.checkpoint_path else None
        self._restore_state()
        self.topics = OutputTopics(rt.topic_prefix)
        resolver = StreamIdResolver([s for s in config.streams if not s.shadow])
        layouts = {
            s.name: (s.model, FeatureLayout.from_manifest(self.engines[s.model].artifact.manifest, s.features))
            for s in config.streams
        }
        intake = Intake(
            resolver,
            layouts,
            PayloadLimits.from_runtime(rt),
            topics=self.topics,
            tally=self.tally,
            bounds=IntakeBounds.from_runtime(rt),
            shadows=[s for s in config.streams if s.shadow],
        )
        self.queue: InputQueue[QueueItem] = InputQueue(rt.queue_max, rt.drop_policy)
        qos = config.broker.input_qos
        self.bus: MessageBus = bus_factory(
            config.broker,
            prefix=rt.topic_prefix,
            subscriptions=[(f, qos) for f in resolver.filters] + [(self.topics.control_filter, 1)],
            on_message=self._on_delivery,
            limits=OutboxLimits(rt.outgoing_max, rt.outgoing_max_bytes),
            receive_maximum=min(rt.queue_max, _RECEIVE_WINDOW),
            # MQTT 5: see a control message's retain flag as published, so that a retained command
            # is refused live too, not only when its retained copy comes back at a resubscribe.
            retain_as_published=(self.topics.control_filter,),
        )
        acks = Acks(self.bus)
        self._router = Router(intake, self.queue, acks, self.tally, drop_policy=rt.drop_policy)
        scores = None if rt.score_stream is None else ScoreStream(rt.score_stream)
        self.publisher = Publisher(
            self.bus,
            self.topics,
            qos=config.broker.alert_qos,
            scores=scores,
            shadow=frozenset(s.model for s in config.streams if s.shadow),
        )
        self._swaps = SwapSlot()
        self._notifier = Notifier()
        self.worker = Worker(
            rt,
            queue=self.queue,
            engines=self.engines,
            publisher=self.publisher,
            acks=acks,
            tally=self.tally,
            metrics=self.metrics,
            checkpoints=self.checkpoints,
            swaps=self._swaps,
            on_swapped=self._swapped,
            publish_stats=self._publish_stats,
            watchdog=WatchdogPinger.from_env(self._notifier),
            hook=outcome_hook,
        )
        self.metrics.watch(
            self.tally.snapshot,
            self.bus.snapshot,
            lambda: (self.bus.outbox_messages, self.bus.outbox_bytes),
            self.checkpoints.stats if self.checkpoints else None,
        )
        self._http = HealthServer(rt.metrics_address, self.metrics, self.health) if rt.metrics_address else None
        self._started = time.monotonic()
        self._stopped = False

    # --- setup ---------------------------------------------------------------------------------
    def _load_models(self, config: GatewayConfig) -> dict[str, Engine]:
        engines = {}
        for name in config.models:
            loaded = load_model(name, config)
            self.metrics.providers(name, loaded.report.nodes_by_provider)
            engines[name] = loaded.engine
        return engines

    def _restore_state(self) -> None:
        """Each model's newest usable checkpoint, before the first step (load_checkpoint logs why not)."""
        if self.checkpoints is None:
            return
        counts = Counts()
        for name, engine in self.engines.items():
            restored = self.checkpoints.restore(name, engine)
            if restored is not None:
                counts.restored += restored.streams
                if not restored.model_state:
                    counts.rewarming += restored.streams
            counts.merge(engine.take_counts())
        self.tally.merge(counts)

    def _on_delivery(self, delivery: Delivery) -> None:
        self._router(delivery)

    # --- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        # What start built (modules, models, config: ~10^5 objects the collector tracks) moves
        # out of the collector's generations: a full collection, triggered by the hot path's
        # allocations, no longer walks it (bench, 1,000 streams: ~8 µs per step went to such
        # collections). The young generations are collected first (cheap); a full collection
        # here would cost ~0.1 s, for the little cyclic garbage that old objects leave. Undone
        # at stop.
        gc.collect(1)
        gc.freeze()
        if self._http is not None:
            self._http.start()
        self.worker.start()
        self.bus.start()
        self.metrics.ready.set(1)
        # READY after warm-up (create_session ran one step per model); the broker may still be
        # away, which /healthz reports, and the bus keeps retrying.
        self._notifier.ready(f"serving {len(self.engines)} model(s)")

    def health(self) -> tuple[bool, str]:
        """(ready, why): what /healthz answers. Not ready while the bus has a problem (not
        connected, an unacknowledged publication past broker.ack_timeout_s, our session taken
        over); ready but degraded while checkpoint writes fail."""
        if self._stopped or self.worker.draining.is_set():
            return False, "stopping"
        if not self.worker.is_alive():
            return False, "the worker thread is not running"
        problem = self.bus.problem
        if problem is not None:
            return False, problem
        failing = self.checkpoints.stats().failing if self.checkpoints is not None else None
        if failing is not None:
            return True, f"ready, degraded: checkpoint writes failing: {failing}"
        return True, "ready"

    def stop(self, timeout: float = 30.0) -> None:
        """Stop taking input, finish what is queued, publish `stopped`, disconnect."""
        if self._stopped:
            return
        self._stopped = True
        gc.unfreeze()
        self._notifier.stopping("draining")
        self.metrics.ready.set(0)
        unsubscribed = self.bus.stop_input()
        time.sleep(_UNSUBSCRIBE_GRACE_S if unsubscribed and self.bus.connected else 0)
        self.worker.draining.set()
        self.queue.close()
        if self.worker.started:
            self.worker.join(timeout)
        if self.worker.is_alive():
            log.error("the worker did not drain the queue within %.0fs (%d left)", timeout, len(self.queue))
        if self.checkpoints is not None:
            self.checkpoints.close(_LAST_CHECKPOINT_TIMEOUT_S)  # the worker queued the last one as it left
        self.bus.stop(availability="stopped")
        if self._http is not None:
            self._http.stop()
        log.info("stopped: %s", _stats_line(self.tally.snapshot()))

    def run(self) -> int:
        """Serve in the foreground until SIGTERM/SIGINT (SIGHUP reloads); 0 after a clean stop,
        1 if the worker died."""
        wake = threading.Event()
        stop_requested, reload_requested = threading.Event(), threading.Event()
        stop_signal: list[str] = []

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            # Only flags here: the reload itself takes seconds and logs, which a handler must not do.
            if signum == signal.SIGHUP:
                reload_requested.set()
            else:
                stop_signal.append(signal.Signals(signum).name)
                stop_requested.set()
            wake.set()

        handled = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        previous = {s: signal.signal(s, on_signal) for s in handled}
        code = 0
        try:
            self.start()
            while not stop_requested.is_set():
                wake.wait(0.5)
                wake.clear()
                if not self.worker.is_alive():
                    log.error("the worker thread died; stopping")
                    code = 1
                    break
                if reload_requested.is_set() and not stop_requested.is_set():
                    reload_requested.clear()
                    log.info("received SIGHUP: reloading")
                    self.reload()
            if stop_signal:
                log.info("received %s: stopping", stop_signal[0])
        finally:
            self.stop()
            for s, handler in previous.items():
                signal.signal(s, handler)
        return code

    # --- reload (main thread; the worker swaps) --------------------------------------------------
    def reload(self) -> bool:
        """Read the config file again and swap in every model that changed, each verified and
        warmed up first; on any error the running models serve on (one log line). True if applied."""
        if self.config_path is None:
            log.error("reload: this service was not started from a config file; nothing to reload")
            return False
        self._notifier.reloading("verifying the new config and models")
        try:
            plan = prepare_reload(self.config_path, self.config, self.engines)
        except Exception as exc:  # noqa: BLE001 — whatever fails, the running models serve on
            self.tally.add_reason("reloads", "failed")
            log.error("reload failed, still serving the previous config and models: %s", _one_line(exc))
            self._notifier.ready("reload failed; serving the previous config")
            return False
        if plan.not_applied:
            log.warning(
                "reload: changes to %s need a restart; running with the previous values", ", ".join(plan.not_applied)
            )
        applied = self._hand_to_worker(plan)
        self.tally.add_reason("reloads", "ok" if applied else "failed")
        self._notifier.ready(f"serving {len(self.engines)} model(s)")
        return applied

    def _hand_to_worker(self, plan: ReloadPlan) -> bool:
        if not plan.models:
            self.config = plan.config
            log.info("reload: no model changed")
            return True
        swap = self._swaps.offer(plan)
        if not self.worker.started:  # not started (embedding, tests): nobody else owns the state
            self.worker.apply_pending_swap()
        elif not self.worker.is_alive():
            return False
        elif not swap.done.wait(_SWAP_TIMEOUT_S):
            log.error("reload: the worker did not take the new models within %.0f s", _SWAP_TIMEOUT_S)
            return False
        return swap.done.is_set()

    def _swapped(self, swap: Swap) -> None:
        """On the worker, right after a swap: the service's view of the config and providers."""
        for name, loaded in swap.plan.models.items():
            self.metrics.providers(name, loaded.report.nodes_by_provider)
        self.config = swap.plan.config

    # --- stats -----------------------------------------------------------------------------------
    def stats(self) -> dict[str, object]:
        """The `<prefix>/stats` message: counts since start, connection, queue and checkpoints."""
        c, b = self.tally.snapshot(), self.bus.snapshot()
        stats: dict[str, object] = {
            "ts": round(time.time(), 3),
            "uptime_s": round(time.monotonic() - self._started, 1),
            "connected": self.bus.connected,
            "queue_depth": len(self.queue),
            "active_streams": sum(len(e.store) for e in self.engines.values()),
            **c.as_json_dict(),
            "outgoing_dropped": b.dropped_outgoing,
            "outbox_messages": self.bus.outbox_messages,
            "ack_timeouts": b.ack_timeouts,
            "session_takeovers": b.takeovers,
        }
        if self.checkpoints is not None:
            k = self.checkpoints.stats()
            stats["checkpoints"] = {
                "written": k.written,
                "failed": k.failed,
                "bytes": k.bytes,
                "last_bytes": k.last_bytes,
                "last_seconds": round(k.last_seconds, 4),
                "failing": k.failing,
            }
        return stats

    def _publish_stats(self) -> None:
        self.publisher.stats(json.dumps(self.stats(), separators=(",", ":")).encode())
        log.info("%s", _stats_line(self.tally.snapshot()))


def _stats_line(s: Counts) -> str:
    return (
        f"received {s.received}, processed {s.processed} ({s.steps} steps), "
        f"rejected {sum(s.rejected.values())}, skipped {sum(s.skipped.values())}, "
        f"dropped {sum(s.dropped.values())}, alerts {sum(s.alerts.values())}"
    )


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 500 else text[:497] + "..."
