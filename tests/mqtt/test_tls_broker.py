"""The TLS test material works against a real mosquitto: the right CA and client certificate
connect and carry messages; a wrong CA, a wrong server name, a missing or foreign client
certificate, and plaintext to the TLS port are all refused.

These prove the fixtures; the daemon-level TLS negatives (one clear log line, retry without
crashing) build on them once the service is integrated.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytest.importorskip("cryptography", reason="TLS test material needs `cryptography` (the dev extra)")

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from runtime.tools.local_broker import Broker, BrokerTLS, start_broker
from tests.support.tls_material import CertPair, TLSMaterial, make_tls_material

pytestmark = pytest.mark.mqtt

TIMEOUT_S = 5.0


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> TLSMaterial:
    return make_tls_material(tmp_path_factory.mktemp("tls"))


def _broker(directory: Path, server: CertPair, material: TLSMaterial, *, mutual: bool) -> Iterator[Broker]:
    broker = start_broker(
        directory, tls=BrokerTLS(server.cert, server.key, material.ca.cert, require_certificate=mutual)
    )
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="module")
def mtls_broker(material: TLSMaterial, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    yield from _broker(tmp_path_factory.mktemp("mtls"), material.server, material, mutual=True)


@pytest.fixture(scope="module")
def tls_broker(material: TLSMaterial, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    yield from _broker(tmp_path_factory.mktemp("tls-only"), material.server, material, mutual=False)


def client_context(ca: Path, client: CertPair | None = None) -> ssl.SSLContext:
    """What a careful client does: verify the chain and the host name, offer a certificate if given."""
    context = ssl.create_default_context(cafile=str(ca))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if client is not None:
        context.load_cert_chain(str(client.cert), str(client.key))
    return context


@dataclass
class Attempt:
    connected: bool = False
    error: str = ""
    """Why not: the exception from connect(), or the disconnect paho saw before any CONNACK."""
    log: list[str] = field(default_factory=list)


def attempt(broker: Broker, context: ssl.SSLContext | None, *, round_trip: bool = False) -> Attempt:
    """Connect once (MQTT 5) and, if asked, publish and receive one QoS 1 message; bounded in time."""
    result = Attempt()
    done, received = threading.Event(), threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.on_log = lambda _c, _u, _level, text: result.log.append(text)

    def on_connect(c: mqtt.Client, _u: object, _f: object, reason: mqtt.ReasonCode, _p: object) -> None:
        result.connected = not reason.is_failure
        result.error = "" if result.connected else f"CONNACK {reason}"
        if result.connected and round_trip:
            c.subscribe("tls/test", qos=1)
        done.set()

    def on_disconnect(_c: mqtt.Client, _u: object, _f: object, reason: mqtt.ReasonCode, _p: object) -> None:
        if not result.connected and not result.error:
            result.error = f"disconnected before CONNACK ({reason})"
        done.set()

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    client.on_subscribe = lambda c, *_a: c.publish("tls/test", b"over tls", qos=1)
    client.on_message = lambda _c, _u, msg: received.set() if msg.payload == b"over tls" else None
    if context is not None:
        client.tls_set_context(context)
    try:
        client.connect(broker.host, broker.port, keepalive=10)
    except (ssl.SSLError, OSError) as exc:  # the handshake runs inside connect()
        result.error = f"{type(exc).__name__}: {exc}"
        return result
    client.loop_start()
    try:
        if not done.wait(TIMEOUT_S):
            result.error = result.error or f"no CONNACK within {TIMEOUT_S}s"
        if result.connected and round_trip and not received.wait(TIMEOUT_S):
            result.error = "connected but the message did not come back"
    finally:
        client.disconnect()
        client.loop_stop()
    return result


def test_mutual_tls_with_the_right_ca_and_client_certificate(mtls_broker: Broker, material: TLSMaterial) -> None:
    result = attempt(mtls_broker, client_context(material.ca.cert, material.client), round_trip=True)
    assert result.connected, (result.error, result.log[-5:])
    assert not result.error, (result.error, result.log[-5:])


def test_server_only_tls_verifies_the_ip_san(tls_broker: Broker, material: TLSMaterial) -> None:
    result = attempt(tls_broker, client_context(material.ca.cert), round_trip=True)
    assert result.connected, (result.error, result.log[-5:])
    assert not result.error, (result.error, result.log[-5:])


def test_wrong_ca_is_refused_by_the_client(mtls_broker: Broker, material: TLSMaterial) -> None:
    result = attempt(mtls_broker, client_context(material.other_ca.cert, material.client))
    assert not result.connected
    assert "CERTIFICATE_VERIFY_FAILED" in result.error, result.error


def test_wrong_server_name_is_refused_by_the_client(material: TLSMaterial, tmp_path: Path) -> None:
    for broker in _broker(tmp_path / "b", material.wrong_name, material, mutual=False):
        result = attempt(broker, client_context(material.ca.cert))
        assert not result.connected
        assert "IP address mismatch" in result.error, result.error


def test_missing_client_certificate_is_refused_by_the_broker(mtls_broker: Broker, material: TLSMaterial) -> None:
    result = attempt(mtls_broker, client_context(material.ca.cert))
    assert not result.connected, (result.error, result.log[-5:])
    assert "before CONNACK" in result.error, (result.error, result.log[-5:])
    # the broker refused this client only: a good one still gets in
    assert attempt(mtls_broker, client_context(material.ca.cert, material.client)).connected


def test_client_certificate_of_another_ca_is_refused(mtls_broker: Broker, material: TLSMaterial) -> None:
    result = attempt(mtls_broker, client_context(material.ca.cert, material.other_client))
    assert not result.connected, (result.error, result.log[-5:])
    assert "before CONNACK" in result.error, (result.error, result.log[-5:])


def test_plaintext_to_the_tls_port_is_refused(tls_broker: Broker) -> None:
    started = time.monotonic()
    result = attempt(tls_broker, None)
    assert not result.connected, (result.error, result.log[-5:])
    assert "before CONNACK" in result.error, (result.error, result.log[-5:])
    assert time.monotonic() - started < TIMEOUT_S  # closed by the broker, not timed out


def test_tls_to_a_plaintext_port_fails(broker: Broker, material: TLSMaterial) -> None:
    result = attempt(broker, client_context(material.ca.cert))
    assert not result.connected
    assert result.error
