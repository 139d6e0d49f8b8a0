"""Telling a session taken over by another client with our client id from other lost connections.

When a second client connects with our client id, the broker hands it our session and closes
our connection; paho reconnects and takes it back, and two gateways with one id flap twice a
second (what `config init`'s old fixed client id did). MQTT 5 brokers may say so with the
DISCONNECT reason 0x8E; mosquitto 2.0.11 closes the connection without it. So either is a
takeover: the reason code, or `SHORT_LIVED` connections in a row lost within seconds of being
accepted with our session present, each reconnect succeeding at once (a failed attempt in
between, a broker restarting, starts the count over). After one, every connection lost before
it has lasted `QUIET` × reconnect_max_s is one too; a connection that lasts that long ends it.
"""

from __future__ import annotations

__all__ = ["SESSION_TAKEN_OVER", "TakeoverWatch"]

SESSION_TAKEN_OVER = 0x8E
"""MQTT 5 DISCONNECT reason code: another connection used our client id."""
SHORT_LIVED = 3
"""Connections in a row lost within seconds of being accepted with our session: a takeover."""
QUIET = 2.0
"""× reconnect_max_s connected without another takeover before the state ends."""


class TakeoverWatch:
    """Fed by the bus's callbacks (paho's network thread) and its watch (`settled`)."""

    def __init__(self, reconnect_min_s: float, reconnect_max_s: float) -> None:
        self._short_s = max(5.0, 4 * reconnect_min_s)
        self._quiet_s = QUIET * reconnect_max_s
        self._short = 0
        self._session_present = False
        self._connected_at = 0.0
        self.since: float | None = None
        """time.monotonic() of the last takeover; None when there was none lately."""

    @property
    def active(self) -> bool:
        return self.since is not None

    def connected(self, now: float, *, session_present: bool) -> None:
        self._connected_at = now
        self._session_present = session_present

    def attempt_failed(self) -> None:
        """A connection attempt failed or was refused: not another client taking the session."""
        self._short = 0

    def lost(self, now: float, reason_code: int) -> bool:
        """An accepted connection was lost (not by us): True when it is a takeover."""
        lived = now - self._connected_at
        if reason_code == SESSION_TAKEN_OVER or (self.active and lived < self._quiet_s):
            self.since = now
            return True
        if lived >= self._short_s or not self._session_present:
            self._short = 0
            return False
        self._short += 1
        if self._short >= SHORT_LIVED:
            self.since = now
            return True
        return False

    def settled(self, now: float) -> float | None:
        """After a takeover, once connected for the quiet time: ends the state and returns how long
        the connection has lasted (seconds); None otherwise."""
        if self.since is None or now - self._connected_at <= self._quiet_s:
            return None
        self.since = None
        self._short = 0
        return now - self._connected_at
