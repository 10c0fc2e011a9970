"""Device samplers: the real CPU sampler, NVML struct -> schema conversion, NVML failures.

No GPU or NVML driver exists on the test machines, so the NVML path runs against
``FakeNvml``: an object with pynvml's function names that returns real ``pynvml`` ctypes structs
and raises real ``pynvml.NVMLError`` subclasses, exactly what the driver-backed module returns.
"""

import json
import logging
import time

import pynvml
import pytest

from spellfix.telemetry import RunLogger
from spellfix.telemetry.cpu_sampler import CpuSource
from spellfix.telemetry.nvml_sampler import NvmlSource, reading_from_nvml, visible_nvml_devices
from spellfix.telemetry.sampler import DeviceSampler, open_source
from spellfix.telemetry.schema import GIB, DeviceReading, mean_metrics


class FakeNvml:
    """pynvml's surface for *count* GPUs; ``broken`` makes every device query fail (GPU lost)."""

    NVMLError = pynvml.NVMLError
    NVML_ERROR_NOT_SUPPORTED = pynvml.NVML_ERROR_NOT_SUPPORTED
    NVML_CLOCK_SM = pynvml.NVML_CLOCK_SM
    NVML_TEMPERATURE_GPU = pynvml.NVML_TEMPERATURE_GPU

    def __init__(self, count=2, power_supported=True):
        self.count = count
        self.power_supported = power_supported
        self.broken = False
        self.calls = 0
        self.shutdown = False

    def _check(self):
        self.calls += 1
        if self.broken:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)

    def nvmlInit(self):
        pass

    def nvmlShutdown(self):
        self.shutdown = True

    def nvmlDeviceGetCount(self):
        return self.count

    def nvmlDeviceGetHandleByIndex(self, index):
        return ("handle", index)

    def nvmlDeviceGetHandleByUUID(self, uuid):
        return ("handle", int(uuid.rsplit("-", 1)[1]))

    def nvmlDeviceGetName(self, handle):
        return "Tesla V100-SXM2-16GB"

    def nvmlDeviceGetUtilizationRates(self, handle):
        self._check()
        return pynvml.c_nvmlUtilization_t(gpu=80 + handle[1], memory=30)

    def nvmlDeviceGetMemoryInfo(self, handle):
        self._check()
        return pynvml.c_nvmlMemory_t(total=16 * 2**30, free=4 * 2**30, used=12 * 2**30)

    def nvmlDeviceGetPowerUsage(self, handle):
        self._check()
        if not self.power_supported:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return 250_500  # milliwatts

    def nvmlDeviceGetClockInfo(self, handle, clock_type):
        self._check()
        assert clock_type == pynvml.NVML_CLOCK_SM
        return 1530

    def nvmlDeviceGetTemperature(self, handle, sensor):
        self._check()
        return 61


def test_reading_from_real_nvml_structs_converts_units():
    util = pynvml.c_nvmlUtilization_t(gpu=87, memory=42)
    mem = pynvml.c_nvmlMemory_t(total=16 * 2**30, free=2**30, used=15 * 2**30)
    reading = reading_from_nvml(3, 1000.0, util, mem, power_mw=251_000, sm_clock_mhz=1380, temp_c=70)
    assert reading.flat_metrics() == {
        "gpu/3/util": 87.0,
        "gpu/3/mem_util": 42.0,
        "gpu/3/mem_used_gb": 15.0,
        "gpu/3/mem_total_gb": 16.0,
        "gpu/3/power_w": 251.0,
        "gpu/3/sm_clock_mhz": 1380.0,
        "gpu/3/temp_c": 70.0,
    }


def test_reading_accepts_memory_v2_struct_and_missing_fields():
    mem = pynvml.c_nvmlMemory_v2_t()
    mem.total, mem.used = 80 * 2**30, 20 * 2**30
    reading = reading_from_nvml(0, 1.0, utilization=None, memory=mem)
    assert reading.flat_metrics() == {"gpu/0/mem_used_gb": 20.0, "gpu/0/mem_total_gb": 80.0}
    assert "util" not in reading.to_record()


@pytest.mark.parametrize(
    ("env", "count", "expected"),
    [
        (None, 3, [0, 1, 2]),
        ("2,0", 4, [2, 0]),
        ("1,7,2", 4, [1]),  # CUDA stops at the first invalid ordinal
        ("", 4, []),
        ("GPU-aaaa-1,0", 2, ["GPU-aaaa-1", 0]),
        ("MIG-xyz", 2, []),
    ],
)
def test_cuda_visible_devices_selects_and_orders_nvml_devices(env, count, expected):
    assert visible_nvml_devices(env, count) == expected


def test_nvml_source_samples_visible_gpus_with_their_cuda_positions():
    source = NvmlSource(FakeNvml(count=4), cuda_visible_devices="3,1")
    readings = source.sample()
    assert [r.index for r in readings] == [0, 1]  # keys follow cuda:<i>, not NVML's numbering
    assert readings[0].util == 83.0 and readings[1].util == 81.0
    assert readings[0].mem_used_gb == 12.0 and readings[0].power_w == 250.5
    assert "V100-SXM2" in source.name


def test_unsupported_nvml_field_is_dropped_once_and_not_queried_again():
    nvml = FakeNvml(count=1, power_supported=False)
    source = NvmlSource(nvml, cuda_visible_devices=None)
    first = source.sample()[0]
    calls = nvml.calls
    second = source.sample()[0]
    assert first.power_w is None and second.power_w is None and second.util == 80.0
    assert nvml.calls - calls == 4  # power no longer asked for
    assert source.error_count == 0


def test_gpu_lost_mid_run_is_logged_once_and_training_logging_goes_on(tmp_path, caplog):
    nvml = FakeNvml(count=2)
    source = NvmlSource(nvml, cuda_visible_devices=None)
    caplog.set_level(logging.WARNING, logger="spellfix.telemetry")
    with RunLogger(tmp_path, sample_interval_s=60, device_source=source, tensorboard=False, stdout=False) as logger:
        logger.sampler.sample_once()
        healthy = logger.log(1, {"loss": 3.0})
        nvml.broken = True
        for _ in range(3):
            logger.sampler.sample_once()
        during = logger.log(2, {"loss": 2.5})
        nvml.broken = False
        logger.sampler.sample_once()
        after = logger.log(3, {"loss": 2.0})
    assert healthy["gpu/1/util"] == 81.0 and healthy["gpu/0/power_w"] == 250.5
    assert during["loss"] == 2.5 and not any(k.startswith("gpu/") for k in during)
    assert after["gpu/0/util"] == 80.0
    warnings = [r for r in caplog.records if "GPU is lost" in r.getMessage()]
    assert len(warnings) == 10  # once per (device, field): 2 GPUs x 5 queries, not once per sample
    assert source.error_count == 30
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]


class ExplodingSource:
    name = "exploding"

    def __init__(self):
        self.samples = 0

    def sample(self):
        self.samples += 1
        if self.samples % 2:
            raise RuntimeError("driver reset")
        return [DeviceReading(device="gpu", index=0, time=time.time(), util=50.0)]

    def close(self):
        pass


def test_sampler_thread_survives_a_source_that_raises():
    sampler = DeviceSampler(ExplodingSource(), interval_s=0.001).start()
    deadline = time.monotonic() + 30
    while sampler.sample_count < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    sampler.stop()
    assert sampler.sample_count >= 3 and sampler.error_count >= 3
    assert all(r.util == 50.0 for r in sampler.drain())


def test_cpu_sampler_reads_real_utilization_and_process_memory():
    source = CpuSource()
    sum(i * i for i in range(200_000))  # some CPU work between the two readings
    (reading,) = source.sample()
    assert reading.device == "cpu" and reading.index is None
    assert 0.0 <= reading.util <= 100.0
    import psutil

    rss_gb = psutil.Process().memory_info().rss / GIB
    assert rss_gb * 0.5 < reading.mem_used_gb < rss_gb * 2 + 1
    assert reading.mem_total_gb >= reading.mem_used_gb
    assert set(reading.flat_metrics()) == {"cpu/util", "cpu/proc_util", "cpu/rss_gb", "cpu/mem_total_gb"}
    assert 0.0 <= reading.proc_util <= 100.0


def test_auto_source_falls_back_to_cpu_without_nvml_and_says_so_once(caplog):
    caplog.set_level(logging.INFO, logger="spellfix.telemetry")
    try:
        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
        pytest.skip("this machine has an NVML driver")
    except pynvml.NVMLError:
        pass
    source = open_source("auto")
    assert isinstance(source, CpuSource)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("sampling CPU utilization" in m for m in messages) == 1
    with pytest.raises(RuntimeError, match="NVML requested but unavailable"):
        open_source("nvml")
    with pytest.raises(ValueError, match="auto, nvml, cpu"):
        open_source("gpu")


def test_mean_metrics_averages_each_key_over_the_samples_that_have_it():
    readings = [
        DeviceReading(device="gpu", index=0, time=1.0, util=20.0, power_w=100.0),
        DeviceReading(device="gpu", index=0, time=2.0, util=40.0),
        DeviceReading(device="gpu", index=1, time=2.0, util=90.0),
    ]
    assert mean_metrics(readings) == {"gpu/0/util": 30.0, "gpu/0/power_w": 100.0, "gpu/1/util": 90.0}


def test_cpu_sampler_counts_child_processes_memory(tmp_path):
    import subprocess
    import sys

    import psutil

    ready = tmp_path / "ready"
    child = subprocess.Popen([
        sys.executable, "-c",
        "import pathlib, sys, time; x = bytearray(300 * 2**20); x[::4096] = b'1' * len(x[::4096]); "
        f"pathlib.Path({str(ready)!r}).touch(); time.sleep(60)",
    ])
    try:
        deadline = time.monotonic() + 30
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        own_gb = psutil.Process().memory_info().rss / GIB
        (reading,) = CpuSource().sample()
        assert reading.mem_used_gb > own_gb + 0.25  # the child's ~300 MiB are included
    finally:
        child.kill()
        child.wait()
