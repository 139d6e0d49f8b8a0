from __future__ import annotations

import logging
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from edge_config.schema import BrokerConfig, TLSConfig
from runtime.mqtt.bus import Bus
from runtime.mqtt.delivery import Delivery
from runtime.mqtt.protocol import OutboxLimits
from runtime.tools.local_broker import Broker, BrokerTLS, free_port, start_broker
from tests.support.mqtt_helpers import Collector, publish_many, raw_publish, wait_retained
from tests.support.tls_material import TLSMaterial, make_tls_material

pytestmark = pytest.mark.mqtt
REPO = Path(__file__).resolve().parents[2]


def _config(broker: Broker | None = None, *, port: int | None = None, **kw: object) -> BrokerConfig:
    base = {
        "host": "127.0.0.1",
        "port": port or (broker.port if broker else 1),
        "reconnect_min_s": 0.1,
        "reconnect_max_s": 0.5,
        "client_id": "bus-test",
    }
    return BrokerConfig(**{**base, **kw})


class Sink:
    def __init__(self) -> None:
        self.items: list[Delivery] = []
        self.event = threading.Condition()

    def __call__(self, inbound: Delivery) -> None:
        with self.event:
            self.items.append(inbound)
            self.event.notify_all()

    def wait(self, n: int, timeout: float = 10.0) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        with self.event:
            while len(self.items) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(self.items)} of {n} messages")
                self.event.wait(left)
            return list(self.items)


def _bus(config: BrokerConfig, sink: Sink, subs: list[tuple[str, int]] | None = None, **kw: object) -> Bus:
    return Bus(config, prefix="t", subscriptions=subs if subs is not None else [("in/#", 1)], on_message=sink, **kw)


def test_availability_online_then_stopped(broker: Broker) -> None:
    bus = _bus(_config(broker), Sink())
    bus.start()
    try:
        assert bus.wait_connected(10)
        wait_retained(broker, "t/available", b"online")
    finally:
        bus.stop()
    wait_retained(broker, "t/available", b"stopped")
    assert not bus.connected


def test_last_will_offline_when_the_process_is_killed(broker: Broker) -> None:
    script = textwrap.dedent(f"""
        import time
        from edge_config.schema import BrokerConfig
        from runtime.mqtt.bus import Bus
        bus = Bus(BrokerConfig(host="127.0.0.1", port={broker.port}, client_id="victim"), prefix="t",
                  subscriptions=[], on_message=lambda m: None)
        bus.start()
        assert bus.wait_connected(10)
        print("ready", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        wait_retained(broker, "t/available", b"online")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        wait_retained(broker, "t/available", b"offline")
    finally:
        proc.kill()
        proc.wait(10)


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_unacked_messages_are_redelivered_to_the_next_session(broker: Broker, protocol: str) -> None:
    sink = Sink()
    bus = _bus(_config(broker, protocol=protocol), sink)
    bus.start()
    assert bus.wait_connected(10)
    time.sleep(0.2)  # SUBACK
    publish_many(broker, [(f"in/{i}", b"%d" % i) for i in range(3)])
    first = sink.wait(3)
    bus.ack(first[0])  # only the first is processed before the "crash"
    bus.stop()

    sink2 = Sink()
    bus2 = _bus(_config(broker, protocol=protocol), sink2)
    bus2.start()
    try:
        again = sink2.wait(2)
        time.sleep(0.3)
        assert sorted(m.payload for m in sink2.items) == [b"1", b"2"]
        assert all(m.topic and m.topic.startswith("in/") for m in again)
        for m in again:
            bus2.ack(m)
    finally:
        bus2.stop()


def test_a_raising_handler_does_not_kill_the_network_thread(broker: Broker) -> None:
    seen: list[bytes] = []

    def handler(inbound: Delivery) -> None:
        seen.append(inbound.payload)
        if inbound.payload == b"boom":
            raise RecursionError("what json.loads does on deep nesting")

    bus = Bus(_config(broker), prefix="t", subscriptions=[("in/#", 1)], on_message=handler)
    bus.start()
    try:
        assert bus.wait_connected(10)
        time.sleep(0.2)
        publish_many(broker, [("in/a", b"boom"), ("in/a", b"fine")])
        deadline = time.monotonic() + 10
        while len(seen) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert seen == [b"boom", b"fine"]
        assert bus.snapshot().handler_errors == 1
    finally:
        bus.stop()


def test_non_utf8_topic_reaches_the_handler_as_none() -> None:
    sink = Sink()
    bus = _bus(_config(port=free_port()), sink)  # never started: the callback is called directly
    bus._deliver(b"in/\xff\xfe", b"{}", 0, 7, False)
    assert sink.items[0].topic is None
    assert sink.items[0].raw_topic == b"in/\xff\xfe"
    assert bus.snapshot().handler_errors == 0


def test_mosquitto_refuses_non_utf8_topics_and_the_bus_keeps_receiving(broker: Broker) -> None:
    sink = Sink()
    bus = _bus(_config(broker), sink)
    bus.start()
    try:
        assert bus.wait_connected(10)
        time.sleep(0.2)
        assert raw_publish(broker, b"in/\xff\xfe", b"x") == b""  # the broker closes the publisher
        publish_many(broker, [("in/ok", b"ok")])
        assert [m.payload for m in sink.wait(1)] == [b"ok"]
    finally:
        bus.stop()


def test_outbox_is_bounded_with_exact_counts_and_drains_after_connecting(tmp_path: Path) -> None:
    port = free_port()  # nothing listens yet: every publication waits in the outbox
    bus = _bus(_config(port=port), Sink(), subs=[], limits=OutboxLimits(max_messages=10, max_bytes=10_000))
    bus.start()
    accepted = sum(bus.publish("t/alerts/x", b"a" * 100, qos=1, urgent=True) for _ in range(25))
    assert accepted == 10
    counters = bus.snapshot()
    assert counters.dropped_outgoing == 15
    assert counters.dropped_outgoing_bytes == 15 * (100 + len("t/alerts/x"))
    assert bus.outbox_messages == 10
    assert bus.outbox_bytes == 10 * 110

    broker = Broker("127.0.0.1", port, tmp_path)
    collector: Collector | None = None
    try:
        broker.start()
        collector = Collector(broker, "t/alerts/#")
        assert bus.wait_connected(10)
        assert bus.flush(10)
        assert bus.outbox_bytes == 0
        assert bus.outbox_messages == 0
    finally:
        bus.stop()
        if collector:
            collector.close()
        broker.stop()


def test_outbox_byte_bound(broker: Broker) -> None:
    bus = _bus(_config(port=free_port()), Sink(), subs=[], limits=OutboxLimits(max_messages=1000, max_bytes=1024))
    bus.start()
    try:
        results = [bus.publish("x", b"b" * 299, qos=1, urgent=True) for _ in range(5)]  # 300 bytes each with the topic
        assert results == [True, True, True, False, False]
        assert bus.snapshot().dropped_outgoing_bytes == 600
    finally:
        bus.stop()


def test_refused_connack_logs_once_retries_and_never_reports_connected(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pwfile = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(pwfile), "gw", "right"], check=True, capture_output=True)
    broker = start_broker(tmp_path / "b", extra_conf=f"allow_anonymous false\npassword_file {pwfile}\n")
    caplog.set_level(logging.INFO, logger="edgewatch.bus")
    bad = _bus(_config(broker, username="gw", password="wrong"), Sink())
    good = _bus(_config(broker, username="gw", password="right", client_id="good"), Sink())
    try:
        bad.start()
        deadline = time.monotonic() + 10
        while bad.snapshot().connect_failures < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert bad.snapshot().connect_failures >= 3  # it keeps retrying
        assert not bad.connected
        assert bad.snapshot().connects == 0
        refusals = [r for r in caplog.records if "refused" in r.getMessage()]
        assert len(refusals) == 1
        assert "Not authorized" in refusals[0].getMessage()
        good.start()
        assert good.wait_connected(10)
    finally:
        bad.stop()
        good.stop()
        broker.stop()


# --- TLS -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TLSMaterial:
    return make_tls_material(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def tls_broker(tmp_path: Path, pki: TLSMaterial) -> Iterator[Broker]:
    b = start_broker(
        tmp_path / "tls-broker", tls=BrokerTLS(pki.server.cert, pki.server.key, pki.ca.cert, require_certificate=True)
    )
    yield b
    b.stop()


def _wait_failures(bus: Bus, n: int = 2, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while bus.snapshot().connect_failures < n and time.monotonic() < deadline:
        time.sleep(0.05)


def test_mutual_tls_connects(tls_broker: Broker, pki: TLSMaterial) -> None:
    tls = TLSConfig(ca_file=pki.ca.cert, cert_file=pki.client.cert, key_file=pki.client.key)
    bus = _bus(_config(tls_broker, tls=tls), Sink())
    bus.start()
    try:
        assert bus.wait_connected(10)
    finally:
        bus.stop()


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("wrong-ca", "CERTIFICATE_VERIFY_FAILED"),
        ("no-client-cert", "client certificate"),
        ("foreign-client-cert", ""),
        ("plaintext", "TLS-only port"),
    ],
)
def test_tls_negatives_are_refused_logged_and_retried(
    tls_broker: Broker, pki: TLSMaterial, caplog: pytest.LogCaptureFixture, case: str, expected: str
) -> None:
    tls = {
        "wrong-ca": TLSConfig(ca_file=pki.other_ca.cert, cert_file=pki.client.cert, key_file=pki.client.key),
        "no-client-cert": TLSConfig(ca_file=pki.ca.cert),
        "foreign-client-cert": TLSConfig(
            ca_file=pki.ca.cert, cert_file=pki.other_client.cert, key_file=pki.other_client.key
        ),
        "plaintext": None,
    }[case]
    caplog.set_level(logging.INFO, logger="edgewatch.bus")
    bus = _bus(_config(tls_broker, tls=tls), Sink())
    bus.start()
    try:
        _wait_failures(bus, 2)
        assert bus.snapshot().connect_failures >= 2
        assert not bus.connected
        assert bus.snapshot().connects == 0
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert errors
        assert expected in errors[0]
        assert len(errors) <= 2  # one line per distinct reason, not one per retry
    finally:
        bus.stop()


def test_insecure_skip_verify_is_warned_at_start(
    tls_broker: Broker, pki: TLSMaterial, caplog: pytest.LogCaptureFixture
) -> None:
    tls = TLSConfig(
        ca_file=pki.other_ca.cert, cert_file=pki.client.cert, key_file=pki.client.key, insecure_skip_verify=True
    )
    caplog.set_level(logging.WARNING, logger="edgewatch.bus")
    bus = _bus(_config(tls_broker, tls=tls), Sink())
    bus.start()
    try:
        assert bus.wait_connected(10)  # the wrong CA is accepted, but loudly
        assert any("NOT checked" in r.getMessage() for r in caplog.records)
    finally:
        bus.stop()


def test_after_reconnecting_the_outbox_is_resent_at_the_inflight_limit(tmp_path: Path) -> None:
    port = free_port()
    bus = _bus(_config(port=port), Sink(), subs=[], limits=OutboxLimits(max_messages=100, max_inflight=3))
    client = bus._client
    outstanding, peak = [0], [0]
    send, on_publish = client._send_publish, client.on_publish

    def counting_send(mid: int, topic: bytes, payload: bytes = b"", qos: int = 0, *a: object, **k: object) -> object:
        rc = send(mid, topic, payload, qos, *a, **k)
        if qos == 1 and topic == b"t/x" and rc == 0:
            outstanding[0] += 1
            peak[0] = max(peak[0], outstanding[0])
        return rc

    def counting_ack(c: mqtt.Client, u: object, mid: int, *a: object) -> None:
        outstanding[0] -= 1 if mid in bus._outbox.pending else 0
        on_publish(c, u, mid, *a)

    client._send_publish = counting_send  # type: ignore[method-assign]
    client.on_publish = counting_ack
    bus.start()
    for i in range(40):  # queued while nothing listens
        assert bus.publish("t/x", b"%d" % i, qos=1)
    broker = Broker("127.0.0.1", port, tmp_path)
    collector: Collector | None = None
    try:
        broker.start()
        collector = Collector(broker, "t/x")
        assert bus.wait_connected(10)
        assert bus.flush(10)
        assert 1 <= peak[0] <= 3  # never more than max_inflight unacknowledged, not all 40 at once
        collector.wait_for(lambda m: len(m) == 40)
        assert [int(m.payload) for m in collector.messages] == list(range(40))
    finally:
        bus.stop()
        if collector:
            collector.close()
        broker.stop()


def test_resubscribes_after_the_broker_lost_the_session(broker: Broker) -> None:
    sink = Sink()
    bus = _bus(_config(broker), sink)
    bus.start()
    try:
        assert bus.wait_connected(10)
        broker.restart()  # no persistence: the broker forgets our session and subscriptions
        deadline = time.monotonic() + 10
        while bus.snapshot().connects < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert bus.snapshot().connects == 2
        assert bus.snapshot().disconnects == 1
        time.sleep(0.3)  # SUBACK
        publish_many(broker, [("in/after", b"x")])
        assert [m.topic for m in sink.wait(1)] == ["in/after"]
    finally:
        bus.stop()


def test_statuses_give_way_to_alerts_and_every_drop_is_logged_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = _bus(_config(port=free_port()), Sink(), subs=[], limits=OutboxLimits(max_messages=8, max_bytes=100_000))
    bus.start()  # nothing listens: every publication stays in the outbox
    try:
        with caplog.at_level(logging.WARNING, logger="edgewatch.bus"):
            statuses = [bus.publish(f"t/status/s{i}", b"ok", qos=1, retain=True) for i in range(10)]
            alerts = [bus.publish(f"t/alerts/s{i}", b"{}", qos=1, urgent=True) for i in range(4)]
        assert statuses == [True] * 6 + [False] * 4  # 75 % of 8: the rest is kept for alerts
        assert alerts == [True, True, False, False]
        counts = bus.snapshot()
        assert (counts.dropped_outgoing, counts.dropped_urgent) == (6, 2)
        lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("outbox full")]
        assert len(lines) == 1  # the first drop at once, the next ones in a line a minute later
        assert "0 alert/availability and 1 status/stats publications dropped" in lines[0]
    finally:
        bus.stop(timeout=0.1)


def test_a_clean_stop_with_a_persistent_session_keeps_the_subscriptions(broker: Broker) -> None:
    sink = Sink()
    bus = _bus(_config(broker, session_expiry_s=600), sink)
    bus.start()
    try:
        assert bus.wait_connected(10)
        time.sleep(0.3)  # SUBACK
        assert bus.stop_input() is False  # no unsubscribe: the session keeps collecting input
    finally:
        bus.stop()
    publish_many(broker, [("in/a", b"while stopped")])
    sink = Sink()
    again = _bus(_config(broker, session_expiry_s=600), sink)
    again.start()
    try:
        assert [m.payload for m in sink.wait(1)] == [b"while stopped"]
    finally:
        again.stop()


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_every_publish_arrives_whole_through_the_clients_own_path(broker: Broker, protocol: str) -> None:
    """Many small publications (several per read: PahoClient splits them itself), some with MQTT 5
    properties (skipped), QoS 0 and 1, and payloads larger than one read (paho's own reader)."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    sink = Sink()
    bus = _bus(_config(broker, protocol=protocol), sink)
    split_by_us: list[int] = []
    ours = bus._client._deliver_buffered

    def counted() -> int:
        split_by_us.append(ours())
        return split_by_us[-1]

    bus._client._deliver_buffered = counted  # type: ignore[method-assign]
    bus.start()
    sender = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="sender", protocol=mqtt.MQTTv5)
    sender.connect(broker.host, broker.port)
    sender.loop_start()
    try:
        assert bus.wait_connected(10)
        time.sleep(0.2)  # SUBACK
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.ContentType = "application/json"
        props.UserProperty = [("line", "7"), ("shift", "night")]
        props.MessageExpiryInterval = 3600
        expected = []
        for i in range(600):
            payload = (b"x" * 100_000 + b"%d" % i) if i % 97 == 5 else b'{"values":[%d]}' % i
            qos = i % 2
            expected.append((f"in/m{i % 7}", payload, qos))
            info = sender.publish(f"in/m{i % 7}", payload, qos=qos, properties=props if i % 3 == 0 else None)
            if i % 50 == 49:
                info.wait_for_publish(10)
        acked, deadline = 0, time.monotonic() + 30
        while acked < len(expected) and time.monotonic() < deadline:  # ack as the worker would
            for d in list(sink.items[acked:]):
                bus.ack(d)
                acked += 1
            time.sleep(0.01)
        got = sink.items
        for qos in (0, 1):  # the sender holds QoS 1 back at its in-flight limit, QoS 0 not: order is per QoS
            assert [(d.topic, d.payload) for d in got if d.qos == qos] == [(t, p) for t, p, q in expected if q == qos]
        assert len(got) == len(expected)
        assert 0 < sum(split_by_us) < len(expected)  # both paths ran: ours, and paho's for the rest
        assert bus.snapshot().handler_errors == 0
    finally:
        sender.loop_stop()
        sender.disconnect()
        bus.stop()
