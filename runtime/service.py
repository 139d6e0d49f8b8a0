"""The daemon: MQTT deliveries → bounded queue → one worker → Engine per model → alerts → acks.

    network thread (paho)          worker thread
    Intake.accept: route, decode   get_batch(max_batch, max_wait_ms)
    → InputQueue.put (policy)      → Engine.process (one call per model per segment)
    rejects: count + ack           → publish alerts / retained status (handed to paho)
                                   → ack the batch's deliveries (only now)
                                   → periodic: gauges, idle eviction, stats, watchdog

A delivery is acknowledged only after its step ran and its alerts were handed to the MQTT
client, so a crash loses nothing the broker delivered: the broker redelivers what was not
acked and the engine drops what it had already seen (stream, seq). docs/RUNTIME.md has the
topics, the ack rules and what each counter counts.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

from edge_config.schema import GatewayConfig
from runtime.bus import Bus, Inbound, OutboxLimits
from runtime.counters import CounterSnapshot, ServiceCounters
from runtime.engine import Engine, Outcome
from runtime.inbox import InputQueue
from runtime.intake import Intake, Rejected, Reset, Ticket
from runtime.metrics import HealthServer, Metrics
from runtime.payload import FeatureLayout, Message, PayloadLimits
from runtime.sdnotify import Notifier, WatchdogPinger
from runtime.topics import StreamIdResolver

__all__ = ["OutcomeHook", "Service"]

log = logging.getLogger("edgewatch.service")

OutcomeHook = Callable[[str, Outcome], None]
"""Called on the worker thread with (model name, outcome) after the outcome's alerts were handed
to the MQTT client: for tests and embedding, never needed by the daemon."""

_Item = Message | Reset
_IDLE_POLL_S = 0.1  # the worker loop's longest sleep: periodic work and the watchdog need it to turn
_GAUGES_EVERY_S = 1.0
_UNSUBSCRIBE_GRACE_S = 1.0  # deliveries already on the wire when we unsubscribe


class Service:
    def __init__(self, config: GatewayConfig, *, outcome_hook: OutcomeHook | None = None) -> None:
        rt = config.runtime
        self.config = config
        self.counters = ServiceCounters()
        self.metrics = Metrics()
        self.engines = self._load_models(config)
        resolver = StreamIdResolver(config.streams)
        layouts = {
            s.name: (s.model, FeatureLayout.from_manifest(self.engines[s.model].artifact.manifest, s.features))
            for s in config.streams
        }
        self._prefix = rt.topic_prefix
        self.intake = Intake(resolver, layouts, PayloadLimits.from_runtime(rt), prefix=self._prefix,
                             counters=self.counters)
        self.queue: InputQueue[_Item] = InputQueue(rt.queue_max, rt.drop_policy)
        qos = config.broker.input_qos
        self.bus = Bus(
            config.broker,
            prefix=self._prefix,
            subscriptions=[(f, qos) for f in resolver.filters] + [(self.intake.control_filter, 1)],
            on_message=self._on_message,
            limits=OutboxLimits(rt.outgoing_max, rt.outgoing_max_bytes),
            receive_maximum=rt.queue_max,
        )
        self.metrics.watch(self.counters.snapshot, self.bus.snapshot,
                           lambda: (self.bus.outbox_messages, self.bus.outbox_bytes))
        self._hook = outcome_hook
        self._http = HealthServer(rt.metrics_address, self.metrics, self.health) if rt.metrics_address else None
        self._notifier = Notifier()
        self._watchdog = WatchdogPinger.from_env(self._notifier)
        self._draining = threading.Event()
        self._worker = threading.Thread(target=self._work, name="edgewatch-worker", daemon=True)
        self._started = time.monotonic()
        self._stopped = False

    # --- setup ---------------------------------------------------------------------------------

    def _load_models(self, config: GatewayConfig) -> dict[str, Engine]:
        from runtime.artifact import load_artifact
        from runtime.session import create_session

        engines = {}
        for name, model in config.models.items():
            artifact = load_artifact(model.path)
            session, report = create_session(artifact, config.targets[model.target], name=name)
            log.info("%s", report.summary())
            for warning in report.warnings:
                log.warning("model %r: %s", name, warning)
            for provider, ops in report.nodes_by_provider.items():
                self.metrics.provider_nodes.labels(name, provider).set(sum(ops.values()))
            engines[name] = Engine(artifact, session, model, name=name, max_streams=config.runtime.max_streams,
                                   idle_ttl_s=config.runtime.idle_ttl_s)
        return engines

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        if self._http is not None:
            self._http.start()
        self._worker.start()
        self.bus.start()
        self.metrics.ready.set(1)
        # READY after warm-up (create_session ran one step per model); the broker may still be
        # away, which /healthz reports, and the bus keeps retrying.
        self._notifier.ready(f"serving {len(self.engines)} model(s)")

    def health(self) -> tuple[bool, str]:
        if self._stopped or self._draining.is_set():
            return False, "stopping"
        if not self._worker.is_alive():
            return False, "the worker thread is not running"
        if not self.bus.connected:
            return False, "not connected to the broker"
        return True, "ready"

    def stop(self, timeout: float = 30.0) -> None:
        """Stop taking input, finish what is queued, publish `stopped`, disconnect."""
        if self._stopped:
            return
        self._stopped = True
        self._notifier.stopping("draining")
        self.metrics.ready.set(0)
        self.bus.stop_input()
        time.sleep(_UNSUBSCRIBE_GRACE_S if self.bus.connected else 0)
        self._draining.set()
        self.queue.close()
        if self._worker.ident is not None:  # start() ran
            self._worker.join(timeout)
        if self._worker.is_alive():
            log.error("the worker did not drain the queue within %.0fs (%d left)", timeout, len(self.queue))
        self.bus.stop(availability="stopped")
        if self._http is not None:
            self._http.stop()
        log.info("stopped: %s", self._stats_line())

    def run(self) -> int:
        """Serve in the foreground until SIGTERM/SIGINT; 0 after a clean stop, 1 if the worker died."""
        wake = threading.Event()

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            log.info("received %s: stopping", signal.Signals(signum).name)
            wake.set()

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        code = 0
        try:
            self.start()
            while not wake.wait(0.5):
                if not self._worker.is_alive():
                    log.error("the worker thread died; stopping")
                    code = 1
                    break
        finally:
            self.stop()
            for s, handler in previous.items():
                signal.signal(s, handler)
        return code

    # --- network thread ------------------------------------------------------------------------

    def _on_message(self, inbound: Inbound) -> None:
        item = self.intake.accept(inbound)
        if item is None or isinstance(item, Rejected):
            self.bus.ack(inbound)  # it will never become valid: do not let the broker resend it
            return
        dropped = self.queue.put(item)
        if dropped is not None:
            self.counters.add_reason("dropped", self.config.runtime.drop_policy)
            self.bus.ack(_inbound_of(dropped))

    # --- worker --------------------------------------------------------------------------------

    def _work(self) -> None:
        rt = self.config.runtime
        next_gauges = next_evict = time.monotonic()
        evict_every = min(rt.idle_ttl_s / 10, 60.0)
        next_stats = time.monotonic() + (rt.stats_interval_s or 0)
        try:
            while True:
                batch = self.queue.get_batch(rt.max_batch, rt.max_wait_ms / 1000, _IDLE_POLL_S)
                if batch:
                    self._process(batch)
                now = time.monotonic()
                self._watchdog.maybe_ping()
                if now >= next_gauges:
                    next_gauges = now + _GAUGES_EVERY_S
                    self.metrics.queue_depth.set(len(self.queue))
                    self.metrics.active_streams.set(sum(len(e.store) for e in self.engines.values()))
                if now >= next_evict:
                    next_evict = now + evict_every
                    self.counters.add("evicted", sum(e.evict_idle() for e in self.engines.values()))
                if rt.stats_interval_s and now >= next_stats:
                    next_stats = now + rt.stats_interval_s
                    self._publish_stats()
                if self._draining.is_set() and not batch and len(self.queue) == 0:
                    return
        except Exception:
            log.exception("the worker failed")  # run() notices the dead thread and exits 1

    def _process(self, batch: list[_Item]) -> None:
        """Run the batch in arrival order: messages per model, resets between them."""
        self.counters.add("batches")
        self.metrics.batch_size.observe(len(batch))
        pending: dict[str, list[Message]] = {}
        for item in batch:
            if isinstance(item, Reset):
                self._step(pending)
                pending = {}
                self._reset(item)
            else:
                ticket = item.token
                assert isinstance(ticket, Ticket)
                pending.setdefault(ticket.model, []).append(item)
        self._step(pending)

    def _step(self, pending: dict[str, list[Message]]) -> None:
        for model, messages in pending.items():
            delta = CounterSnapshot()
            try:
                outcomes = self.engines[model].process(messages)
            except Exception:
                log.exception("model %r failed on a batch of %d messages; they are acknowledged and dropped",
                              model, len(messages))
                delta.rejected["engine-error"] = len(messages)
                outcomes = []
            for outcome in outcomes:
                self._publish(outcome, delta)
            now = time.monotonic()
            for outcome in outcomes:
                if outcome.status == "processed":
                    self.metrics.latency.observe(now - outcome.message.received)
                if self._hook is not None:
                    try:
                        self._hook(model, outcome)
                    except Exception:
                        log.exception("the outcome hook failed")
            self.counters.merge(delta)
            for message in messages:  # acked only now: processed, and its alerts handed to paho
                self.bus.ack(_inbound_of(message))

    def _publish(self, outcome: Outcome, delta: CounterSnapshot) -> None:
        """Hand the outcome's alerts and status to the bus; count into `delta`."""
        qos = self.config.broker.alert_qos
        stream = outcome.message.stream
        for alert in outcome.alerts:
            if self.bus.publish(f"{self._prefix}/alerts/{stream}", alert.to_json(), qos=qos):
                delta.alerts[alert.state] = delta.alerts.get(alert.state, 0) + 1
            else:
                delta.alerts_not_sent += 1
        if outcome.stream_status is not None:
            topic = f"{self._prefix}/status/{stream}"
            if not self.bus.publish(topic, outcome.stream_status.encode(), qos=qos, retain=True):
                delta.alerts_not_sent += 1
        if outcome.status == "processed":
            delta.processed += 1
            delta.steps += outcome.steps
        elif outcome.status == "refused":
            delta.rejected["max-streams"] = delta.rejected.get("max-streams", 0) + 1
        else:
            delta.skipped[outcome.status] = delta.skipped.get(outcome.status, 0) + 1

    def _reset(self, reset: Reset) -> None:
        known = [name for name, engine in self.engines.items() if engine.reset(reset.stream)]
        if known:
            self.counters.add("resets")
            log.info("stream %s reset by a control message (model %s)", reset.stream, ", ".join(known))
        else:
            log.info("reset for unknown stream %s ignored", reset.stream)
        self.bus.ack(reset.inbound)

    # --- stats -----------------------------------------------------------------------------------

    def _stats(self) -> dict[str, object]:
        c, b = self.counters.snapshot(), self.bus.snapshot()
        return {
            "ts": round(time.time(), 3),
            "uptime_s": round(time.monotonic() - self._started, 1),
            "connected": self.bus.connected,
            "queue_depth": len(self.queue),
            "active_streams": sum(len(e.store) for e in self.engines.values()),
            **c.as_json_dict(),
            "outgoing_dropped": b.dropped_outgoing,
            "outbox_messages": self.bus.outbox_messages,
        }

    def _stats_line(self) -> str:
        s = self.counters.snapshot()
        return (f"received {s.received}, processed {s.processed} ({s.steps} steps), "
                f"rejected {sum(s.rejected.values())}, skipped {sum(s.skipped.values())}, "
                f"dropped {sum(s.dropped.values())}, alerts {sum(s.alerts.values())}")

    def _publish_stats(self) -> None:
        self.bus.publish(f"{self._prefix}/stats", json.dumps(self._stats(), separators=(",", ":")).encode(), qos=0)
        log.info("%s", self._stats_line())


def _inbound_of(item: _Item) -> Inbound:
    if isinstance(item, Reset):
        return item.inbound
    ticket = item.token
    assert isinstance(ticket, Ticket)
    return ticket.inbound
