"""A loopback TCP proxy in front of a test broker that can swallow the broker's PUBACKs.

`block_pubacks()` makes every connection open at that moment drop the PUBACK packets the broker
sends (everything else, input deliveries and PINGRESP included, still passes); connections
made later pass everything. That is what mosquitto 2.0.11's in-flight accounting (its issue
#2362) did to a gateway after a long flood: the connection stays up and keeps delivering input,
but the publications in flight are never acknowledged, so nothing queued behind them is sent.
A client that reconnects gets a healthy connection again. `delay_pubacks(seconds)` instead holds
every PUBACK that long (a slow broker: a window of 20 in flight then confirms 20 per delay), for
connections open now and later. Only 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import socket
import threading

from runtime.tools.local_broker import free_port

_PUBACK = 0x40


class _Link:
    """One client connection and its connection to the broker, pumped by two threads."""

    def __init__(self, client: socket.socket, upstream: socket.socket, proxy: PubackProxy) -> None:
        self.client, self.upstream, self._proxy = client, upstream, proxy
        self.blocking = False
        self._send_lock = threading.Lock()  # the pump and the delayed PUBACKs write to one socket
        for target, name in ((self._to_broker, "proxy-up"), (self._to_client, "proxy-down")):
            threading.Thread(target=target, name=name, daemon=True).start()

    def close(self) -> None:
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _to_broker(self) -> None:
        try:
            while data := self.client.recv(65536):
                self.upstream.sendall(data)
        except OSError:
            pass
        self.close()

    def _to_client(self) -> None:
        """Forward whole MQTT packets; while blocking, leave out the PUBACKs."""
        buffer = b""
        try:
            while data := self.upstream.recv(65536):
                buffer += data
                out, buffer = self._filter(buffer)
                if out:
                    self._send(out)
        except OSError:
            pass
        self.close()

    def _send(self, data: bytes) -> None:
        with contextlib.suppress(OSError), self._send_lock:
            self.client.sendall(data)

    def _filter(self, buffer: bytes) -> tuple[bytes, bytes]:
        """(bytes to forward, the incomplete packet left over)."""
        kept: list[bytes] = []
        pos, run = 0, 0  # run: start of the bytes forwarded as they are
        while pos < len(buffer):
            length, shift, i = 0, 0, pos + 1
            while True:
                if i >= len(buffer):
                    kept.append(buffer[run:pos])
                    return b"".join(kept), buffer[pos:]
                byte = buffer[i]
                length |= (byte & 0x7F) << shift
                shift += 7
                i += 1
                if not byte & 0x80:
                    break
            end = i + length
            if end > len(buffer):
                kept.append(buffer[run:pos])
                return b"".join(kept), buffer[pos:]
            if buffer[pos] & 0xF0 == _PUBACK and (self.blocking or self._proxy.puback_delay > 0):
                kept.append(buffer[run:pos])
                run = end
                if self.blocking:
                    self._proxy.swallowed += 1
                else:
                    timer = threading.Timer(self._proxy.puback_delay, self._send, [buffer[pos:end]])
                    timer.daemon = True
                    timer.start()
            pos = end
        kept.append(buffer[run:pos])
        return b"".join(kept), b""


class PubackProxy:
    """127.0.0.1:<port> → the broker; `block_pubacks()` stalls the connections open now."""

    def __init__(self, broker_host: str, broker_port: int) -> None:
        self._target = (broker_host, broker_port)
        self.host, self.port = "127.0.0.1", free_port()
        self._server = socket.create_server((self.host, self.port))
        self._links: list[_Link] = []
        self._lock = threading.Lock()
        self.connections = 0
        self.swallowed = 0
        """PUBACKs dropped so far."""
        self.puback_delay = 0.0
        """Seconds every PUBACK is held (0: forwarded at once)."""
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self._target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self.connections += 1
                self._links.append(_Link(client, upstream, self))

    def block_pubacks(self) -> None:
        with self._lock:
            for link in self._links:
                link.blocking = True

    def delay_pubacks(self, seconds: float) -> None:
        self.puback_delay = seconds

    def close(self) -> None:
        self._server.close()
        with self._lock:
            for link in self._links:
                link.close()
