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

    #: Finding children walks every process on the host (~1 ms); data-loader workers live for
    #: an epoch, so the list is refreshed only every this many samples.
    CHILDREN_REFRESH_EVERY = 30

    def __init__(self, pid: int | None = None) -> None:
        self._process = psutil.Process(pid)
        self._total_gb = psutil.virtual_memory().total / GIB
        self._children: list[psutil.Process] = []
        self._samples = 0
        self._cores = psutil.cpu_count() or 1
        self._process.cpu_percent(interval=None)
        # The first cpu_percent(None) call only sets the reference point and returns 0.0.
        psutil.cpu_percent(interval=None)

    def sample(self) -> list[DeviceReading]:
        """One reading of the CPU "device"."""
        if self._samples % self.CHILDREN_REFRESH_EVERY == 0:
            try:
                self._children = self._process.children(recursive=True)
            except psutil.Error:
                self._children = []
        self._samples += 1
        rss = self._process.memory_info().rss
        for child in self._children:
            try:
                rss += child.memory_info().rss
            except psutil.Error:  # the worker exited since the last refresh
                continue
        return [
            DeviceReading(
                device="cpu",
                index=None,
                time=time.time(),
                util=psutil.cpu_percent(interval=None),
                proc_util=self._process.cpu_percent(interval=None) / self._cores,
                mem_used_gb=rss / GIB,
                mem_total_gb=self._total_gb,
            )
        ]

    def close(self) -> None:
        """Nothing to release; present so all sources share one interface."""
