"""RunLogger: one call per log step writes the row everywhere it is needed.

``logger.log(step, metrics)`` adds the step, the wall time and the device readings (means of the
samples taken since the previous log step), then writes the row to

* ``logdir/metrics.jsonl`` (one flat JSON object per line, flushed),
* ``logdir/device.jsonl`` (every raw device sample, for the report's utilization-over-time panel),
* TensorBoard scalars in ``logdir`` (tag = key, throughput keys under ``throughput/``),
* stdout, as one ``spellfix: step=...`` line that SageMaker metric regexes read.

On non-main ranks create it with ``enabled=False``: no thread, no files, every method a no-op.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from .logline import check_metric_key, format_log_line
from .schema import mean_metrics
from .writers import JsonlWriter, TensorBoardWriter

if TYPE_CHECKING:
    from .sampler import DeviceSource

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
DEVICE_FILE = "device.jsonl"


class RunLogger:
    """Metrics logger + device sampler for one training run (see module docstring).

    Args:
        logdir: directory for metrics.jsonl, device.jsonl and TensorBoard events (``OUT/logs``).
        enabled: False on non-main ranks: nothing is started or written.
        sample_interval_s: seconds between device samples (default 1 s); ``None`` or 0 turns
            the sampler off (rows then carry only the caller's metrics).
        tensorboard: write TensorBoard event files.
        stdout: print one ``spellfix: step=...`` line per log step.
        device_source: ``auto`` (NVML if it starts, else CPU), ``nvml``, ``cpu``, or a ready
            source object (anything with ``name``, ``sample()`` and ``close()``).
        stream: where log lines go (stdout by default; tests pass a buffer).
    """

    def __init__(
        self,
        logdir: Path,
        *,
        enabled: bool = True,
        sample_interval_s: float | None = 1.0,
        tensorboard: bool = True,
        stdout: bool = True,
        device_source: str | DeviceSource = "auto",
        stream: TextIO | None = None,
    ) -> None:
        self.enabled = enabled
        self.logdir = Path(logdir)
        self._closed = False
        self._sampler = None
        self._tb: TensorBoardWriter | None = None
        if not enabled:
            return
        self.logdir.mkdir(parents=True, exist_ok=True)
        self._stream = stream if stream is not None else (sys.stdout if stdout else None)
        self._metrics = JsonlWriter(self.logdir / METRICS_FILE)
        self._devices = JsonlWriter(self.logdir / DEVICE_FILE)
        if tensorboard:
            self._tb = TensorBoardWriter(self.logdir)
        if sample_interval_s:
            from .sampler import DeviceSampler, open_source

            source = open_source(device_source) if isinstance(device_source, str) else device_source
            self._sampler = DeviceSampler(source, sample_interval_s).start()

    @property
    def sampler(self):  # noqa: ANN201 - DeviceSampler | None, kept lazy to avoid the import
        """The running :class:`~spellfix.telemetry.sampler.DeviceSampler`, if any."""
        return self._sampler

    def log(self, step: int, metrics: Mapping[str, Any]) -> dict[str, Any]:
        """Write one row (see module docstring) and return it.

        *metrics* values must be numbers (Python, numpy or 0-d torch scalars: converting a CUDA
        tensor synchronises, so pass ``loss.item()`` values you already have). Keys must not
        contain whitespace or ``=``. Keys given here win over sampler keys of the same name.
        """
        if not self.enabled or self._closed:
            return {"step": int(step), "time": time.time(), **metrics}
        row: dict[str, Any] = {"step": int(step), "time": time.time()}
        for key, value in metrics.items():
            if key in ("step", "time"):
                continue
            check_metric_key(key)
            row[key] = value if isinstance(value, (int, float)) else _to_number(key, value)
        if self._sampler is not None:
            readings = self._sampler.drain()
            if readings:
                self._devices.write_many([r.to_record() for r in readings])
            else:  # logging faster than sampling: repeat the latest sample
                readings = self._sampler.latest()
            for key, value in mean_metrics(readings).items():
                row.setdefault(key, value)
        self._metrics.write(row)
        if self._tb is not None:
            self._tb.scalars(row["step"], {k: v for k, v in row.items() if k not in ("step", "time")}, row["time"])
            self._tb.flush()
        if self._stream is not None:
            print(format_log_line(row["step"], row), file=self._stream, flush=True)
        return row

    def log_text(self, tag: str, text: str, step: int = 0) -> None:
        """Write a text summary to TensorBoard (e.g. the resolved recipe as a YAML code block)."""
        if not self.enabled or self._closed or self._tb is None:
            return
        self._tb.text(tag, text, step, time.time())
        self._tb.flush()

    def close(self) -> None:
        """Stop the sampler thread and flush/close every writer. Safe to call twice."""
        if not self.enabled or self._closed:
            return
        self._closed = True
        if self._sampler is not None:
            self._sampler.stop()
            leftover = self._sampler.drain()
            self._devices.write_many([r.to_record() for r in leftover])
        self._metrics.close()
        self._devices.close()
        if self._tb is not None:
            self._tb.close()

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _to_number(key: str, value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"metric {key!r}: value {value!r} is not a number") from None
