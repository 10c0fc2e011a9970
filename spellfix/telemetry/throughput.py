"""Throughput meter for the training loop, and the FLOP figures behind MFU.

The meter takes host timestamps only (``time.perf_counter``) and never synchronises the device:
calling ``torch.cuda.synchronize()`` every step to get "exact" step times would itself slow
training. Averaged over a log interval, host times equal device times in steady state, because
the host cannot run more than a bounded queue ahead of the GPU and the loss is read (``.item()``)
at log steps anyway.

MFU (model FLOPs utilisation) = achieved model FLOP/s ÷ the device's dense peak FLOP/s for the
precision in use. GPU peaks come from vendor datasheets (:data:`GPU_PEAK_TFLOPS`); on CPU the
"peak" is measured once with a short matmul benchmark and cached, since no datasheet applies.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "tf32", "fp16", "bf16")

#: Dense (no 2:4 sparsity) peak TFLOP/s per GPU model and precision, from NVIDIA's datasheets
#: (A10G: AWS/NVIDIA g5 figures). "fp32" is plain CUDA-core FP32 — PyTorch's default matmul
#: precision — and "tf32" the tensor-core TF32 rate used when TF32 matmuls are enabled. None =
#: the GPU has no tensor-core support for that type (V100 has no bf16: use fp16 there).
GPU_PEAK_TFLOPS: dict[str, dict[str, float | None]] = {
    "V100-SXM2": {"fp32": 15.7, "tf32": None, "fp16": 125.0, "bf16": None},
    "V100-PCIE": {"fp32": 14.0, "tf32": None, "fp16": 112.0, "bf16": None},
    "A10G": {"fp32": 31.2, "tf32": 35.0, "fp16": 70.0, "bf16": 70.0},
    "A100": {"fp32": 19.5, "tf32": 156.0, "fp16": 312.0, "bf16": 312.0},
    "H100-SXM": {"fp32": 67.0, "tf32": 494.5, "fp16": 989.5, "bf16": 989.5},
    "H100-PCIE": {"fp32": 51.0, "tf32": 378.0, "fp16": 756.0, "bf16": 756.0},
    "H100-NVL": {"fp32": 60.0, "tf32": 417.5, "fp16": 835.0, "bf16": 835.0},
}


def gpu_model_key(device_name: str) -> str | None:
    """Map a CUDA/NVML device name ("Tesla V100-SXM2-16GB", "NVIDIA A10G", "NVIDIA H100 80GB
    HBM3") to a :data:`GPU_PEAK_TFLOPS` key, or None for GPUs not in the table."""
    name = device_name.lower()
    if "h100" in name:
        if "pcie" in name:
            return "H100-PCIE"
        return "H100-NVL" if "nvl" in name else "H100-SXM"
    if "a100" in name:
        return "A100"
    if "a10g" in name:
        return "A10G"
    if "v100" in name:
        return "V100-PCIE" if "pcie" in name else "V100-SXM2"
    return None


def _check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of: {', '.join(PRECISIONS)}")


def peak_flops_for(device: str, precision: str, device_name: str | None = None) -> float | None:
    """Peak FLOP/s of one device for *precision* (fp32|tf32|fp16|bf16), or None if unknown.

    ``device="cuda"``: datasheet value for *device_name* (default: ``torch.cuda.get_device_name()``);
    None for GPUs not in :data:`GPU_PEAK_TFLOPS` or precisions they lack, so MFU is left out
    rather than made up. ``device="cpu"``: the matmul benchmark of :func:`measured_cpu_peak_flops`.
    """
    _check_precision(precision)
    if device == "cpu":
        return measured_cpu_peak_flops("fp32" if precision == "tf32" else precision)
    if device != "cuda":
        raise ValueError(f"device {device!r} is not one of: cpu, cuda")
    if device_name is None:
        import torch

        if not torch.cuda.is_available():
            return None
        device_name = torch.cuda.get_device_name()
    key = gpu_model_key(device_name)
    if key is None:
        log.info("telemetry: no peak-FLOP figure for GPU %r; MFU is not reported", device_name)
        return None
    tflops = GPU_PEAK_TFLOPS[key][precision]
    return None if tflops is None else tflops * 1e12


_CPU_PEAK_MEMO: dict[str, float] = {}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def _cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "spellfix" / "cpu_peak_flops.json"


def measured_cpu_peak_flops(precision: str = "fp32", *, size: int = 512, repeats: int = 8,
                            budget_s: float = 0.5, cache_file: Path | None = None, refresh: bool = False) -> float:
    """Best matmul FLOP/s of this CPU with torch's current thread count, measured and cached.

    A CPU has no meaningful datasheet peak for PyTorch, so the denominator of CPU MFU is what a
    square matmul reaches (``2·n³`` FLOPs, best of up to *repeats* runs within *budget_s*
    seconds after one warm-up: fp16 matmuls on CPUs without fp16 arithmetic run ~50x slower than
    bf16, and training start-up must not wait for a long benchmark). The result is kept
    in memory and in ``~/.cache/spellfix/cpu_peak_flops.json`` keyed by CPU model, thread count,
    torch version and precision. Measured on a busy machine it comes out low: pass
    ``refresh=True`` (or delete the file) to measure again.
    """
    _check_precision(precision)
    import torch

    key = f"{_cpu_model()}|threads={torch.get_num_threads()}|torch={torch.__version__}|{precision}"
    if not refresh and key in _CPU_PEAK_MEMO:
        return _CPU_PEAK_MEMO[key]
    path = cache_file or _cache_file()
    cached: dict[str, float] = {}
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cached = {}
    if not refresh and isinstance(cached.get(key), (int, float)):
        _CPU_PEAK_MEMO[key] = float(cached[key])
        return _CPU_PEAK_MEMO[key]

    dtype = {"fp32": torch.float32, "tf32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    begin = time.perf_counter()
    torch.matmul(a, b)  # warm-up: thread pool, packing buffers
    best = time.perf_counter() - begin
    deadline = time.perf_counter() + budget_s
    for _ in range(repeats):
        if time.perf_counter() >= deadline:
            break
        begin = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - begin)
    flops = 2.0 * size**3 / best
    _CPU_PEAK_MEMO[key] = flops
    cached[key] = flops
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cached, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as err:  # read-only home in a container: the in-memory value still works
        log.info("telemetry: could not cache the CPU peak in %s (%s)", path, err)
    log.info("telemetry: measured CPU %s matmul peak %.1f GFLOP/s", precision, flops / 1e9)
    return flops


def train_flops_per_token(n_params: float) -> float:
    """Approximate training FLOPs per token for a model with *n_params* parameters: ``6·N``.

    The forward pass costs ~2 FLOPs per parameter per token (one multiply-add) and the backward
    pass ~4 (gradients w.r.t. activations and weights), hence 6N. It ignores attention-score
    FLOPs, which are small for short search queries. For an encoder-decoder every parameter
    sees either source or target tokens, not both: use :func:`seq2seq_train_flops_per_sample`
    when the encoder and decoder sizes differ or sources and targets differ in length.
    """
    return 6.0 * float(n_params)


def seq2seq_train_flops_per_sample(encoder_params: float, decoder_params: float,
                                   source_tokens: float, target_tokens: float) -> float:
    """6N-style training FLOPs of one encoder-decoder sample.

    ``6·(encoder_params·source_tokens + decoder_params·target_tokens)``; count the LM head and
    the (tied) output embedding with the decoder, since they run once per target token.
    """
    return 6.0 * (encoder_params * source_tokens + decoder_params * target_tokens)


class ThroughputMeter:
    """Per-step timing around data loading and compute, averaged between :meth:`pop` calls.

    Call order per (micro-)step::

        meter.step_begin()            # right before fetching the next batch
        batch = next(it); ...to(device)
        meter.data_ready()            # the batch is on the device
        ...forward/backward/step...
        meter.step_end(samples, tokens)

    MFU is reported when both a FLOP count (*flops_per_sample*, or *flops_per_token* applied to
    the non-pad tokens given to :meth:`step_end`) and *peak_flops* are known.
    """

    def __init__(self, flops_per_sample: float | None = None, peak_flops: float | None = None, *,
                 flops_per_token: float | None = None, clock: Callable[[], float] = time.perf_counter) -> None:
        if flops_per_sample is not None and flops_per_token is not None:
            raise ValueError("give flops_per_sample or flops_per_token, not both")
        if peak_flops is not None and not peak_flops > 0:
            raise ValueError(f"peak_flops must be > 0, got {peak_flops!r}")
        self.flops_per_sample = flops_per_sample
        self.flops_per_token = flops_per_token
        self.peak_flops = peak_flops
        self._clock = clock
        self._begin: float | None = None
        self._ready: float | None = None
        self._reset()

    def _reset(self) -> None:
        self._steps = 0
        self._samples = 0
        self._tokens = 0
        self._time = 0.0
        self._wait = 0.0

    def step_begin(self) -> None:
        self._begin = self._clock()
        self._ready = None

    def data_ready(self) -> None:
        self._ready = self._clock()

    def step_end(self, samples: int, tokens: int) -> None:
        """Close the step started by :meth:`step_begin`. Host clock only: no device sync."""
        end = self._clock()
        if self._begin is None:
            raise RuntimeError("ThroughputMeter.step_end() called without step_begin()")
        ready = self._ready if self._ready is not None else self._begin
        self._steps += 1
        self._samples += int(samples)
        self._tokens += int(tokens)
        self._time += end - self._begin
        self._wait += ready - self._begin
        self._begin = self._ready = None

    def pop(self) -> dict[str, float]:
        """Averages since the previous pop, then reset. Empty dict if no step completed.

        Keys: ``samples_per_s``, ``tokens_per_s``, ``step_time_s`` (mean), ``data_wait_s`` (mean
        per step), ``data_wait_share`` (share of step time spent waiting for data), and ``mfu``
        (0–1) when FLOPs and the peak are known.
        """
        if self._steps == 0 or self._time <= 0:
            self._reset()
            return {}
        stats = {
            "samples_per_s": self._samples / self._time,
            "tokens_per_s": self._tokens / self._time,
            "step_time_s": self._time / self._steps,
            "data_wait_s": self._wait / self._steps,
            "data_wait_share": self._wait / self._time,
        }
        if self.peak_flops:
            flops = None
            if self.flops_per_sample is not None:
                flops = self.flops_per_sample * self._samples
            elif self.flops_per_token is not None:
                flops = self.flops_per_token * self._tokens
            if flops is not None:
                stats["mfu"] = flops / self._time / self.peak_flops
        self._reset()
        return stats
