"""SIGTERM (spot interruption) and SIGINT (Ctrl-C) -> a checkpoint at the next agreed step, then exit.

The handler only sets a flag; the training loop puts it into the ranks' stop agreement
(``spellfix.training.stopping``), every rank stops at the same step, one checkpoint is saved and
``Preempted`` is raised on every rank so the caller exits cleanly (exit code 128 + signal: 143 for
SIGTERM, 130 for SIGINT). SIGINT is treated exactly as SIGTERM; a *second* SIGINT (an impatient
Ctrl-C) raises KeyboardInterrupt at once — checkpoints are atomic, so that loses only the steps
since the last one.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

HANDLED = (signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
    """Training stopped on SIGTERM/SIGINT after saving a resumable checkpoint."""

    def __init__(self, checkpoint: str | None, signum: int | None = signal.SIGTERM):
        name = signal.Signals(signum).name if signum else "a signal to another process"
        super().__init__(f"stopped by {name}; resumable checkpoint: {checkpoint}")
        self.checkpoint = checkpoint
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """128 + the signal number, the shell's convention (143 for SIGTERM)."""
        return 128 + int(self.signum or signal.SIGTERM)


class StopFlag:
    """Installs SIGTERM/SIGINT handlers for the duration of a ``with`` block (main thread only)."""

    def __init__(self, signals: tuple[int, ...] = HANDLED):
        self.requested = False
        self.signum: int | None = None
        self._signals = signals
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self.signum = self.signum or signum

    def __enter__(self) -> "StopFlag":
        if threading.current_thread() is threading.main_thread():
            for s in self._signals:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)  # type: ignore[arg-type]
        self._previous.clear()
