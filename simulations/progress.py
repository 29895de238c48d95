"""The progress line of a simulation run on stderr."""

from __future__ import annotations

import sys
import time
from typing import TextIO

# -------------------------------------------------------------------------------------- progress


class Progress:
    """Progress on stderr: a redrawn bar on a terminal, plain lines when redirected (silent with ``quiet``).

    A log file gets no carriage-return frames: one line each time another of ``steps`` (the rounds) is
    complete on average, and none for the extra text (online counts) that only animates the bar.
    """

    def __init__(
        self, total: int, quiet: bool, stream: TextIO | None = None, steps: int = 10, tty: bool | None = None
    ) -> None:
        self.total = max(total, 1)
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.tty = _isatty(self.stream) if tty is None else tty
        self.steps = max(steps, 1)
        self.t0 = time.monotonic()
        self._last = ""
        self._last_step = 0

    def update(self, done: int, extra: str = "") -> None:
        if self.quiet:
            return
        frac = min(done / self.total, 1.0)
        elapsed = time.monotonic() - self.t0
        if not self.tty:
            step = int(frac * self.steps)
            if step > self._last_step:
                self._last_step = step
                self.stream.write(
                    f"progress: {step}/{self.steps} rounds ({100 * frac:.0f}%) {elapsed:.1f}s\n"
                )
                self.stream.flush()
            return
        bar = "#" * int(30 * frac) + "-" * (30 - int(30 * frac))
        line = f"\r[{bar}] {100 * frac:5.1f}% rounds {done}/{self.total} {elapsed:6.1f}s {extra}"
        if line != self._last:
            self.stream.write(line)
            self.stream.flush()
            self._last = line

    def close(self) -> None:
        if not self.quiet and self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or file-like stream
        return False
