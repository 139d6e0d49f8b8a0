"""Building the paho-mqtt 2.x client from a BrokerConfig: protocol, session, TLS, credentials.

Also holds one fix to paho 2.2 itself: after a reconnect it resends *every* unacknowledged
QoS 1 publication at once (`_messages_reconnect_reset_out` compares against the in-flight
limit but never counts, so all are marked for sending). `PahoClient` requeues all but the first
`max_inflight_messages`; paho's own PUBACK handling (`_update_inflight`) sends the rest as
acknowledgements arrive. tests/mqtt/test_bus.py checks the resend stays within the limit.

And two per-packet costs of paho's receive and ack path (docs/RUNTIME.md, Performance):
- Reads: paho reads each packet with three or more `recv` calls (1 byte of command, 1 byte at
  a time of remaining length, then the body) and, with the network thread, reads one packet per
  `select`. `PahoClient` reads up to 64 KiB per `recv` into a buffer that paho's reads are served
  from, and `loop_read` goes on until the socket has nothing more (so nothing is left in the
  buffer while `select` waits on the socket), writing what is queued every few packets.
- Nagle: paho does not set TCP_NODELAY; small writes (PUBACKs, alerts) then wait for the
  broker's delayed ACK behind an unacknowledged one. `PahoClient` sets it.
- Acks: `ack()` queues one 4-byte packet and wakes the network thread once per ack; `ack_many`
  queues a batch's PUBACKs as one write and one wake-up. They are still sent only when the
  caller acks (after the step): at-least-once is unchanged.
- PUBLISH: paho decodes each one through a dict of reader state, three reads, a `Properties`
  object (MQTT 5: ~20 µs of attribute validation per message), an `MQTTMessage` and a topic
  match over its per-filter callbacks, ~40 µs per message on the 2-core test machine (py-spy,
  bench latency run). With `deliver` set, `loop_read` splits the complete QoS 0/1 PUBLISH
  packets at the head of its read buffer itself (topic, packet id, payload; MQTT 5 properties
  are skipped: nothing of ours reads them, and the broker sends no topic aliases since we
  allow none) and hands them to `deliver(topic, payload, qos, mid, retain)` under paho's
  callback lock; when the buffer is empty it reads first, so a quiet connection's single packets
  take this path too. Anything else — other packets, QoS 2, a packet split across reads, one that
  does not parse — goes through paho's own reader, which also reports malformed packets.
"""

from __future__ import annotations

import logging
import socket
import ssl
import struct
from collections.abc import Callable, Iterable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from edge_config.errors import ConfigError
from edge_config.schema import BrokerConfig, TLSConfig

__all__ = ["PahoClient", "broker_password", "make_client", "tls_context"]

log = logging.getLogger("edgewatch.bus")


_READ_SIZE = 65536
_WRITE_EVERY = 32  # packets read between two writes of what is queued
_PUBACK = struct.Struct("!BBH")  # fixed header 0x40, remaining length 2, packet id (MQTT 5: reason 0 implied)
_PUBACK_BYTE = 0x40
_PUBLISH = 0x30
Deliver = Callable[[bytes, bytes, int, int, bool], None]
"""deliver(topic, payload, qos, mid, retain) for one PUBLISH packet."""


def _varint(buf: bytes, pos: int) -> tuple[int, int] | None:
    """(value, position after it) of the MQTT variable byte integer at buf[pos]; None when it is
    cut short by the end of buf or longer than its 4 bytes."""
    value, shift = 0, 0
    for i in range(pos, min(pos + 4, len(buf))):
        byte = buf[i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i + 1
        shift += 7
    return None


def split_publish(header: int, body: bytes, v5: bool) -> tuple[bytes, int, bytes] | None:
    """(topic, packet id, payload) of a QoS 0/1 PUBLISH body, or None when it does not parse
    (paho's reader then decides). MQTT 5 properties are skipped, not decoded."""
    qos = (header >> 1) & 3
    if qos > 1 or len(body) < 2:
        return None
    end = 2 + ((body[0] << 8) | body[1])
    topic = body[2:end]
    mid = 0
    if qos:
        if end + 2 > len(body):
            return None
        mid, end = (body[end] << 8) | body[end + 1], end + 2
    if v5:  # the properties' length, then the properties: skipped
        read = _varint(body, end)
        if read is None:
            return None
        length, end = read
        end += length
    if end > len(body) or (not topic and not v5):
        return None
    return topic, mid, body[end:]


class PahoClient(mqtt.Client):
    """paho's Client with the reconnect fix above, buffered reads and batched PUBACKs."""

    _rbuf = b""
    _rpos = 0
    deliver: Deliver | None = None
    """Set: QoS 0/1 PUBLISH packets go here instead of on_message (module doc)."""

    def _sock_recv(self, bufsize: int) -> bytes:
        """paho's reads, served from one large `recv` (raises what the socket raises when empty)."""
        if self._rpos >= len(self._rbuf):
            data = super()._sock_recv(_READ_SIZE)
            if len(data) <= bufsize:
                return data  # b"" (closed) included
            self._rbuf, self._rpos = data, 0
        start = self._rpos
        self._rpos = min(start + bufsize, len(self._rbuf))
        return self._rbuf[start : self._rpos]

    def _create_socket_connection(self) -> socket.socket:
        sock = super()._create_socket_connection()
        # paho leaves Nagle on: a PUBACK or an alert (a few bytes) would wait for the broker's
        # delayed ACK whenever an earlier write is unacknowledged.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _sock_close(self) -> None:
        self._rbuf, self._rpos = b"", 0  # never hand a new connection the old one's bytes
        super()._sock_close()

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        """Every packet the socket holds now (paho reads one per select when nothing is in flight),
        writing what is queued (acks, publications) every _WRITE_EVERY packets: a broker that
        floods us (MQTT 5 receive maximum 65535) must not hold our PUBACKs and alerts back."""
        read = 0
        while True:
            if self._sock is None:
                return MQTTErrorCode.MQTT_ERR_NO_CONN
            if self.deliver is not None and self._in_packet["command"] == 0:  # between two packets
                if self._rpos >= len(self._rbuf):
                    self._fill()
                read += self._deliver_buffered()
            rc = self._packet_read()
            if rc > 0:
                return self._loop_rc_handle(rc)
            if rc == MQTTErrorCode.MQTT_ERR_AGAIN and self._rpos >= len(self._rbuf):
                return MQTTErrorCode.MQTT_ERR_SUCCESS
            read += 1
            if read % _WRITE_EVERY == 0 and self.want_write():
                rc = self.loop_write()
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    return rc

    def _fill(self) -> None:
        """One `recv` into the empty read buffer, so that a quiet connection's packets (one per
        read) take our path too, not only those after the first. Nothing to read, EOF or an
        error: left for paho's reader, which meets the same condition on its own read."""
        try:
            data = super()._sock_recv(_READ_SIZE)
        except (BlockingIOError, OSError):
            return
        if data:
            self._rbuf, self._rpos = data, 0

    def _deliver_buffered(self) -> int:
        """Hand every complete QoS 0/1 PUBLISH at the head of the read buffer to `deliver`;
        stop at the first other, partial or unparsable packet. Returns how many."""
        deliver, buf, pos, v5 = self.deliver, self._rbuf, self._rpos, self._protocol == mqtt.MQTTv5
        assert deliver is not None
        handled, end = 0, len(buf)
        while pos < end:
            header = buf[pos]
            if header & 0xF0 != _PUBLISH:
                break
            read = _varint(buf, pos + 1)
            if read is None:
                break  # the remaining length is not all here (or is malformed: paho says so)
            length, i = read
            if i + length > end:
                break
            parts = split_publish(header, buf[i : i + length], v5)
            if parts is None:
                break
            pos = self._rpos = i + length
            topic, mid, payload = parts
            qos = (header >> 1) & 3
            self._call_deliver(deliver, topic, payload, qos, mid, bool(header & 1))
            if qos == 1 and not self._manual_ack:
                self._send_puback(mid)
            handled += 1
        if handled:
            with self._msgtime_mutex:
                self._last_bytes_received = mqtt.time_func()
        return handled

    def _handle_on_message(self, message: mqtt.MQTTMessage) -> None:
        """Through paho's reader (a PUBLISH `_deliver_buffered` left to it): to `deliver` too."""
        deliver = self.deliver
        if deliver is None or message.qos > 1:
            super()._handle_on_message(message)
            return
        self._call_deliver(
            deliver, bytes(message._topic), bytes(message.payload), message.qos, message.mid, message.retain
        )

    def _call_deliver(self, deliver: Deliver, topic: bytes, payload: bytes, qos: int, mid: int, retain: bool) -> None:
        """As paho calls on_message: under its callback lock, an exception logged (and raised
        unless suppress_exceptions)."""
        with self._in_callback_mutex:
            try:
                deliver(topic, payload, qos, mid, retain)
            except Exception as err:
                self._easy_log(mqtt.MQTT_LOG_ERR, "Caught exception in deliver: %s", err)
                if not self.suppress_exceptions:
                    raise

    def ack_many(self, mids: Iterable[int]) -> None:
        """PUBACK each QoS 1 packet id: one queued write and one wake-up for all of them."""
        packet = b"".join([_PUBACK.pack(_PUBACK_BYTE, 2, mid) for mid in mids])
        if packet:
            self._packet_queue(_PUBACK_BYTE, packet, 0, 1)

    def _messages_reconnect_reset_out(self) -> None:
        super()._messages_reconnect_reset_out()
        if self._max_inflight_messages <= 0:
            return
        with self._out_message_mutex:
            resend = 0
            for message in self._out_messages.values():  # insertion order = publication order
                if message.qos > 0 and message.state in (mqtt.mqtt_ms_publish, mqtt.mqtt_ms_resend_pubrel):
                    if resend < self._max_inflight_messages:
                        resend += 1
                    elif message.state == mqtt.mqtt_ms_publish:
                        message.state = mqtt.mqtt_ms_queued


def broker_password(broker: BrokerConfig) -> str | None:
    """The password from the config (environment/secrets already merged by loading) or password_file."""
    if broker.password is not None:
        return broker.password.get_secret_value()
    if broker.password_file is not None:
        try:
            return broker.password_file.read_text().rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(f"broker.password_file {broker.password_file}: {exc.strerror or exc}") from None
    return None


def tls_context(tls: TLSConfig) -> ssl.SSLContext:
    """A client context that verifies the broker unless insecure_skip_verify (warned at every start)."""
    try:
        context = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
        context.minimum_version = ssl.TLSVersion.TLSv1_3 if tls.min_version == "1.3" else ssl.TLSVersion.TLSv1_2
        if tls.cert_file is not None and tls.key_file is not None:
            context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"broker.tls: cannot load certificates: {exc}") from None
    if tls.insecure_skip_verify:
        log.warning("broker.tls.insecure_skip_verify is set: the broker's certificate and name are NOT checked")
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def make_client(broker: BrokerConfig, client_id: str, *, manual_ack: bool, max_inflight: int = 20) -> PahoClient:
    """A configured, not yet connected client (MQTT 5 or 3.1.1, TLS and credentials from the config)."""
    if broker.protocol == "5":
        client = PahoClient(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, manual_ack=manual_ack
        )
    else:
        client = PahoClient(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv311,
            clean_session=broker.session_expiry_s == 0,
            manual_ack=manual_ack,
        )
    paho_log = logging.getLogger("edgewatch.paho")
    if paho_log.isEnabledFor(logging.DEBUG):  # paho logs every failed retry at ERROR: only for -v
        client.enable_logger(paho_log)
    client.max_inflight_messages_set(max_inflight)
    # paho annotates ints, but only compares and doubles them: sub-second delays work.
    client.reconnect_delay_set(broker.reconnect_min_s, broker.reconnect_max_s)  # type: ignore[arg-type]
    if broker.username is not None:
        client.username_pw_set(broker.username, broker_password(broker))
    if broker.tls is not None:
        client.tls_set_context(tls_context(broker.tls))
    return client
