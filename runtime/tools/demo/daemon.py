"""`edgewatch serve` as a child process: what a user runs, started and stopped the way systemd would.

A child process rather than a Service in a thread: the demo then shows the real command, its
config loading and its SIGTERM shutdown, and the daemon gets its own interpreter (its own GIL)
instead of competing with the demo's publisher and printer.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

_KILL_AFTER_S = 30.0  # the daemon drains its queue on SIGTERM; a healthy one takes about a second


class Daemon:
    """One `python -m runtime.cli serve --config CONFIG`, its output in `log`."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log = log
        self.command = [sys.executable, "-m", "runtime.cli", "serve", "--config", str(config)]
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> int:
        """Start it; returns its pid."""
        # Without EDGEWATCH_* variables: overrides left in the user's shell must not change the demo.
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEWATCH_")}
        with self.log.open("wb") as sink:
            self._process = subprocess.Popen(self.command, stdout=sink, stderr=subprocess.STDOUT, env=env)
        return self._process.pid

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def exit_code(self) -> int | None:
        """None while it runs (or before it started)."""
        return None if self._process is None else self._process.poll()

    def stop(self) -> int | None:
        """SIGTERM, then wait for the drain; SIGKILL after _KILL_AFTER_S. Returns its exit code
        (None if it was never started)."""
        if self._process is None:
            return None
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(_KILL_AFTER_S)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(10)
        return self._process.returncode

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])
