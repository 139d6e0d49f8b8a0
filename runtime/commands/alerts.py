"""`edgewatch alerts`: subscribe to `<prefix>/alerts/<PATTERN>` and print one line per alert.

By default a readable table; `--json` prints each alert's JSON on one line (for jq and
scripts). `--count N` exits 0 after N alerts, `--timeout S` exits after S seconds (1 if
`--count` was not reached by then), so tests and scripts never hang. `--stream` is an MQTT
filter relative to the alert root: `L1/+`, `L1/press-3`, `#` (the default).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import queue
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

from edge_config.errors import BusError, ConfigError
from edge_config.schema import BrokerConfig, validate_topic_filter
from runtime.mqtt.topics import OutputTopics

log = logging.getLogger("edgewatch.alerts")
_HEADER = f"{'time (UTC)':<23} {'state':<8} {'stream':<24} {'score':>9} {'thresh':>8}  top features / id"


@dataclass(frozen=True)
class AlertLine:
    """The fields of an alert message that a person reads; the JSON is kept for --json."""

    stream: str
    state: str
    score: float
    threshold: float
    ts: float
    id: str
    top: tuple[tuple[str, float], ...]
    raw: str


def parse_alert(payload: bytes) -> AlertLine:
    """Parse an alert message (runtime.engine.alerts.Alert.to_json); ValueError/KeyError/TypeError if it is not one."""
    doc = json.loads(payload.decode("utf-8"))
    if not isinstance(doc, dict):
        raise TypeError("not a JSON object")
    top_raw = doc.get("top_features") or []
    pairs = top_raw.items() if isinstance(top_raw, dict) else top_raw
    top = []
    for item in pairs:
        if isinstance(item, dict):  # runtime.engine.alerts: {"feature": name, "contribution": share}
            item = (item["feature"], item["contribution"])
        name, value = item
        top.append((str(name), float(value)))
    return AlertLine(
        stream=str(doc["stream"]),
        state=str(doc["state"]),
        score=float(doc["score"]),
        threshold=float(doc["threshold"]),
        ts=float(doc["ts"]),
        id=str(doc["id"]),
        top=tuple(top),
        raw=json.dumps(doc, separators=(",", ":"), sort_keys=False),
    )


def format_alert(alert: AlertLine) -> str:
    when = datetime.fromtimestamp(alert.ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:23]
    score = f"{alert.score:9.3f}" if math.isfinite(alert.score) else f"{alert.score!s:>9}"
    top = ", ".join(f"{name} {value:.2f}" for name, value in alert.top)
    return (
        f"{when:<23} {alert.state.upper():<8} {alert.stream:<24} {score} {alert.threshold:8.3f}  "
        f"{top + '  ' if top else ''}id {alert.id[:16]}"
    )


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("alerts", help="print alerts as they are published")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--config", type=Path, help="gateway config: broker, TLS, credentials and prefix")
    source.add_argument("--broker", help="HOST:PORT (plain MQTT, anonymous)")
    p.add_argument("--prefix", help="topic prefix (default: the config's, or edgewatch)")
    p.add_argument("--stream", default="#", help="MQTT filter below <prefix>/alerts/ (default #)")
    p.add_argument("--json", action="store_true", help="one JSON alert per line")
    p.add_argument("--count", type=int, help="exit after this many alerts")
    p.add_argument("--timeout", type=float, help="exit after this many seconds (status 1 if --count not reached)")
    p.set_defaults(func=run)


def _broker_and_prefix(args: argparse.Namespace) -> tuple[BrokerConfig, str]:
    from runtime.ops.metrics import parse_address

    if args.config is not None:
        from edge_config.loading import load_config

        config = load_config(args.config)
        return config.broker, args.prefix or config.runtime.topic_prefix
    host, port = parse_address(args.broker or "127.0.0.1:1883")
    return BrokerConfig(host=host, port=port), args.prefix or "edgewatch"


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    import paho.mqtt.client as mqtt

    from runtime.mqtt.client import make_client

    out = out or sys.stdout
    if args.count is not None and args.count < 1:
        raise ConfigError("--count must be >= 1")
    broker, prefix = _broker_and_prefix(args)
    try:
        topic = validate_topic_filter(OutputTopics(prefix).alert(args.stream))
    except ValueError as exc:
        raise ConfigError(f"--stream: {exc}") from None
    inbox: queue.Queue[bytes] = queue.Queue()
    subscribed: queue.Queue[str] = queue.Queue()

    def on_connect(client: mqtt.Client, _u: object, _f: object, reason: object, _p: object) -> None:
        if getattr(reason, "is_failure", False):
            subscribed.put(f"the broker refused the connection: {reason}")
        else:
            client.subscribe(topic, qos=1)

    # A throw-away session: nothing should wait for this viewer while it is gone.
    client = make_client(broker.model_copy(update={"session_expiry_s": 0}), "", manual_ack=False)
    client.on_connect = on_connect
    client.on_subscribe = lambda *a: subscribed.put("")
    client.on_message = lambda _c, _u, msg: inbox.put(bytes(msg.payload))
    try:
        client.connect(broker.host, broker.port, keepalive=broker.keepalive_s)
    except OSError as exc:
        raise BusError(f"cannot connect to {broker.host}:{broker.port}: {exc}") from None
    client.loop_start()
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    try:
        try:
            problem = subscribed.get(timeout=10 if deadline is None else max(0.1, min(10, args.timeout)))
        except queue.Empty:
            raise BusError(f"no subscription to {topic} within 10s") from None
        if problem:
            raise BusError(problem)
        if not args.json:
            print(_HEADER, file=out, flush=True)
        return _print_alerts(inbox, out, args, deadline)
    finally:
        client.disconnect()
        client.loop_stop()


def _print_alerts(inbox: queue.Queue[bytes], out: TextIO, args: argparse.Namespace, deadline: float | None) -> int:
    shown = 0
    while args.count is None or shown < args.count:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            return 1 if args.count is not None else 0
        try:
            payload = inbox.get(timeout=left if left is not None else 1.0)
        except queue.Empty:
            continue
        try:
            alert = parse_alert(payload)
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            print(f"edgewatch alerts: skipped a message that is not an alert: {exc}", file=sys.stderr)
            continue
        print(alert.raw if args.json else format_alert(alert), file=out, flush=True)
        shown += 1
    return 0
