"""A one-line progress indicator for long CLI commands.

It writes to stderr only when stderr is a terminal, at most a few times a second, and
erases itself at the end; piped or redirected output (scripts, CI, ``2> file``) gets
nothing, so evidence and logs never contain carriage-return noise.
"""
from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, label: str, stream=None, enabled: bool | None = None, interval: float = 0.2):
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            try:
                enabled = self.stream.isatty()
            except (AttributeError, ValueError):
                enabled = False
        self.enabled = enabled
        self.label = label
        self.interval = interval
        self._last = 0.0
        self._width = 0

    def update(self, done: int, total: int | None = None, detail: str = "", force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        text = f"{self.label}: {done}" + (f"/{total}" if total is not None else "")
        if total:
            text += f" ({100 * done // max(total, 1)}%)"
        if detail:
            text += f" {detail}"
        pad = max(self._width - len(text), 0)
        self._width = len(text)
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
