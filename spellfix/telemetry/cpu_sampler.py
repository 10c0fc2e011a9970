"""CPU twin of the NVML sampler: system CPU utilization and this process's memory.

Used when NVML is not available (no driver, CPU-only machine, this dev box). It produces the
same :class:`DeviceReading` schema with ``device="cpu"`` so everything downstream is shared.
"""

from __future__ import annotations

import time

import psutil

from .schema import GIB, DeviceReading


class CpuSource:
    """Samples ``psutil.cpu_percent`` (system-wide, since the previous call) and process RSS.

    RSS includes child processes (data-loader workers) because they are part of the job's
    footprint; children that exit between listing and reading are ignored.
    """

    name = "cpu (psutil)"

    def __init__(self, pid: int | None = None) -> None:
        self._process = psutil.Process(pid)
        self._total_gb = psutil.virtual_memory().total / GIB
        # The first cpu_percent(None) call only sets the reference point and returns 0.0.
        psutil.cpu_percent(interval=None)

    def sample(self) -> list[DeviceReading]:
        """One reading of the CPU "device"."""
        rss = self._process.memory_info().rss
        for child in self._process.children(recursive=True):
            try:
                rss += child.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return [
            DeviceReading(
                device="cpu",
                index=None,
                time=time.time(),
                util=psutil.cpu_percent(interval=None),
                mem_used_gb=rss / GIB,
                mem_total_gb=self._total_gb,
            )
        ]

    def close(self) -> None:
        """Nothing to release; present so all sources share one interface."""
