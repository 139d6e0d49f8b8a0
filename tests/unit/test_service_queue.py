from __future__ import annotations

import threading
import time

import pytest

from runtime.ingest.queue import InputQueue


def test_drop_newest_keeps_what_is_queued() -> None:
    q: InputQueue[int] = InputQueue(3, "drop-newest")
    dropped = [q.put(i) for i in range(5)]
    assert dropped == [None, None, None, 3, 4]
    assert q.get_batch(10, 0, 0.1) == [0, 1, 2]


def test_drop_oldest_keeps_the_freshest() -> None:
    q: InputQueue[int] = InputQueue(3, "drop-oldest")
    dropped = [q.put(i) for i in range(5)]
    assert dropped == [None, None, None, 0, 1]
    assert q.get_batch(10, 0, 0.1) == [2, 3, 4]


def test_block_waits_for_room_and_loses_nothing() -> None:
    q: InputQueue[int] = InputQueue(2, "block")
    done = threading.Event()

    def producer() -> None:
        for i in range(50):
            assert q.put(i) is None
        done.set()

    t = threading.Thread(target=producer)
    t.start()
    got: list[int] = []
    deadline = time.monotonic() + 10
    while len(got) < 50 and time.monotonic() < deadline:
        assert len(q) <= 2
        got += q.get_batch(1, 0, 0.1)
    t.join(5)
    assert got == list(range(50))
    assert done.is_set()
    assert q.blocked_s > 0


def test_close_releases_a_blocked_put() -> None:
    q: InputQueue[int] = InputQueue(1, "block")
    q.put(0)
    t = threading.Thread(target=q.put, args=(1,))
    t.start()
    time.sleep(0.15)
    assert t.is_alive()
    q.close()
    t.join(2)
    assert not t.is_alive()


def test_get_batch_returns_a_full_batch_at_once_and_waits_at_most_max_wait() -> None:
    q: InputQueue[int] = InputQueue(100, "block")
    for i in range(10):
        q.put(i)
    started = time.monotonic()
    assert q.get_batch(4, 5.0, 1.0) == [0, 1, 2, 3]
    assert time.monotonic() - started < 0.5
    started = time.monotonic()
    assert q.get_batch(100, 0.05, 1.0) == [4, 5, 6, 7, 8, 9]
    assert 0.04 <= time.monotonic() - started < 1.0
    started = time.monotonic()
    assert q.get_batch(100, 0.05, 0.1) == []
    assert time.monotonic() - started >= 0.09


def test_maxsize_must_be_positive() -> None:
    with pytest.raises(ValueError, match="maxsize must be >= 1"):
        InputQueue(0, "block")


def test_reject_log_says_a_flood_once_then_summarises(caplog: pytest.LogCaptureFixture) -> None:
    from runtime.ingest.intake import RejectLog

    caplog.set_level("WARNING", logger="edgewatch.intake")
    log = RejectLog(every_s=0.2)
    for _ in range(1000):
        log("not-json", "Expecting value", "plant/a/telemetry")
    log("too-large", "70000 bytes", "plant/\x1b[31m/telemetry")  # another reason: its own line, escaped
    time.sleep(0.25)
    log("not-json", "Expecting value", "plant/a/telemetry")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3
    assert "\x1b" not in lines[1]
    assert "\\x1b" in lines[1]
    assert lines[2].endswith("(+999 more since the last line)")
