"""The machine the benchmark ran on, one-core pinning, and process memory.

Figures from a shared 2-core box are noisy; the load average before and after a run is
recorded with them so a reader can tell a quiet run from a busy one.
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata

_PACKAGES = ("onnxruntime", "onnxruntime-openvino", "onnx", "numpy", "torch", "paho-mqtt")


@dataclass(frozen=True)
class MachineInfo:
    cpu_model: str
    cores: int
    """CPUs this process may run on (os.sched_getaffinity)."""
    python: str
    platform: str
    versions: dict[str, str]
    """Installed package versions; "missing" for one that is not installed."""
    mosquitto: str


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mosquitto_version() -> str:
    import shutil
    import subprocess

    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    try:
        out = subprocess.run([binary, "-h"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "missing"
    first = out.strip().splitlines()[0] if out.strip() else ""
    return first.removeprefix("mosquitto version ").strip() or "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "missing"


def describe_machine() -> MachineInfo:
    versions = {p: _version(p) for p in _PACKAGES}
    if versions["onnxruntime-openvino"] == "missing":
        del versions["onnxruntime-openvino"]
    return MachineInfo(
        cpu_model=_cpu_model(),
        cores=len(os.sched_getaffinity(0)),
        python=sys.version.split()[0],
        platform=platform.platform(terse=True),
        versions=versions,
        mosquitto=_mosquitto_version(),
    )


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


def _busy_jiffies() -> dict[int, tuple[int, int]]:
    """cpu index → (busy, total) jiffies since boot, from /proc/stat."""
    out: dict[int, tuple[int, int]] = {}
    with open("/proc/stat", encoding="utf-8") as f:
        for line in f:
            name, *fields = line.split()
            if not name.startswith("cpu") or name == "cpu":
                continue
            values = [int(v) for v in fields]
            idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
            out[int(name[3:])] = (sum(values) - idle, sum(values))
    return out


def idlest_cpu(sample_s: float = 0.3) -> int:
    """The allowed CPU with the least work over `sample_s`: other engineers' jobs share this box,
    and a benchmark pinned to their core would measure them."""
    allowed = sorted(os.sched_getaffinity(0))
    try:
        before = _busy_jiffies()
        time.sleep(sample_s)
        after = _busy_jiffies()
    except (OSError, ValueError):
        return allowed[0]

    def busy_share(cpu: int) -> float:
        (b0, t0), (b1, t1) = before.get(cpu, (0, 0)), after.get(cpu, (0, 0))
        return (b1 - b0) / max(1, t1 - t0)

    return min(allowed, key=busy_share)


@contextlib.contextmanager
def pinned_to_one_cpu() -> Iterator[int]:
    """Run the block on one CPU (the idlest), then restore the previous affinity.

    One-core figures mean one core: ORT runs with intra_op_num_threads=1 and torch with
    set_num_threads(1), but stray helper threads would otherwise borrow the second core."""
    previous = os.sched_getaffinity(0)
    cpu = idlest_cpu()
    os.sched_setaffinity(0, {cpu})
    try:
        yield cpu
    finally:
        os.sched_setaffinity(0, previous)


def rss_bytes(pid: int | None = None) -> int:
    """Resident set size now (VmRSS), in bytes."""
    path = f"/proc/{pid or 'self'}/status"
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise OSError(f"no VmRSS in {path}")
