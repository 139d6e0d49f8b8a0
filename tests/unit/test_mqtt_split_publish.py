"""PahoClient's own PUBLISH parsing (runtime.mqtt.client.split_publish) against packets paho builds."""

from __future__ import annotations

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from runtime.mqtt.client import split_publish


def _body(topic: bytes, payload: bytes, qos: int, mid: int, props: bytes | None) -> bytes:
    body = len(topic).to_bytes(2, "big") + topic
    if qos:
        body += mid.to_bytes(2, "big")
    if props is not None:
        body += props
    return body + payload


def _props(big: bool) -> bytes:
    p = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    p.ContentType = "application/json"
    p.UserProperty = [("k" * (200 if big else 1), "v")]  # big: a property length of 2 bytes
    packed: bytes = p.pack()  # type: ignore[no-untyped-call]
    return packed


@pytest.mark.parametrize("qos", [0, 1])
@pytest.mark.parametrize("props", [None, b"\x00", "small", "big"])
def test_topic_mid_and_payload_come_back(qos: int, props: str | bytes | None) -> None:
    v5 = props is not None
    packed = _props(props == "big") if isinstance(props, str) else props
    if isinstance(props, str):
        assert (len(packed) > 128) == (props == "big")
    body = _body(b"plant/l1/m2/telemetry", b'{"values":[1,2]}', qos, 513, packed)
    expected = (b"plant/l1/m2/telemetry", 513 if qos else 0, b'{"values":[1,2]}')
    assert split_publish(0x30 | qos << 1, body, v5) == expected


def test_an_empty_payload_and_an_empty_v5_topic() -> None:
    assert split_publish(0x32, _body(b"a/b", b"", 1, 1, b"\x00"), True) == (b"a/b", 1, b"")
    assert split_publish(0x30, _body(b"", b"x", 0, 0, b"\x00"), True) == (b"", 0, b"x")


@pytest.mark.parametrize(
    ("header", "body", "v5"),
    [
        (0x34, _body(b"a", b"x", 2, 1, None), False),  # QoS 2: paho's reader
        (0x30, _body(b"", b"x", 0, 0, None), False),  # MQTT 3: an empty topic is malformed
        (0x30, b"\x00", False),  # no topic length
        (0x30, b"\x00\x09abc", False),  # topic longer than the packet
        (0x32, b"\x00\x01a\x00", False),  # packet id cut short
        (0x30, b"\x00\x01a\x05\x00", True),  # properties longer than the packet
        (0x30, b"\x00\x01a\xff\xff\xff\xff\x01", True),  # a property length of 5 bytes
        (0x30, b"\x00\x01a", True),  # no property length at all
    ],
)
def test_what_does_not_parse_is_left_to_paho(header: int, body: bytes, v5: bool) -> None:
    assert split_publish(header, body, v5) is None
