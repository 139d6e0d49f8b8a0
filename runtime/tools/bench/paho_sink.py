"""A bare paho-mqtt subscriber that does nothing but receive and acknowledge: the Python client's ceiling.

    python -m runtime.tools.bench.paho_sink PORT TOPIC EXPECT [--ours]

--ours: the client the service uses (runtime.mqtt.client.PahoClient: buffered reads, draining
read passes, its own PUBLISH path into `deliver`, TCP_NODELAY) with its acks as the service
sends them, a batch at a time from another thread (ack_many of what arrived since the last
batch): the ceiling of the service's own receive path, with nothing else to do.

Connected the way runtime.mqtt.bus connects (MQTT v5, QoS 1, manual acks, receive maximum 65,535),
it acks each message in `on_message` and counts. Whatever the service does per message comes
on top of this, so no service built on paho's network loop can receive faster: it is the
limit the end-to-end figure is compared with, beside the broker's own rate.
Prints "ready" once subscribed, then one JSON line (first/last arrival, time.monotonic).
"""

from __future__ import annotations

import json
import sys
import threading
import time


def main(argv: list[str] | None = None) -> int:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    args = argv or sys.argv[1:]
    port, topic, expect = args[:3]
    ours = "--ours" in args[3:]
    expected = int(expect)
    pending: list[int] = []
    subscribed, done = threading.Event(), threading.Event()
    state = {"count": 0, "first": 0.0, "last": 0.0}

    def on_connect(client: mqtt.Client, _u: object, _f: object, _rc: object, _p: object) -> None:
        client.subscribe(topic, qos=1)

    def on_subscribe(*_args: object) -> None:
        subscribed.set()

    def on_message(client: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        now = time.monotonic()
        if state["count"] == 0:
            state["first"] = now
        state["count"] += 1
        if ours:
            pending.append(msg.mid)  # list.append: atomic under the GIL
        else:
            client.ack(msg.mid, msg.qos)
        if state["count"] >= expected:
            state["last"] = now
            done.set()

    def deliver(_topic: bytes, _payload: bytes, _qos: int, mid: int, _retain: bool) -> None:
        now = time.monotonic()
        if state["count"] == 0:
            state["first"] = now
        state["count"] += 1
        pending.append(mid)  # list.append: atomic under the GIL
        if state["count"] >= expected:
            state["last"] = now
            done.set()

    if ours:
        from runtime.mqtt.client import PahoClient

        own = PahoClient(CallbackAPIVersion.VERSION2, client_id="bench-our-sink", protocol=mqtt.MQTTv5, manual_ack=True)
        own.deliver = deliver
        client: mqtt.Client = own
    else:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="bench-paho-sink", protocol=mqtt.MQTTv5, manual_ack=True
        )
    client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho's __init__ is unannotated
    props.ReceiveMaximum = 65535
    client.connect("127.0.0.1", int(port), keepalive=30, properties=props)
    client.loop_start()
    if not subscribed.wait(10.0):
        print(json.dumps({"error": "not subscribed"}), flush=True)
        return 1
    print("ready", flush=True)
    if ours:
        assert isinstance(client, PahoClient)
        while not done.wait(0.001):  # the worker's turn: ack what arrived, as one write
            batch, pending[:] = pending[:], []
            client.ack_many(batch)
    done.wait(300.0)
    client.loop_stop()
    client.disconnect()
    print(json.dumps({"count": state["count"], "first_at": state["first"], "done_at": state["last"]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
