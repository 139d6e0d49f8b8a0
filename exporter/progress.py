"""A plain-text progress bar on stderr (no tqdm: one bar, a dozen lines, no dependency).

On a terminal the bar redraws in place; otherwise (CI logs, pipes) it prints a line at
every tenth of the way, so logs stay short.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    def __init__(self, total: int, label: str, *, stream: TextIO | None = None, width: int = 30) -> None:
        self.total = max(int(total), 1)
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.start = time.monotonic()
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_tenth = -1

    def update(self, done: int, note: str = "") -> None:
        """Show `done` of `total`; `note` is a short status such as the current loss."""
        frac = min(max(done / self.total, 0.0), 1.0)
        elapsed = time.monotonic() - self.start
        eta = elapsed / frac - elapsed if frac > 0 else 0.0
        filled = round(frac * self.width)
        line = (
            f"{self.label} [{'#' * filled}{'.' * (self.width - filled)}] {done}/{self.total}"
            f" {elapsed:5.1f}s eta {eta:5.1f}s {note}"
        )
        if self._tty:
            self.stream.write("\r" + line.ljust(100))
            if done >= self.total:
                self.stream.write("\n")
        else:
            tenth = int(frac * 10)
            if tenth == self._last_tenth:
                return
            self._last_tenth = tenth
            self.stream.write(line + "\n")
        self.stream.flush()
