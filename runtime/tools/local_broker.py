"""A private mosquitto broker on a free loopback port, for the demo, the bench and the tests.

Only 127.0.0.1 is ever used. With `tls=BrokerTLS(...)` its one listener speaks TLS only
(and, with `require_certificate`, refuses clients without a certificate from `cafile`).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class BrokerTLS:
    """TLS settings of the listener (mosquitto.conf(5): certfile, keyfile, cafile, require_certificate)."""

    certfile: Path
    keyfile: Path
    cafile: Path
    """CA that client certificates must chain to (used only with require_certificate)."""
    require_certificate: bool = False
    """Mutual TLS: refuse clients that present no valid certificate."""

    def conf_lines(self) -> list[str]:
        return [
            f"certfile {self.certfile}",
            f"keyfile {self.keyfile}",
            f"cafile {self.cafile}",
            f"require_certificate {'true' if self.require_certificate else 'false'}",
        ]


@dataclass
class Broker:
    host: str
    port: int
    workdir: Path
    process: subprocess.Popen[bytes] | None = None
    extra_conf: str = ""
    persistence: bool = False
    tls: BrokerTLS | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.workdir / "mosquitto.log"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        conf = self.workdir / "mosquitto.conf"
        lines = [
            f"listener {self.port} {self.host}",
            *(self.tls.conf_lines() if self.tls else []),
            "allow_anonymous true",
            "max_queued_messages 100000",
            "max_inflight_messages 100",
            # Without it the broker's small writes (a delivery, a PUBACK) may wait for Nagle's
            # delayed ACK: publish -> alert p50 measured 7.3 -> 4.9 ms with it (issue 13).
            "set_tcp_nodelay true",
            f"log_dest file {self.log}",
            "log_type error",
            "log_type warning",
        ]
        if self.persistence:
            lines += ["persistence true", f"persistence_location {self.workdir}/", "autosave_interval 1"]
        if os.geteuid() == 0:
            lines.append("user root")  # otherwise mosquitto drops to a user that cannot write workdir
        conf.write_text("\n".join(lines) + "\n" + self.extra_conf)
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.process = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                raise RuntimeError(f"mosquitto exited at start: {err.strip()} (see {self.log})")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.address} within {timeout}s")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout)

    def restart(self) -> None:
        self.stop()
        self.start()


def start_broker(
    workdir: Path | None = None, *, persistence: bool = False, extra_conf: str = "", tls: BrokerTLS | None = None
) -> Broker:
    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
        raise RuntimeError("mosquitto is not installed: apt-get install -y mosquitto mosquitto-clients")
    directory = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="edgewatch-mosquitto-"))
    directory.mkdir(parents=True, exist_ok=True)
    broker = Broker("127.0.0.1", free_port(), directory, persistence=persistence, extra_conf=extra_conf, tls=tls)
    broker.start()
    return broker
