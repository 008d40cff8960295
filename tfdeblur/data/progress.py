"""A small text progress bar for the one-off jobs of the data package (flow caching)."""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO


class ProgressBar:
    """Counts finished items and redraws ``desc: 12/100 [###   ] 3.1/s ETA 0:29``.

    On a terminal the line is redrawn in place (at most ten times a second);
    elsewhere (logs, CI) a line is printed at every tenth of the work, so logs
    stay short. ``update`` is thread-safe.

    Args:
        total: number of items.
        desc: label printed before the counts.
        stream: where to write (default ``sys.stderr``).
        enabled: ``False`` prints nothing.

    Example:
        >>> with ProgressBar(len(frames), "optical flow") as bar:
        ...     for f in frames:
        ...         work(f)
        ...         bar.update()
    """

    def __init__(self, total: int, desc: str = "", *, stream: TextIO | None = None,
                 enabled: bool = True, width: int = 30):
        self.total = max(int(total), 0)
        self.desc = desc
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.width = width
        self.count = 0
        self._start = time.monotonic()
        self._last_draw = 0.0
        self._last_decile = -1
        self._lock = threading.Lock()
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _line(self) -> str:
        elapsed = max(time.monotonic() - self._start, 1e-9)
        rate = self.count / elapsed
        frac = self.count / self.total if self.total else 1.0
        filled = int(round(frac * self.width))
        bar = "#" * filled + " " * (self.width - filled)
        if self.count < self.total and rate > 0:
            eta = int((self.total - self.count) / rate)
            tail = f"ETA {eta // 3600}:{eta // 60 % 60:02d}:{eta % 60:02d}"
        else:
            e = int(elapsed)
            tail = f"in {e // 3600}:{e // 60 % 60:02d}:{e % 60:02d}"
        return f"{self.desc}: {self.count}/{self.total} [{bar}] {rate:.2f}/s {tail}"

    def update(self, n: int = 1) -> None:
        """Marks ``n`` more items done."""
        with self._lock:
            self.count += n
            if not self.enabled:
                return
            now = time.monotonic()
            if self._tty:
                if now - self._last_draw >= 0.1 or self.count >= self.total:
                    self.stream.write("\r" + self._line())
                    self.stream.flush()
                    self._last_draw = now
            else:
                decile = (10 * self.count) // self.total if self.total else 10
                if decile > self._last_decile:
                    self._last_decile = decile
                    self.stream.write(self._line() + "\n")
                    self.stream.flush()

    def close(self) -> None:
        """Finishes the line on a terminal."""
        with self._lock:
            if self.enabled and self._tty:
                self.stream.write("\r" + self._line() + "\n")
                self.stream.flush()
                self.enabled = False
