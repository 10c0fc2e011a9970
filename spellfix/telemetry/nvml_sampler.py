"""GPU readings through NVML (``nvidia-ml-py``, module ``pynvml``).

Two layers, so the conversion can be tested without a GPU:

* pure functions (:func:`reading_from_nvml`, :func:`visible_nvml_devices`) that turn NVML's
  ctypes structs and plain numbers into a :class:`DeviceReading`;
* :class:`NvmlSource`, which makes the NVML calls. Every call is guarded: a field the device does
  not support is dropped for the rest of the run, and any other NVML error (GPU lost, driver
  reset, timeout) drops the field for that one sample and is logged once. NVML trouble must never
  stop a training run — telemetry observes the loop, it never drives it.
"""

from __future__ import annotations

import importlib
import logging
import os
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

from .schema import GIB, DeviceReading

log = logging.getLogger(__name__)

# NVML calls made for each device, keyed by the reading field(s) they fill.
_FIELDS = ("util", "memory", "power", "sm_clock", "temp")


def reading_from_nvml(
    index: int,
    timestamp: float,
    utilization: Any | None = None,
    memory: Any | None = None,
    power_mw: float | None = None,
    sm_clock_mhz: float | None = None,
    temp_c: float | None = None,
) -> DeviceReading:
    """Convert NVML results for one GPU into a :class:`DeviceReading`.

    *utilization* is a ``c_nvmlUtilization_t`` (``.gpu``, ``.memory`` in percent over NVML's last
    sample period), *memory* a ``c_nvmlMemory_t`` or ``c_nvmlMemory_v2_t`` (``.used``, ``.total`` in
    bytes), *power_mw* what ``nvmlDeviceGetPowerUsage`` returns (milliwatts). Any argument may be
    None when the call failed or is unsupported; that field is then left out.
    """
    return DeviceReading(
        device="gpu",
        index=index,
        time=timestamp,
        util=float(utilization.gpu) if utilization is not None else None,
        mem_util=float(utilization.memory) if utilization is not None else None,
        mem_used_gb=memory.used / GIB if memory is not None else None,
        mem_total_gb=memory.total / GIB if memory is not None else None,
        power_w=power_mw / 1000.0 if power_mw is not None else None,
        sm_clock_mhz=float(sm_clock_mhz) if sm_clock_mhz is not None else None,
        temp_c=float(temp_c) if temp_c is not None else None,
    )


def visible_nvml_devices(cuda_visible_devices: str | None, count: int) -> list[int | str]:
    """Which NVML devices the job can see, in CUDA's order: NVML indices (int) or UUIDs (str).

    NVML ignores ``CUDA_VISIBLE_DEVICES`` and lists every GPU on the host, so the sampler applies
    it itself; ``gpu/<i>`` then means the same device as ``cuda:<i>``. Like CUDA, parsing stops
    at the first entry that is invalid (out of range, or a MIG id, which NVML cannot report
    utilization for). Integer indices assume ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` order, which is
    NVML's order and the usual one on multi-GPU hosts.
    """
    if cuda_visible_devices is None:
        return list(range(count))
    visible: list[int | str] = []
    for entry in cuda_visible_devices.split(","):
        entry = entry.strip()
        if entry.startswith("GPU-"):
            visible.append(entry)
            continue
        try:
            index = int(entry)
        except ValueError:
            break
        if not 0 <= index < count or index in visible:
            break
        visible.append(index)
    return visible


class NvmlSource:
    """Samples every visible GPU through NVML. Construction raises if NVML cannot start.

    *nvml* is the ``pynvml`` module by default; tests pass an object with the same functions
    (backed by real ``pynvml`` structs and errors) to exercise failures no CPU machine can produce.
    """

    def __init__(self, nvml: ModuleType | Any | None = None, cuda_visible_devices: str | None = None) -> None:
        self._nvml = nvml if nvml is not None else importlib.import_module("pynvml")
        self._nvml.nvmlInit()
        try:
            if cuda_visible_devices is None:
                cuda_visible_devices = os.environ.get("CUDA_VISIBLE_DEVICES")
            wanted = visible_nvml_devices(cuda_visible_devices, self._nvml.nvmlDeviceGetCount())
            self._handles = [self._handle(device) for device in wanted]
            self.device_names = [self._device_name(h) for h in self._handles]
        except Exception:
            self.close()
            raise
        self._unsupported: set[tuple[int, str]] = set()
        self._warned: set[tuple[int, str]] = set()
        self.error_count = 0
        self.name = f"nvml ({len(self._handles)} GPU(s): {', '.join(self.device_names) or 'none'})"

    def _handle(self, device: int | str) -> Any:
        if isinstance(device, str):
            return self._nvml.nvmlDeviceGetHandleByUUID(device)
        return self._nvml.nvmlDeviceGetHandleByIndex(device)

    def _device_name(self, handle: Any) -> str:
        try:
            name = self._nvml.nvmlDeviceGetName(handle)
        except self._nvml.NVMLError:
            return "unknown GPU"
        return name.decode() if isinstance(name, bytes) else str(name)

    @property
    def device_count(self) -> int:
        return len(self._handles)

    def _call(self, index: int, field: str, fn: Callable[..., Any], *args: Any) -> Any | None:
        """Run one NVML query; on NVMLError return None and remember/log what happened."""
        if (index, field) in self._unsupported:
            return None
        try:
            return fn(*args)
        except self._nvml.NVMLError as err:
            if getattr(err, "value", None) == self._nvml.NVML_ERROR_NOT_SUPPORTED:
                self._unsupported.add((index, field))
                log.info("telemetry: gpu/%d does not support %s through NVML; not logged", index, field)
                return None
            self.error_count += 1
            if (index, field) not in self._warned:
                self._warned.add((index, field))
                log.warning(
                    "telemetry: NVML error reading %s of gpu/%d (%s); the value is skipped while "
                    "it persists and training continues",
                    field, index, err,
                )
            return None

    def sample(self) -> list[DeviceReading]:
        """One reading per visible GPU; fields whose NVML call failed are None."""
        nvml = self._nvml
        now = time.time()
        readings = []
        for index, handle in enumerate(self._handles):
            readings.append(
                reading_from_nvml(
                    index,
                    now,
                    utilization=self._call(index, "util", nvml.nvmlDeviceGetUtilizationRates, handle),
                    memory=self._call(index, "memory", nvml.nvmlDeviceGetMemoryInfo, handle),
                    power_mw=self._call(index, "power", nvml.nvmlDeviceGetPowerUsage, handle),
                    sm_clock_mhz=self._call(
                        index, "sm_clock", nvml.nvmlDeviceGetClockInfo, handle, nvml.NVML_CLOCK_SM
                    ),
                    temp_c=self._call(
                        index, "temp", nvml.nvmlDeviceGetTemperature, handle, nvml.NVML_TEMPERATURE_GPU
                    ),
                )
            )
        return readings

    def close(self) -> None:
        """Shut NVML down; errors are ignored (the process may be exiting after a driver fault)."""
        try:
            self._nvml.nvmlShutdown()
        except Exception:  # noqa: BLE001 - shutdown is best effort
            pass
