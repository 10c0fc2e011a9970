"""Where metric rows go: a JSONL file and TensorBoard event files.

Both writers are called only at log steps, never from the sampler thread or the per-step path.
TensorBoard is written with tensorboard's own ``EventFileWriter`` (what
``torch.utils.tensorboard.SummaryWriter`` wraps) so telemetry does not need torch: it imports in
~0.25 s and only when a logger with ``tensorboard=True`` is created.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

#: Row keys shown under ``throughput/`` in TensorBoard (the JSONL keeps them flat).
THROUGHPUT_KEYS = frozenset(
    {"samples_per_s", "tokens_per_s", "step_time_s", "data_wait_s", "data_wait_share", "compute_s", "mfu"}
)


def tensorboard_tag(key: str) -> str:
    """TensorBoard tag of a row key: throughput figures grouped under ``throughput/``."""
    return f"throughput/{key}" if key in THROUGHPUT_KEYS else key


def json_safe(value: Any) -> Any:
    """Plain JSON value: numbers as int/float, nan/inf as null (strict JSON has no NaN)."""
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return number if math.isfinite(number) else None


class JsonlWriter:
    """Appends one JSON object per line and flushes, so a crash loses at most the current line.

    Appending (not write-then-rename) is deliberate: a resumed run continues the same file, and
    readers (:mod:`spellfix.telemetry.report`) skip a torn last line.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] | None = open(self.path, "a", encoding="utf-8")

    def write(self, row: Mapping[str, Any]) -> None:
        if self._file is None:
            raise ValueError(f"{self.path} is closed")
        self._file.write(json.dumps({k: json_safe(v) for k, v in row.items()}, allow_nan=False) + "\n")
        self._file.flush()

    def write_many(self, rows: list[Mapping[str, Any]]) -> None:
        if self._file is None:
            raise ValueError(f"{self.path} is closed")
        if rows:
            self._file.write(
                "".join(json.dumps({k: json_safe(v) for k, v in r.items()}, allow_nan=False) + "\n" for r in rows)
            )
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class TensorBoardWriter:
    """Scalars and text into ``logdir/events.out.tfevents.*`` through tensorboard's writer."""

    def __init__(self, logdir: Path) -> None:
        from tensorboard.compat.proto import summary_pb2
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self._summary_pb2 = summary_pb2
        self._writer = EventFileWriter(str(logdir))

    def _add(self, summary: Any, step: int, wall_time: float) -> None:
        from tensorboard.compat.proto import event_pb2

        self._writer.add_event(event_pb2.Event(summary=summary, step=int(step), wall_time=wall_time))

    def scalars(self, step: int, values: Mapping[str, float], wall_time: float) -> None:
        """Write all numeric *values* of one row as one event (tag = :func:`tensorboard_tag`)."""
        Value = self._summary_pb2.Summary.Value
        entries = []
        for key, value in values.items():
            try:
                number = float(value)
            except (TypeError, ValueError):
                continue
            entries.append(Value(tag=tensorboard_tag(key), simple_value=number))
        if entries:
            self._add(self._summary_pb2.Summary(value=entries), step, wall_time)

    def text(self, tag: str, text: str, step: int, wall_time: float) -> None:
        """A text summary (rendered as markdown by TensorBoard's Text tab)."""
        from tensorboard.plugins.text.summary_v2 import text_pb

        self._add(text_pb(tag, text), step, wall_time)

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()
