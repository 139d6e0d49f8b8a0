"""The daemon: MQTT deliveries → bounded queue → one worker → Engine per model → alerts → acks.

    network thread (paho)          worker thread
    Intake.accept: route, decode   get_batch(max_batch, max_wait_ms)
    → InputQueue.put (policy)      → Engine.process (one call per model per segment)
    rejects: count + ack           → publish alerts / retained status (handed to paho)
                                   → ack the batch's deliveries (only now)
                                   → periodic: gauges, idle eviction, stats, watchdog,
                                     checkpoint snapshots (written by runtime.state.writer)
    main thread: signals; SIGHUP verifies the new models (runtime.model.reload), the worker swaps them

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
from pathlib import Path
from types import FrameType

from edge_config.schema import GatewayConfig
from runtime.engine.alerts import Alert
from runtime.engine.engine import Engine, Outcome
from runtime.ingest.intake import Intake, Rejected, Reset, Ticket
from runtime.ingest.payload import FeatureLayout, Message, PayloadLimits
from runtime.ingest.queue import InputQueue
from runtime.model.loading import LoadedModel, load_model
from runtime.model.reload import ReloadPlan, prepare_reload
from runtime.mqtt.bus import Bus, Inbound, OutboxLimits
from runtime.mqtt.topics import StreamIdResolver
from runtime.ops.counters import CounterSnapshot, ServiceCounters
from runtime.ops.metrics import HealthServer, Metrics
from runtime.ops.sdnotify import Notifier, WatchdogPinger
from runtime.state.schedule import Checkpointing
from runtime.state.transfer import transfer_state

__all__ = ["OutcomeHook", "Service"]

log = logging.getLogger("edgewatch.service")
outcome_log = logging.getLogger("edgewatch.outcomes")
"""One DEBUG line per delivery and what became of it (`edgewatch -v serve`, or this logger alone)."""

OutcomeHook = Callable[[str, Outcome], None]
"""Called on the worker thread with (model name, outcome) after the outcome's alerts were handed
to the MQTT client: for tests and embedding, never needed by the daemon."""

_Item = Message | Reset
_IDLE_POLL_S = 0.1  # the worker loop's longest sleep: periodic work and the watchdog need it to turn
_GAUGES_EVERY_S = 1.0
_UNSUBSCRIBE_GRACE_S = 1.0  # deliveries already on the wire when we unsubscribe
_SWAP_TIMEOUT_S = 30.0  # a reload waits this long for the worker to swap the models in
_LAST_CHECKPOINT_TIMEOUT_S = 60.0  # a clean stop waits this long for the last checkpoint write


class _Swap:
    """A reload handed to the worker: it swaps the engines between two batches and says when done."""

    def __init__(self, plan: ReloadPlan) -> None:
        self.plan = plan
        self.done = threading.Event()


class Service:
    def __init__(
        self, config: GatewayConfig, *, outcome_hook: OutcomeHook | None = None, config_path: Path | None = None
    ) -> None:
        """config_path: the file `config` came from; SIGHUP (or `reload()`) reads it again."""
        rt = config.runtime
        self.config = config
        self.config_path = config_path
        self.counters = ServiceCounters()
        self.metrics = Metrics()
        self.engines = self._load_models(config)
        self.checkpoints = Checkpointing(rt.checkpoint_path, rt.checkpoint_interval_s) if rt.checkpoint_path else None
        self._restore_state()
        resolver = StreamIdResolver(config.streams)
        layouts = {
            s.name: (s.model, FeatureLayout.from_manifest(self.engines[s.model].artifact.manifest, s.features))
            for s in config.streams
        }
        self._prefix = rt.topic_prefix
        self.intake = Intake(
            resolver, layouts, PayloadLimits.from_runtime(rt), prefix=self._prefix, counters=self.counters
        )
        self.queue: InputQueue[_Item] = InputQueue(rt.queue_max, rt.drop_policy)
        qos = config.broker.input_qos
        self.bus = Bus(
            config.broker,
            prefix=self._prefix,
            subscriptions=[(f, qos) for f in resolver.filters] + [(self.intake.control_filter, 1)],
            on_message=self._on_message,
            limits=OutboxLimits(rt.outgoing_max, rt.outgoing_max_bytes),
            receive_maximum=rt.queue_max,
            # MQTT 5: see a control message's retain flag as published, so that a retained command
            # is refused live too, not only when its retained copy comes back at a resubscribe.
            retain_as_published=(self.intake.control_filter,),
        )
        self.metrics.watch(
            self.counters.snapshot,
            self.bus.snapshot,
            lambda: (self.bus.outbox_messages, self.bus.outbox_bytes),
            self.checkpoints.stats if self.checkpoints else None,
        )
        self._hook = outcome_hook
        self._http = HealthServer(rt.metrics_address, self.metrics, self.health) if rt.metrics_address else None
        self._notifier = Notifier()
        self._watchdog = WatchdogPinger.from_env(self._notifier)
        self._draining = threading.Event()
        self._worker = threading.Thread(target=self._work, name="edgewatch-worker", daemon=True)
        self._started = time.monotonic()
        self._stopped = False
        self._swap_lock = threading.Lock()
        self._swap: _Swap | None = None

    # --- setup ---------------------------------------------------------------------------------

    def _load_models(self, config: GatewayConfig) -> dict[str, Engine]:
        engines = {}
        for name in config.models:
            loaded = load_model(name, config)
            self._provider_gauges(name, loaded)
            engines[name] = loaded.engine
        return engines

    def _provider_gauges(self, name: str, loaded: LoadedModel) -> None:
        for provider, ops in loaded.report.nodes_by_provider.items():
            self.metrics.provider_nodes.labels(name, provider).set(sum(ops.values()))

    def _restore_state(self) -> None:
        """Each model's newest usable checkpoint, before the first step (load_checkpoint logs why not)."""
        if self.checkpoints is None:
            return
        for name, engine in self.engines.items():
            restored = self.checkpoints.restore(name, engine)
            if restored is not None:
                self.counters.add("restored", restored.streams)

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
        if self.checkpoints is not None:
            self.checkpoints.close(_LAST_CHECKPOINT_TIMEOUT_S)  # the worker queued the last one as it left
        self.bus.stop(availability="stopped")
        if self._http is not None:
            self._http.stop()
        log.info("stopped: %s", self._stats_line())

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
                if not self._worker.is_alive():
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
        except Exception as exc:
            self.counters.add_reason("reloads", "failed")
            log.error("reload failed, still serving the previous config and models: %s", _one_line(exc))
            self._notifier.ready("reload failed; serving the previous config")
            return False
        if plan.not_applied:
            log.warning(
                "reload: changes to %s need a restart; running with the previous values", ", ".join(plan.not_applied)
            )
        applied = self._hand_to_worker(plan)
        self.counters.add_reason("reloads", "ok" if applied else "failed")
        self._notifier.ready(f"serving {len(self.engines)} model(s)")
        return applied

    def _hand_to_worker(self, plan: ReloadPlan) -> bool:
        if not plan.models:
            self.config = plan.config
            log.info("reload: no model changed")
            return True
        swap = _Swap(plan)
        with self._swap_lock:
            self._swap = swap
        if self._worker.is_alive() or self._worker.ident is None:
            if self._worker.ident is None:  # not started (embedding, tests): nobody else owns the state
                self._apply_swap()
            elif not swap.done.wait(_SWAP_TIMEOUT_S):
                log.error("reload: the worker did not take the new models within %.0f s", _SWAP_TIMEOUT_S)
                return False
        return swap.done.is_set()

    def _apply_swap(self) -> None:
        """On the worker (it owns the state): carry every stream into the new engines, swap them in."""
        with self._swap_lock:
            swap, self._swap = self._swap, None
        if swap is None:
            return
        for name, loaded in swap.plan.models.items():
            old, new = self.engines[name], loaded.engine
            carried = transfer_state(old, new)
            self.engines[name] = new
            self._provider_gauges(name, loaded)
            self.counters.add("restored", carried.streams)
            if carried.model_state:
                how = f"state kept for {carried.streams} streams"
            else:
                self.counters.add("rewarming", carried.streams)
                how = f"state shapes differ: {carried.streams} streams keep their seq and alerts and warm up again"
            log.info(
                "reload: model %r now %s (sha256 %s…, was %s…): %s",
                name,
                new.artifact.manifest.name,
                new.artifact.sha256[:12],
                old.artifact.sha256[:12],
                how,
            )
        self.config = swap.plan.config
        if self.checkpoints is not None:  # a crash now must not restart from the old model's file
            self.checkpoints.save(self.engines, time.monotonic(), force=True)
        swap.done.set()

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
                if self._swap is not None:
                    self._apply_swap()
                if now >= next_gauges:
                    next_gauges = now + _GAUGES_EVERY_S
                    self.metrics.queue_depth.set(len(self.queue))
                    self.metrics.active_streams.set(sum(len(e.store) for e in self.engines.values()))
                if now >= next_evict:
                    next_evict = now + evict_every
                    self._evict()
                if self.checkpoints is not None and self.checkpoints.due(now):
                    self._checkpoint(now)
                if rt.stats_interval_s and now >= next_stats:
                    next_stats = now + rt.stats_interval_s
                    self._publish_stats()
                if self._draining.is_set() and not batch and len(self.queue) == 0:
                    if self.checkpoints is not None:  # drained and acked: the last state of a clean stop
                        self._checkpoint(time.monotonic())
                    return
        except Exception:
            log.exception("the worker failed")  # run() notices the dead thread and exits 1

    def _checkpoint(self, now: float) -> None:
        assert self.checkpoints is not None
        if self.checkpoints.save(self.engines, now):
            self.metrics.snapshot_seconds.set(self.checkpoints.snapshot_seconds)

    def _evict(self) -> None:
        """Forget idle streams; an open alert gets its `cleared` (reason "evicted") and the
        stream's retained status is removed, so no consumer holds that alert open forever."""
        delta = CounterSnapshot()
        qos = self.config.broker.alert_qos
        with_alert = 0
        for engine in self.engines.values():
            for eviction in engine.evict_idle():
                delta.evicted += 1
                if eviction.cleared is None:
                    continue
                with_alert += 1
                self._publish_alert(eviction.cleared, delta)
                # An empty retained message deletes the retained status (MQTT 3.1.1 §3.3.1.3).
                if not self.bus.publish(f"{self._prefix}/status/{eviction.stream}", b"", qos=qos, retain=True):
                    delta.alerts_not_sent += 1
        if with_alert:
            log.info(
                "evicted %d idle stream(s); %d had an open alert: cleared (reason evicted), status removed",
                delta.evicted,
                with_alert,
            )
        self.counters.merge(delta)

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
            engine = self.engines[model]
            rewarming = engine.counters.rewarming
            try:
                outcomes = engine.process(messages)
            except Exception:
                log.exception(
                    "model %r failed on a batch of %d messages; they are acknowledged and dropped", model, len(messages)
                )
                delta.rejected["engine-error"] = len(messages)
                outcomes = []
            delta.rewarming = engine.counters.rewarming - rewarming
            for outcome in outcomes:
                self._publish(outcome, delta)
            if outcome_log.isEnabledFor(logging.DEBUG):  # written before the acks below
                for o in outcomes:
                    outcome_log.debug(
                        "outcome model=%s stream=%s seq=%s status=%s steps=%d",
                        model,
                        o.message.stream,
                        o.message.seq,
                        o.status,
                        o.steps,
                    )
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

    def _publish_alert(self, alert: Alert, delta: CounterSnapshot) -> None:
        if self.bus.publish(f"{self._prefix}/alerts/{alert.stream}", alert.to_json(), qos=self.config.broker.alert_qos):
            delta.alerts[alert.state] = delta.alerts.get(alert.state, 0) + 1
        else:
            delta.alerts_not_sent += 1

    def _publish(self, outcome: Outcome, delta: CounterSnapshot) -> None:
        """Hand the outcome's alerts and status to the bus; count into `delta`."""
        qos = self.config.broker.alert_qos
        stream = outcome.message.stream
        for alert in outcome.alerts:
            self._publish_alert(alert, delta)
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
        stats: dict[str, object] = {
            "ts": round(time.time(), 3),
            "uptime_s": round(time.monotonic() - self._started, 1),
            "connected": self.bus.connected,
            "queue_depth": len(self.queue),
            "active_streams": sum(len(e.store) for e in self.engines.values()),
            **c.as_json_dict(),
            "outgoing_dropped": b.dropped_outgoing,
            "outbox_messages": self.bus.outbox_messages,
        }
        if self.checkpoints is not None:
            k = self.checkpoints.stats()
            stats["checkpoints"] = {
                "written": k.written,
                "failed": k.failed,
                "bytes": k.bytes,
                "last_bytes": k.last_bytes,
                "last_seconds": round(k.last_seconds, 4),
            }
        return stats

    def _stats_line(self) -> str:
        s = self.counters.snapshot()
        return (
            f"received {s.received}, processed {s.processed} ({s.steps} steps), "
            f"rejected {sum(s.rejected.values())}, skipped {sum(s.skipped.values())}, "
            f"dropped {sum(s.dropped.values())}, alerts {sum(s.alerts.values())}"
        )

    def _publish_stats(self) -> None:
        self.bus.publish(f"{self._prefix}/stats", json.dumps(self._stats(), separators=(",", ":")).encode(), qos=0)
        log.info("%s", self._stats_line())


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 500 else text[:497] + "..."


def _inbound_of(item: _Item) -> Inbound:
    if isinstance(item, Reset):
        return item.inbound
    ticket = item.token
    assert isinstance(ticket, Ticket)
    return ticket.inbound
