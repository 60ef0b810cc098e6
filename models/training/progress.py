"""A small progress bar with rate and ETA for long loops (featurisation, training epochs), on stderr.

On a terminal it redraws one line (at most every `tty_interval` seconds); otherwise (logs, CI) it prints a
line every `log_interval` seconds and one at the end, so a log does not fill with carriage returns.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def format_duration(seconds: float) -> str:
    """1:02:03, 2:03 or 0:05."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressBar:
    """Rows done of `total`, with rows/s and ETA; `update(n)` after each chunk, `close()` at the end."""

    def __init__(
        self,
        total: int,
        label: str,
        *,
        stream: TextIO | None = None,
        enabled: bool = True,
        width: int = 24,
        unit: str = "rows",
        tty_interval: float = 0.2,
        log_interval: float = 10.0,
    ) -> None:
        self.total = max(int(total), 0)
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.width = width
        self.unit = unit
        self.done = 0
        self.started = time.perf_counter()
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._interval = tty_interval if self._tty else log_interval
        self._last_draw = self.started

    @property
    def rate(self) -> float:
        elapsed = time.perf_counter() - self.started
        return self.done / elapsed if elapsed > 0 else 0.0

    def eta_seconds(self) -> float | None:
        rate = self.rate
        return (self.total - self.done) / rate if rate > 0 else None

    def line(self) -> str:
        fraction = min(self.done / self.total, 1.0) if self.total else 1.0
        filled = int(fraction * self.width)
        bar = "#" * filled + "." * (self.width - filled)
        eta = self.eta_seconds()
        return (
            f"{self.label} [{bar}] {self.done:,}/{self.total:,} {self.unit} {fraction:4.0%}  "
            f"{self.rate:,.0f} {self.unit}/s  elapsed {format_duration(time.perf_counter() - self.started)}  "
            f"ETA {format_duration(eta) if eta is not None else '?'}"
        )

    def update(self, rows: int) -> None:
        self.done += rows
        now = time.perf_counter()
        if self.enabled and now - self._last_draw >= self._interval:
            self._last_draw = now
            self._draw()

    def close(self) -> None:
        if self.enabled:
            self._draw()
            if self._tty:
                self.stream.write("\n")
                self.stream.flush()

    def _draw(self) -> None:
        if self._tty:
            self.stream.write("\r\033[K" + self.line())
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()
