"""sd_notify over a real AF_UNIX datagram socket (path and abstract names), and the watchdog cadence."""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.ops.sdnotify import Notifier, WatchdogPinger


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket playing systemd's side; yields (socket, $NOTIFY_SOCKET value)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify"
    sock.bind(str(path))
    sock.settimeout(2.0)
    try:
        yield sock, str(path)
    finally:
        sock.close()


def _received(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def test_absent_socket_is_a_no_op() -> None:
    notifier = Notifier(env={})
    assert not notifier.enabled
    assert notifier.ready("up") is False
    pinger = WatchdogPinger.from_env(notifier, env={"WATCHDOG_USEC": "1000000"})
    assert pinger.period_s is None
    assert pinger.maybe_ping() is False


def test_ready_status_stopping_over_a_path_socket(listener: tuple[socket.socket, str]) -> None:
    sock, address = listener
    notifier = Notifier(env={"NOTIFY_SOCKET": address})
    assert notifier.ready("serving 3 models\n(warm)")
    assert _received(sock) == ["READY=1", "STATUS=serving 3 models (warm)"]
    assert notifier.status("1200 streams")
    assert _received(sock) == ["STATUS=1200 streams"]
    assert notifier.reloading()
    fields = _received(sock)
    assert fields[0] == "RELOADING=1"
    assert fields[1].startswith("MONOTONIC_USEC=")
    assert int(fields[1].split("=")[1]) > 0
    assert notifier.stopping()
    assert _received(sock) == ["STOPPING=1"]
    notifier.close()


def test_abstract_socket_name() -> None:
    name = f"edgewatch-test-{os.getpid()}-{secrets.token_hex(4)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(2.0)
        notifier = Notifier(env={"NOTIFY_SOCKET": "@" + name})
        assert notifier.watchdog()
        assert _received(sock) == ["WATCHDOG=1"]


def test_delivery_failure_returns_false_and_never_raises(tmp_path: Path) -> None:
    notifier = Notifier(env={"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert notifier.enabled
    assert notifier.ready() is False


def test_malformed_fields_are_a_programming_error(listener: tuple[socket.socket, str]) -> None:
    notifier = Notifier(env={"NOTIFY_SOCKET": listener[1]})
    with pytest.raises(ValueError, match="single-line KEY=value"):
        notifier.send("READY=1\nWATCHDOG=1")
    with pytest.raises(ValueError, match="single-line KEY=value"):
        notifier.send("READY")


def test_relative_socket_value_is_ignored() -> None:
    assert not Notifier(env={"NOTIFY_SOCKET": "relative/notify"}).enabled


def test_watchdog_pings_at_half_the_interval(listener: tuple[socket.socket, str]) -> None:
    sock, address = listener
    now = [100.0]
    pinger = WatchdogPinger.from_env(
        Notifier(env={"NOTIFY_SOCKET": address}),
        env={"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": str(os.getpid())},
        clock=lambda: now[0],
    )
    assert pinger.period_s == 5.0
    pinged = []
    for t in [100.0, 101.0, 104.9, 105.0, 105.1, 109.9, 110.0, 130.0, 131.0]:
        now[0] = t
        pinged.append(pinger.maybe_ping())
    assert pinged == [True, False, False, True, False, False, True, True, False]
    assert [_received(sock) for _ in range(4)] == [["WATCHDOG=1"]] * 4


@pytest.mark.parametrize(
    "env",
    [{"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "1"}, {"WATCHDOG_USEC": "zero"}, {"WATCHDOG_USEC": "0"}, {}],
)
def test_watchdog_disabled(listener: tuple[socket.socket, str], env: dict[str, str]) -> None:
    if env.get("WATCHDOG_PID") == str(os.getpid()):
        pytest.skip("running as pid 1")
    pinger = WatchdogPinger.from_env(Notifier(env={"NOTIFY_SOCKET": listener[1]}), env=env)
    assert pinger.period_s is None
    assert pinger.maybe_ping() is False
