"""Fault (e): TLS negatives against `edgewatch serve`: a wrong CA, no client certificate for a
mutual-TLS broker, plaintext to a TLS-only port.

Each is refused before CONNACK with one clear error line (repeated only when the reason
changes or once a minute), the daemon keeps retrying with backoff and reports 503 on
/healthz; once the broker side is fixed (restarted on the same port with a certificate the
daemon trusts, without requiring a client certificate, or without TLS) the next retry
connects, /healthz says ready, and SIGTERM still exits 0.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from runtime.tools.local_broker import BrokerTLS, free_port, start_broker
from tests.support.fault_helpers import Daemon, healthy, metric, report
from tests.support.onnx_artifacts import write_persistence_artifact
from tests.support.service_helpers import write_config
from tests.support.tls_material import TLSMaterial, make_tls_material

pytestmark = [pytest.mark.mqtt, pytest.mark.slow]

RETRY_WINDOW_S = 3.0  # several retries at reconnect_max_s = 1 s


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TLSMaterial:
    return make_tls_material(tmp_path_factory.mktemp("pki"))


def _cases(pki: TLSMaterial) -> dict[str, tuple[dict[str, object] | None, BrokerTLS, BrokerTLS | None, str]]:
    """case → (the daemon's broker.tls, the broker's TLS, the fixed broker's TLS, expected in the line)."""
    mutual = BrokerTLS(pki.server.cert, pki.server.key, pki.ca.cert, require_certificate=True)
    client = {"cert_file": str(pki.client.cert), "key_file": str(pki.client.key)}
    return {
        "wrong-ca": (
            {"ca_file": str(pki.other_ca.cert), **client},
            mutual,
            BrokerTLS(pki.other_server.cert, pki.other_server.key, pki.ca.cert, require_certificate=True),
            "CERTIFICATE_VERIFY_FAILED",
        ),
        "no-client-cert": (
            {"ca_file": str(pki.ca.cert)},
            mutual,
            BrokerTLS(pki.server.cert, pki.server.key, pki.ca.cert, require_certificate=False),
            "client certificate",
        ),
        "plaintext": (None, mutual, None, "TLS-only port"),
    }


def _status(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return 0


@pytest.mark.parametrize("case", ["wrong-ca", "no-client-cert", "plaintext"])
def test_tls_refusals_are_logged_once_retried_and_recover(pki: TLSMaterial, tmp_path: Path, case: str) -> None:
    started_at = time.monotonic()
    daemon_tls, broker_tls, fixed_tls, expected = _cases(pki)[case]
    broker = start_broker(tmp_path / "broker", tls=broker_tls)
    art = write_persistence_artifact(tmp_path / "model", features=3, threshold=1.0)
    port = free_port()
    settings = {"tls": daemon_tls} if daemon_tls else {}
    config = write_config(
        tmp_path / "gw.yaml", broker, art, broker_settings=settings, metrics_address=f"127.0.0.1:{port}"
    )
    daemon = Daemon(config, tmp_path / "serve.log")
    try:
        daemon.start()
        first = daemon.wait_line(r"ERROR edgewatch\.bus: [^\n]*", 30)
        time.sleep(RETRY_WINDOW_S)
        assert daemon.proc is not None, "the daemon exited"
        assert daemon.proc.poll() is None, "the daemon exited"
        assert _status(port) == 503
        attempts = metric(port, "edgewatch_mqtt_connect_failures_total")
        refused_lines = [line for line in daemon.text().splitlines() if "ERROR edgewatch.bus" in line]
        broker.stop()
        broker.tls = fixed_tls  # the broker side is fixed; the daemon's next retry connects
        broker.start()
        deadline = time.monotonic() + 20
        while not healthy(port):
            assert time.monotonic() < deadline, daemon.text()[-2000:]
            time.sleep(0.1)
        recovered_s = round(time.monotonic() - started_at, 1)
        assert daemon.stop() == 0
    finally:
        daemon.kill()
        broker.stop()
    assert expected in first.group(0), first.group(0)
    # One line per distinct reason (a TLS 1.3 server may refuse during or right after the handshake).
    assert 1 <= len(refused_lines) <= 2, (refused_lines, attempts)
    assert attempts >= 3, (refused_lines, attempts)
    assert "Traceback" not in daemon.text()
    assert "connected to 127.0.0.1" in daemon.text()
    report(
        tmp_path,
        f"e_tls_{case}",
        refused_line=first.group(0).split(": ", 1)[1],
        error_lines=len(refused_lines),
        failed_attempts_before_fix=int(attempts),
        retry_window_s=RETRY_WINDOW_S,
        crashed=False,
        recovered_after_fix=True,
        seconds=recovered_s,
    )
