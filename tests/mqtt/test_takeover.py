"""runtime.mqtt.takeover: when a lost connection counts as our session taken over (pure logic)."""

from __future__ import annotations

from runtime.mqtt.takeover import SESSION_TAKEN_OVER, TakeoverWatch

LOST = 128  # paho's "Unspecified error": the socket closed, no DISCONNECT reason


def _flap(watch: TakeoverWatch, at: float, *, session_present: bool = True) -> bool:
    watch.connected(at, session_present=session_present)
    return watch.lost(at + 0.3, LOST)


def test_the_reason_code_is_a_takeover_at_once() -> None:
    watch = TakeoverWatch(0.5, 30.0)
    watch.connected(0.0, session_present=False)
    assert watch.lost(100.0, SESSION_TAKEN_OVER)
    assert watch.active


def test_three_short_connections_with_our_session_in_a_row_are_a_takeover() -> None:
    watch = TakeoverWatch(0.5, 30.0)
    assert [_flap(watch, t) for t in (0.0, 1.0, 2.0)] == [False, False, True]


def test_a_failed_attempt_or_a_fresh_session_starts_the_count_over() -> None:
    watch = TakeoverWatch(0.5, 30.0)
    assert not _flap(watch, 0.0)
    assert not _flap(watch, 1.0)
    watch.attempt_failed()  # a broker restarting refuses connections for a moment
    assert not _flap(watch, 2.0)
    assert not _flap(watch, 3.0, session_present=False)  # a broker that lost our session
    assert not _flap(watch, 4.0)
    assert not watch.active


def test_a_long_connection_is_no_takeover_and_the_state_ends_after_the_quiet_time() -> None:
    watch = TakeoverWatch(0.5, 1.0)
    watch.connected(0.0, session_present=True)
    assert not watch.lost(60.0, LOST)
    watch.connected(61.0, session_present=True)
    assert watch.lost(61.0, SESSION_TAKEN_OVER)
    watch.connected(62.0, session_present=True)
    assert watch.lost(63.0, LOST)  # lost again before 2 x reconnect_max_s: still the other client
    watch.connected(64.0, session_present=True)
    assert watch.settled(65.0) is None
    assert watch.settled(66.5) == 2.5
    assert not watch.active
