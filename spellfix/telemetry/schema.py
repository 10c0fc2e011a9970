"""One device reading, the shape both samplers (NVML and CPU) produce.

Keeping a single schema means the logger, the JSONL files and the report never need to know
whether a run had GPUs: a CPU run simply has ``device="cpu"`` readings whose keys are
``cpu/util`` and ``cpu/rss_gb`` instead of ``gpu/<i>/util`` and ``gpu/<i>/mem_used_gb``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

GIB = float(2**30)  # "gb" in metric names is GiB: what nvidia-smi's MiB and "16GB" GPUs mean.

#: Fields of a reading that carry a measurement, in the order they are logged.
MEASUREMENT_FIELDS = (
    "util",
    "proc_util",
    "mem_util",
    "mem_used_gb",
    "mem_total_gb",
    "power_w",
    "sm_clock_mhz",
    "temp_c",
)

# For the CPU twin the "memory used" is this process's resident set (plus its children, e.g.
# data-loader workers): that is the CPU analogue of what the training job holds on a GPU.
_CPU_KEY_NAMES = {"mem_used_gb": "rss_gb"}


@dataclass(frozen=True)
class DeviceReading:
    """One sample of one device. Fields a source cannot measure stay None and are not logged.

    util        compute utilization in percent (GPU: NVML "gpu" rate; CPU: system-wide percent)
    proc_util   CPU only: this process's CPU use in percent of all cores (on a shared machine
                ``util`` includes other jobs; this does not; data-loader workers not included)
    mem_util    memory-controller utilization in percent (GPU only)
    mem_used_gb memory used in GiB (GPU: device memory; CPU: process RSS incl. children)
    mem_total_gb total memory in GiB (GPU: device memory; CPU: physical RAM)
    power_w     board power draw in watts (GPU only)
    sm_clock_mhz current SM clock (GPU only)
    temp_c      GPU core temperature in degrees Celsius
    """

    device: str  # "gpu" or "cpu"
    index: int | None  # GPU position among the visible GPUs; None for the CPU
    time: float  # unix seconds when the sample was taken
    util: float | None = None
    proc_util: float | None = None
    mem_util: float | None = None
    mem_used_gb: float | None = None
    mem_total_gb: float | None = None
    power_w: float | None = None
    sm_clock_mhz: float | None = None
    temp_c: float | None = None

    @property
    def prefix(self) -> str:
        """Key prefix of this device in metric rows: ``gpu/<i>/`` or ``cpu/``."""
        return f"gpu/{self.index}/" if self.device == "gpu" else "cpu/"

    def metric_key(self, field: str) -> str:
        """Flat metric key of *field* for this device, e.g. ``gpu/0/util`` or ``cpu/rss_gb``."""
        name = _CPU_KEY_NAMES.get(field, field) if self.device == "cpu" else field
        return self.prefix + name

    def flat_metrics(self) -> dict[str, float]:
        """Measured fields as flat metric keys (None fields left out)."""
        out: dict[str, float] = {}
        for field in MEASUREMENT_FIELDS:
            value = getattr(self, field)
            if value is not None:
                out[self.metric_key(field)] = float(value)
        return out

    def to_record(self) -> dict[str, object]:
        """JSON-ready dict with None fields dropped (one line of ``logs/device.jsonl``)."""
        return {k: v for k, v in asdict(self).items() if v is not None}


def mean_metrics(readings: list[DeviceReading]) -> dict[str, float]:
    """Average each flat metric key over *readings* (keys missing in a sample are skipped).

    The logger reports the mean of all samples taken since the previous log step rather than
    the last instantaneous sample, so a 30-second log interval is not summarised by one blip.
    """
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for reading in readings:
        for key, value in reading.flat_metrics().items():
            sums[key] = sums.get(key, 0.0) + value
            counts[key] = counts.get(key, 0) + 1
    return {key: sums[key] / counts[key] for key in sums}
