"""Child processes of the benchmark that talk in lines: start, wait for a line, send one, stop.

Each child prints "ready", then one JSON line with its result; a reader thread per child puts
lines on a queue so the benchmark can wait with a timeout instead of hanging on a dead child.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import Any


class LineProcess:
    """A `python -m MODULE ARGS` child whose stdout is read line by line in the background."""

    def __init__(self, module: str, args: Sequence[str]) -> None:
        self.name = module.rsplit(".", 1)[-1]
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()
        threading.Thread(target=self._drain_stderr, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)  # end of output

    def _drain_stderr(self) -> None:
        # Unread stderr would fill its pipe and block a chatty child.
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self._stderr.append(line)
            del self._stderr[:-40]

    def line(self, timeout: float) -> str:
        """The next stdout line; RuntimeError if the child exits first or the time runs out."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"{self.name}: no output within {timeout:.0f}s{self._tail()}") from None
        if line is None:
            self.process.wait(5)
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}{self._tail()}")
        return line

    def wait_ready(self, timeout: float = 30.0) -> None:
        line = self.line(timeout)
        if line != "ready":
            raise RuntimeError(f"{self.name}: expected 'ready', got {line[:200]!r}{self._tail()}")

    def result(self, timeout: float) -> dict[str, Any]:
        line = self.line(timeout)
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            raise RuntimeError(f"{self.name}: not a JSON result: {line[:200]!r}{self._tail()}") from None
        if not isinstance(value, dict) or "error" in value:
            raise RuntimeError(f"{self.name}: {value}")
        return value

    def send(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text)
        self.process.stdin.flush()

    def close_stdin(self) -> None:
        try:
            assert self.process.stdin is not None
            self.process.stdin.close()
        except (BrokenPipeError, OSError):
            pass

    def stop(self, timeout: float = 15.0) -> None:
        self.close_stdin()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    def _tail(self) -> str:
        text = "".join(self._stderr[-10:]).strip()
        return f"; stderr: {text[-1500:]}" if text else ""
