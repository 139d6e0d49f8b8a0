"""Tools around the runtime, not part of a gateway's data path.

    demo           `edgewatch demo`: private broker, daemon, simulated pumps, live alerts, plots
    bench          `edgewatch bench`: the performance benchmark, baselines measured in the same run
    plots          one stream's values, scores and alerts as a PNG (matplotlib)
    local_broker   a private mosquitto on a free loopback port (demo, benchmark, tests)

The only runtime code that may import the exporter (torch) or matplotlib, and only inside the
functions that need them: `edgewatch --help` imports `demo` and `bench` to register them.
"""

from __future__ import annotations

__all__ = ["bench", "demo", "local_broker", "plots"]
