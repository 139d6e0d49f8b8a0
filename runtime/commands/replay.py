"""`edgewatch replay CSV --broker HOST:PORT --topic T`: publish a CSV file as one sensor stream.

Each row is a sample `{"seq": n, "ts": t, "values": [...]}` (or `--chunk N` rows per message,
`"values": [[...], ...]`). The separator (';' or ',') is taken from the header line. Without
`--columns`, every column whose values are all numbers is sent, in file order; a column named
datetime/timestamp/time/ts (or `--ts-column`) becomes `ts` when it parses as epoch seconds or
an ISO 8601 date, otherwise the send time is used. `--rate 0` publishes as fast as the broker
confirms QoS 1 (a window of in-flight publications), for tests and benchmarks.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from edge_config.errors import BusError, ConfigError

if TYPE_CHECKING:
    from paho.mqtt.client import MQTTMessageInfo

log = logging.getLogger("edgewatch.replay")
_TS_NAMES = ("datetime", "timestamp", "time", "ts")
_WINDOW = 500  # QoS 1 publications awaiting PUBACK before --rate 0 waits


@dataclass(frozen=True)
class CsvStream:
    columns: tuple[str, ...]
    rows: tuple[tuple[float, ...], ...]
    ts: tuple[float, ...] | None  # seconds since the epoch, one per row


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _timestamp(text: str) -> float | None:
    value = _number(text)
    if value is not None:
        return value
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if moment.tzinfo is None:  # a CSV without a zone: read as UTC so replays are reproducible
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def read_csv(path: Path, columns: list[str] | None = None, ts_column: str | None = None) -> CsvStream:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    lines = text.splitlines()
    if len(lines) < 2:
        raise ConfigError(f"{path}: needs a header line and at least one row")
    delimiter = ";" if lines[0].count(";") > lines[0].count(",") else ","
    table = [row for row in csv.reader(lines, delimiter=delimiter) if row]
    header = [h.strip() for h in table[0]]
    body = table[1:]
    for n, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise ConfigError(f"{path}:{n}: {len(row)} fields, the header has {len(header)}")
    where = {name: i for i, name in enumerate(header)}
    ts_name = ts_column or next((h for h in header if h.lower() in _TS_NAMES), None)
    if ts_column and ts_column not in where:
        raise ConfigError(f"{path}: no column {ts_column!r} (columns: {', '.join(header)})")
    ts: tuple[float, ...] | None = None
    if ts_name is not None:
        parsed = [_timestamp(row[where[ts_name]]) for row in body]
        if all(t is not None for t in parsed):
            ts = tuple(t for t in parsed if t is not None)
        elif ts_column:
            raise ConfigError(f"{path}: column {ts_column!r} is not epoch seconds or ISO 8601 throughout")
    if columns:
        missing = [c for c in columns if c not in where]
        if missing:
            raise ConfigError(f"{path}: no column(s) {missing} (columns: {', '.join(header)})")
        chosen = list(columns)
    else:
        chosen = [h for h in header if h != ts_name and all(_number(r[where[h]]) is not None for r in body)]
        if not chosen:
            raise ConfigError(f"{path}: no numeric columns")
    rows = []
    for n, row in enumerate(body, start=2):
        values = [_number(row[where[c]]) for c in chosen]
        bad = [c for c, v in zip(chosen, values, strict=False) if v is None]
        if bad:
            raise ConfigError(f"{path}:{n}: column(s) {bad} are not finite numbers")
        rows.append(tuple(v for v in values if v is not None))
    return CsvStream(tuple(chosen), tuple(rows), ts)


def _payload(stream: CsvStream, first: int, *, chunk: int, start_seq: int, named: bool, now: float) -> bytes:
    """The message holding rows [first, first + chunk). Without a ts column a single sample is
    stamped with the send time `now`; a chunk then goes without ts (its samples were not timed)."""
    rows = stream.rows[first : first + chunk]
    body: dict[str, object] = {"seq": start_seq + first}
    if stream.ts is not None:
        ts = stream.ts[first : first + chunk]
        body["ts"] = ts[0] if chunk == 1 else list(ts)
    elif chunk == 1:
        body["ts"] = round(now, 6)
    if chunk == 1:
        body["values"] = dict(zip(stream.columns, rows[0], strict=False)) if named else list(rows[0])
    else:
        body["values"] = [list(r) for r in rows]
    return json.dumps(body, separators=(",", ":")).encode()


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("replay", help="publish a CSV file as a sensor stream (seq + ts)")
    p.add_argument("csv", type=Path)
    p.add_argument("--broker", required=True, help="HOST:PORT")
    p.add_argument("--topic", required=True)
    p.add_argument("--rate", type=float, default=10.0, help="messages per second; 0 = as fast as QoS 1 allows")
    p.add_argument("--columns", help="comma-separated columns to send, in this order (default: numeric ones)")
    p.add_argument("--ts-column", help="column holding the timestamp (default: datetime/timestamp/time/ts)")
    p.add_argument("--chunk", type=int, default=1, help="samples per message")
    p.add_argument("--named", action="store_true", help='send {"values": {column: value}} (only with --chunk 1)')
    p.add_argument("--qos", type=int, choices=(0, 1), default=1)
    p.add_argument("--start-seq", type=int, default=0)
    p.add_argument("--limit", type=int, help="send at most this many rows")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from runtime.ops.metrics import parse_address

    if args.chunk < 1 or args.rate < 0 or args.start_seq < 0:
        raise ConfigError("--chunk must be >= 1, --rate >= 0, --start-seq >= 0")
    if args.named and args.chunk != 1:
        raise ConfigError("--named sends one sample per message: use it with --chunk 1")
    columns = [c.strip() for c in args.columns.split(",")] if args.columns else None
    stream = read_csv(args.csv, columns, args.ts_column)
    if args.limit is not None:
        stream = CsvStream(stream.columns, stream.rows[: args.limit], stream.ts[: args.limit] if stream.ts else None)
    starts = range(0, len(stream.rows), args.chunk)
    host, port = parse_address(args.broker)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="", protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(100)
    try:
        client.connect(host, port)
    except OSError as exc:
        raise BusError(f"cannot connect to {args.broker}: {exc}") from None
    client.loop_start()
    started = time.monotonic()
    window: list[mqtt.MQTTMessageInfo] = []
    try:
        for i, first in enumerate(starts):
            payload = _payload(
                stream, first, chunk=args.chunk, start_seq=args.start_seq, named=args.named, now=time.time()
            )
            info = client.publish(args.topic, payload, qos=args.qos)
            if args.qos == 1:
                window.append(info)
                if len(window) >= _WINDOW:
                    _confirm(window[: _WINDOW // 2])
                    del window[: _WINDOW // 2]
            if args.rate > 0:
                delay = started + (i + 1) / args.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
        _confirm(window)
    finally:
        client.disconnect()
        client.loop_stop()
    took = time.monotonic() - started
    print(
        f"published {len(starts)} messages ({len(stream.rows)} samples, columns {', '.join(stream.columns)}) "
        f"to {args.topic} in {took:.2f}s ({len(starts) / max(took, 1e-9):.0f} msg/s)",
        file=sys.stderr,
    )
    return 0


def _confirm(infos: list[MQTTMessageInfo]) -> None:
    deadline = time.monotonic() + 30
    for info in infos:
        info.wait_for_publish(max(0.01, deadline - time.monotonic()))
        if not info.is_published():
            raise BusError("the broker did not confirm publications within 30s")
