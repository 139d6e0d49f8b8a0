"""systemd's readiness and watchdog protocol (sd_notify(3)), without libsystemd.

Under a `Type=notify` unit systemd sets $NOTIFY_SOCKET (a path, or an abstract socket name
starting with '@'); the service sends newline-separated `KEY=value` datagrams to it:
READY=1 after warm-up, WATCHDOG=1 at least every WatchdogSec, RELOADING=1 / STOPPING=1,
STATUS=<one line for `systemctl status`>. Outside systemd the variable is absent and every
call is a no-op, so the service calls these unconditionally.

A delivery failure never raises (it is logged once per call): a notification that cannot
be delivered must not stop the daemon; systemd then acts on the missing READY/WATCHDOG,
which is the right outcome.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

__all__ = ["Notifier", "WatchdogPinger"]

log = logging.getLogger("edgewatch.sdnotify")


class Notifier:
    """Sends sd_notify datagrams to $NOTIFY_SOCKET; does nothing when it is not set."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        raw = (os.environ if env is None else env).get("NOTIFY_SOCKET", "")
        # '@name' is Linux's abstract namespace: the address starts with a NUL byte
        self._address: str | bytes | None = None
        if raw.startswith("@"):
            self._address = b"\0" + raw[1:].encode()
        elif raw.startswith("/"):
            self._address = raw
        elif raw:
            log.warning("NOTIFY_SOCKET=%r is neither a path nor an abstract name; not notifying systemd", raw)
        self._socket: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def send(self, *fields: str) -> bool:
        """Send `KEY=value` fields in one datagram; True if it was handed to the socket."""
        if self._address is None:
            return False
        if any("\n" in f or "=" not in f for f in fields):
            raise ValueError(f"sd_notify fields are single-line KEY=value: {fields!r}")
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.sendto("\n".join(fields).encode(), self._address)
            return True
        except OSError as exc:
            log.warning("sd_notify %s failed: %s", fields[0].split("=")[0] if fields else "", exc)
            return False

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1", *_status(status))

    def reloading(self, status: str = "") -> bool:
        # MONOTONIC_USEC lets systemd >= 253 (Type=notify-reload) match the reload to this message
        return self.send(
            "RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}", *_status(status)
        )

    def stopping(self, status: str = "") -> bool:
        return self.send("STOPPING=1", *_status(status))

    def status(self, text: str) -> bool:
        return self.send(*_status(text))

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _status(text: str) -> list[str]:
    line = " ".join(text.split())  # STATUS is one line
    return [f"STATUS={line}"] if line else []


class WatchdogPinger:
    """Sends WATCHDOG=1 at half of $WATCHDOG_USEC, from whatever loop calls `maybe_ping`.

    Call `maybe_ping()` on every iteration of the engine loop (cost: one clock read and a
    compare); the loop must iterate even when idle, at least every half-interval, or
    systemd will (rightly) consider it hung.
    """

    def __init__(
        self, notifier: Notifier, interval_s: float | None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._notifier = notifier
        self._period = interval_s / 2 if interval_s and notifier.enabled else None
        self._clock = clock
        self._next = float("-inf")  # the first call pings

    @classmethod
    def from_env(
        cls, notifier: Notifier, env: Mapping[str, str] | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> WatchdogPinger:
        """Interval from $WATCHDOG_USEC; disabled if unset, invalid, or $WATCHDOG_PID names another process."""
        env = os.environ if env is None else env
        pid = env.get("WATCHDOG_PID")
        try:
            usec = int(env.get("WATCHDOG_USEC", "0"))
        except ValueError:
            usec = 0
        if pid is not None and pid != str(os.getpid()):
            usec = 0  # the watchdog is meant for another process (e.g. our parent)
        return cls(notifier, usec / 1e6 if usec > 0 else None, clock=clock)

    @property
    def period_s(self) -> float | None:
        """Seconds between pings, or None when no watchdog is configured."""
        return self._period

    def maybe_ping(self) -> bool:
        """Ping if half the watchdog interval has passed since the last ping; True if it pinged."""
        if self._period is None:
            return False
        now = self._clock()
        if now < self._next:
            return False
        self._next = now + self._period
        return self._notifier.watchdog()
