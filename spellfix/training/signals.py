"""SIGTERM (spot interruption, Ctrl-C of a launcher) -> save a checkpoint at the next step boundary.

The handler only sets a flag; the training loop checks it between optimizer steps, saves a complete
checkpoint and raises ``Preempted`` so the caller can exit cleanly (exit code 143).
"""

from __future__ import annotations

import signal
import threading
from types import FrameType


class Preempted(Exception):
    """Training stopped on SIGTERM after saving a resumable checkpoint."""

    def __init__(self, checkpoint: str | None):
        super().__init__(f"stopped by SIGTERM; resumable checkpoint: {checkpoint}")
        self.checkpoint = checkpoint


class StopFlag:
    """Installs SIGTERM/SIGINT handlers for the duration of a ``with`` block (main thread only)."""

    def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM,)):
        self.requested = False
        self.signum: int | None = None
        self._signals = signals
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
        self.signum = signum

    def __enter__(self) -> "StopFlag":
        if threading.current_thread() is threading.main_thread():
            for s in self._signals:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)  # type: ignore[arg-type]
