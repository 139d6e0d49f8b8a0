"""A stream-id flood: many one-message streams, QoS 0, at a fixed rate, from its own process.

    python -m tests.support.flood --port P --count 6000 --rate 3000 [--prefix flood]

publishes `plant/<prefix><i>/telemetry` = {"seq": 0, "values": [0, 0, 0]} for i < count (each a
new stream id for the gateway: a `warming-up` status each) and prints one JSON line: published,
seconds. Only 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

PAYLOAD = json.dumps({"seq": 0, "values": [0.0, 0.0, 0.0]}).encode()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, default=6000)
    parser.add_argument("--rate", type=float, default=3000.0)
    parser.add_argument("--prefix", default="flood")
    args = parser.parse_args(argv)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", args.port)
    client.loop_start()
    started = time.monotonic()
    chunk = max(1, round(args.rate * 0.01))
    try:
        for i in range(0, args.count, chunk):
            delay = started + i / args.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            for k in range(i, min(i + chunk, args.count)):
                client.publish(f"plant/{args.prefix}{k:06d}/telemetry", PAYLOAD, qos=0)
        seconds = time.monotonic() - started
        time.sleep(0.5)  # let paho write what it holds
    finally:
        client.disconnect()
        client.loop_stop()
    print(json.dumps({"published": args.count, "seconds": round(seconds, 2)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
