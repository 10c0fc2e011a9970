"""Background thread that samples devices at a fixed interval.

The thread only samples and buffers readings; it never writes files or TensorBoard events. The
logger drains the buffer at log steps, so the training loop's hot path pays nothing but the
occasional GIL hand-off while the thread takes a sample (benchmarks/telemetry_overhead.py).
"""

from __future__ import annotations

import collections
import logging
import threading
from typing import Protocol

from .schema import DeviceReading

log = logging.getLogger(__name__)


class DeviceSource(Protocol):
    """What the sampler needs from a source of readings (NVML, CPU, or a test double)."""

    name: str

    def sample(self) -> list[DeviceReading]: ...

    def close(self) -> None: ...


def open_source(prefer: str = "auto") -> DeviceSource:
    """Pick the reading source and say once, via logging, which one it is.

    ``auto`` uses NVML when a driver and at least one visible GPU exist, else the CPU sampler.
    ``nvml`` fails loudly when NVML cannot start; ``cpu`` never tries NVML.
    """
    if prefer not in ("auto", "nvml", "cpu"):
        raise ValueError(f"telemetry source {prefer!r} is not one of: auto, nvml, cpu")
    if prefer != "cpu":
        try:
            from .nvml_sampler import NvmlSource

            source = NvmlSource()
            if source.device_count == 0:
                source.close()
                raise RuntimeError("NVML found no visible GPU (CUDA_VISIBLE_DEVICES)")
        except Exception as err:  # ImportError, NVMLError_LibraryNotFound/DriverNotLoaded, ...
            if prefer == "nvml":
                raise RuntimeError(f"telemetry: NVML requested but unavailable: {err}") from err
            reason = f"{type(err).__name__}: {err}"
        else:
            log.info("telemetry: sampling GPUs through %s", source.name)
            return source
    else:
        reason = "CPU source requested"
    from .cpu_sampler import CpuSource

    cpu = CpuSource()
    log.info("telemetry: no NVML (%s); sampling CPU utilization and process RSS instead", reason)
    return cpu


class DeviceSampler:
    """Samples *source* every *interval_s* seconds on a daemon thread.

    Readings accumulate in a bounded buffer (oldest dropped first) until :meth:`drain`. Any
    exception from the source is logged once and sampling goes on: a telemetry fault never
    reaches the training loop.
    """

    def __init__(self, source: DeviceSource, interval_s: float = 1.0, max_buffered: int = 100_000) -> None:
        if not interval_s > 0:
            raise ValueError(f"telemetry sample interval must be > 0 seconds, got {interval_s!r}")
        self.source = source
        self.interval_s = float(interval_s)
        self._buffer: collections.deque[DeviceReading] = collections.deque(maxlen=max_buffered)
        self._latest: list[DeviceReading] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.sample_count = 0
        self.error_count = 0
        self.busy_s = 0.0  # thread CPU time spent sampling: the sampler's own cost

    def start(self) -> DeviceSampler:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="spellfix-telemetry", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        import time

        # Wait one interval before the first sample: CPU utilization is a rate since the
        # previous reading, and a reading taken microseconds after start-up is noise.
        while not self._stop.wait(self.interval_s):
            begin = time.thread_time()
            self.sample_once()
            self.busy_s += time.thread_time() - begin

    def sample_once(self) -> None:
        """Take one sample now (also what the thread does each interval)."""
        try:
            readings = self.source.sample()
        except Exception as err:  # noqa: BLE001 - telemetry must not crash training
            self.error_count += 1
            if self.error_count == 1:
                log.warning("telemetry: sampling %s failed (%s); will keep trying", self.source.name, err)
            return
        with self._lock:
            self._buffer.extend(readings)
            self._latest = readings
            self.sample_count += 1

    def drain(self) -> list[DeviceReading]:
        """Return and forget every reading taken since the previous drain."""
        with self._lock:
            readings = list(self._buffer)
            self._buffer.clear()
        return readings

    def latest(self) -> list[DeviceReading]:
        """The most recent sample (one reading per device), or [] before the first one."""
        with self._lock:
            return list(self._latest)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the thread and close the source. Safe to call twice."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        self.source.close()
