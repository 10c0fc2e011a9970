"""ThroughputMeter arithmetic (driven by a scripted clock) and the peak-FLOP table."""

import json

import pytest

from spellfix.telemetry import ThroughputMeter, peak_flops_for, train_flops_per_token
from spellfix.telemetry.throughput import gpu_model_key, measured_cpu_peak_flops, seq2seq_train_flops_per_sample


class ScriptedClock:
    def __init__(self, *times):
        self.times = list(times)

    def __call__(self):
        return self.times.pop(0)


def test_meter_splits_step_time_into_data_wait_and_compute_and_reports_rates():
    # step 1: begin 0.0, data 0.1, end 0.5 ; step 2: begin 0.5, data 0.8, end 1.0
    meter = ThroughputMeter(flops_per_sample=1e9, peak_flops=1e12, clock=ScriptedClock(0.0, 0.1, 0.5, 0.5, 0.8, 1.0))
    for samples, tokens in [(32, 300), (32, 340)]:
        meter.step_begin()
        meter.data_ready()
        meter.step_end(samples, tokens)
    stats = meter.pop()
    assert stats == pytest.approx({
        "samples_per_s": 64.0,
        "tokens_per_s": 640.0,
        "step_time_s": 0.5,
        "data_wait_s": 0.2,
        "data_wait_share": 0.4,
        "mfu": 64 * 1e9 / 1e12,
    })
    assert meter.pop() == {}  # pop resets the window


def test_mfu_from_flops_per_token_uses_non_pad_tokens_and_is_absent_without_a_peak():
    meter = ThroughputMeter(peak_flops=1e12, flops_per_token=6e6, clock=ScriptedClock(0.0, 0.0, 2.0))
    meter.step_begin()
    meter.data_ready()
    meter.step_end(10, 1000)
    assert meter.pop()["mfu"] == pytest.approx(6e6 * 1000 / 2.0 / 1e12)
    no_peak = ThroughputMeter(flops_per_sample=1e9, clock=ScriptedClock(0.0, 1.0))
    no_peak.step_begin()
    no_peak.step_end(1, 1)  # no data_ready: the whole step counts as compute
    stats = no_peak.pop()
    assert "mfu" not in stats and stats["data_wait_s"] == 0.0


def test_meter_refuses_step_end_without_begin_and_conflicting_flop_counts():
    with pytest.raises(RuntimeError, match="without step_begin"):
        ThroughputMeter().step_end(1, 1)
    with pytest.raises(ValueError, match="not both"):
        ThroughputMeter(flops_per_sample=1.0, flops_per_token=1.0)


@pytest.mark.parametrize(
    ("name", "precision", "tflops"),
    [
        ("Tesla V100-SXM2-16GB", "fp16", 125.0),
        ("Tesla V100-SXM2-16GB", "fp32", 15.7),
        ("Tesla V100-PCIE-32GB", "fp16", 112.0),
        ("NVIDIA A10G", "bf16", 70.0),
        ("NVIDIA A100-SXM4-80GB", "bf16", 312.0),
        ("NVIDIA H100 80GB HBM3", "bf16", 989.5),
        ("NVIDIA H100 PCIe", "fp16", 756.0),
    ],
)
def test_gpu_peak_table_matches_cuda_device_names(name, precision, tflops):
    assert peak_flops_for("cuda", precision, name) == pytest.approx(tflops * 1e12)


def test_unknown_gpus_and_missing_precisions_give_no_peak_rather_than_a_guess():
    assert peak_flops_for("cuda", "bf16", "Tesla V100-SXM2-16GB") is None  # V100 has no bf16
    assert peak_flops_for("cuda", "fp16", "NVIDIA GeForce GTX 1080") is None
    assert gpu_model_key("NVIDIA A10") is None
    with pytest.raises(ValueError, match="fp32, tf32, fp16, bf16"):
        peak_flops_for("cuda", "int8", "NVIDIA A10G")
    with pytest.raises(ValueError, match="cpu, cuda"):
        peak_flops_for("tpu", "bf16")


def test_cpu_peak_is_measured_once_and_read_from_the_cache_file(tmp_path):
    cache = tmp_path / "peak.json"
    first = measured_cpu_peak_flops("fp32", size=128, repeats=2, cache_file=cache, refresh=True)
    stored = json.loads(cache.read_text())
    (key,) = stored
    assert key.endswith("|fp32") and stored[key] == first > 1e8
    stored[key] = 12345.0  # a value a benchmark cannot produce: proves the file is read
    cache.write_text(json.dumps(stored))
    from spellfix.telemetry import throughput

    throughput._CPU_PEAK_MEMO.clear()
    assert measured_cpu_peak_flops("fp32", size=128, cache_file=cache) == 12345.0
    throughput._CPU_PEAK_MEMO.clear()


def test_flop_helpers_follow_the_6n_rule():
    assert train_flops_per_token(1e8) == 6e8
    assert seq2seq_train_flops_per_sample(1e6, 2e6, 10, 12) == 6 * (1e7 + 2.4e7)
