"""The daemon: MQTT deliveries → router → bounded queue → worker → engines → publisher → acks.

network thread (paho)               worker thread (runtime.service.worker)
Router: Intake.accept (route,       queue.get_batch(max_batch, max_wait_ms)
  decode) → InputQueue.put          → Engine.process per model (resets between)
  rejects, drops: settled at once   → Publisher: alerts, retained statuses (handed to paho)
                                    → Acks.settle the batch's deliveries (only now)
                                    → periodic: gauges, idle eviction, checkpoints, stats
main thread (runtime.service.service): signals; SIGHUP verifies the new models
  (runtime.model.reload), the worker swaps them in (runtime.service.swap)
"""

from runtime.service.service import OutcomeHook, Service

__all__ = ["OutcomeHook", "Service"]
