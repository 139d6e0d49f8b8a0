"""What operators see: exact counts, Prometheus metrics and /healthz, systemd notifications."""

from typing import TYPE_CHECKING

from runtime._lazy import lazy_exports as _lazy_exports

if TYPE_CHECKING:
    from runtime.ops.counts import Counts, Tally
    from runtime.ops.metrics import HealthServer, Metrics
    from runtime.ops.sdnotify import Notifier, WatchdogPinger

__all__ = [
    "Counts",
    "HealthServer",
    "Metrics",
    "Notifier",
    "Tally",
    "WatchdogPinger",
]

__getattr__ = _lazy_exports(
    __name__,
    {
        "Counts": "runtime.ops.counts",
        "HealthServer": "runtime.ops.metrics",
        "Metrics": "runtime.ops.metrics",
        "Notifier": "runtime.ops.sdnotify",
        "Tally": "runtime.ops.counts",
        "WatchdogPinger": "runtime.ops.sdnotify",
    },
)
