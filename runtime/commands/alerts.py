"""`edgewatch alerts`: subscribe to `<prefix>/alerts/<PATTERN>` and print one line per alert.

By default a readable table; `--json` prints each alert's JSON on one line (for jq and
scripts). `--count N` exits 0 after N alerts, `--timeout S` exits after S seconds (1 if
`--count` was not reached by then), so tests and scripts never hang. `--stream` is an MQTT
filter relative to the alert root: `L1/+`, `L1/press-3`, `#` (the default).

`--open` instead lists the streams that have an alert open now, from the retained statuses on
`<prefix>/status/<stream>` (a stream's status is `alert` exactly while its alert is open), and
exits: the broker hands the retained statuses over at once, so it waits until none came for
`--quiet` seconds (default 1), at most `--timeout` (default 10).
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
    severity: str = ""
    """Schema version 2 (runtime.engine.alerts); "" in older alerts."""


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
        severity=str(doc.get("severity", "")),
    )


def format_alert(alert: AlertLine) -> str:
    when = datetime.fromtimestamp(alert.ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:23]
    score = f"{alert.score:9.3f}" if math.isfinite(alert.score) else f"{alert.score!s:>9}"
    top = ", ".join(f"{name} {value:.2f}" for name, value in alert.top)
    return (
        f"{when:<23} {alert.state.upper():<8} {alert.stream:<24} {score} {alert.threshold:8.3f}  "
        f"{alert.severity + '  ' if alert.severity else ''}{top + '  ' if top else ''}id {alert.id[:16]}"
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
    p.add_argument("--open", action="store_true", help="list the streams with an open alert now (retained statuses)")
    p.add_argument("--quiet", type=float, default=1.0, help="--open: seconds without a new status before listing")
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
    topics = OutputTopics(prefix)
    try:
        topic = validate_topic_filter((topics.status if args.open else topics.alert)(args.stream))
    except ValueError as exc:
        raise ConfigError(f"--stream: {exc}") from None
    inbox: queue.Queue[tuple[str, bytes]] = queue.Queue()
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
    client.on_message = lambda _c, _u, msg: inbox.put((msg.topic, bytes(msg.payload)))
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
        if args.open:
            statuses = _retained_statuses(inbox, len(topics.status("")), args.quiet, args.timeout or 10.0)
            return _print_open(statuses, out, as_json=args.json)
        if not args.json:
            print(_HEADER, file=out, flush=True)
        return _print_alerts(inbox, out, args, deadline)
    finally:
        client.disconnect()
        client.loop_stop()


def _retained_statuses(
    inbox: queue.Queue[tuple[str, bytes]], root: int, quiet: float, timeout: float
) -> dict[str, str]:
    """stream → status, from what arrives until nothing did for `quiet` s (at most `timeout` s).
    root: the length of `<prefix>/status/`. An empty payload (a status removed) removes the stream."""
    statuses: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            topic, payload = inbox.get(timeout=min(quiet, left))
        except queue.Empty:
            break
        stream = topic[root:]
        if payload:
            statuses[stream] = payload.decode("utf-8", "replace")
        else:
            statuses.pop(stream, None)
    return statuses


def _print_open(statuses: dict[str, str], out: TextIO, *, as_json: bool) -> int:
    """The streams whose status is `alert`, sorted; a count of every status after them."""
    open_streams = sorted(s for s, status in statuses.items() if status == "alert")
    for stream in open_streams:
        line = json.dumps({"stream": stream, "status": "alert"}) if as_json else stream
        print(line, file=out, flush=True)
    if not as_json:
        counts: dict[str, int] = {}
        for status in statuses.values():
            counts[status] = counts.get(status, 0) + 1
        summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "no stream status retained"
        print(f"{len(open_streams)} open alert(s); streams: {summary}", file=out, flush=True)
    return 0


def _print_alerts(
    inbox: queue.Queue[tuple[str, bytes]], out: TextIO, args: argparse.Namespace, deadline: float | None
) -> int:
    shown = 0
    while args.count is None or shown < args.count:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            return 1 if args.count is not None else 0
        try:
            _topic, payload = inbox.get(timeout=left if left is not None else 1.0)
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
