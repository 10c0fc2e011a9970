"""Training throughput benchmark: transformers' Seq2SeqTrainer (naive and tuned) vs spellfix, side by side.

Every system trains the same bart-base-shaped model (``spellfix.modeling.BART_BASE_SHAPE``, random
init) on the same pairs (``data/clean_queries.txt`` through the noise synthesizer, the
``bart-base-cpu-bench`` recipe's data section) with the same token sequences (source ``<s> .. </s>``,
labels ``.. </s>``, decoder input ``</s> ..`` — so nobody does more work per example than another):

- ``naive-trainer``: ``Seq2SeqTrainer`` as a new user writes it: batch 32, everything padded to 64
  tokens (``DataCollatorForSeq2Seq(padding="max_length")``), fp32, default arguments.
- ``tuned-trainer``: dynamic padding, ``train_sampling_strategy="group_by_length"``, ``bf16=True``
  (bf16 autocast over fp32 weights), ``optim="adamw_torch_fused"``, batch 256.
- ``spellfix``: ``spellfix.train`` with ``recipes/bart-base-cpu-bench.yaml`` (batch 256) — the same
  precision mode as the tuned Trainer: bf16 autocast over fp32 weights, fp32 master weights and
  optimizer. Like for like: the comparison is of the loop, not of the arithmetic.
- ablations (optional): ``spellfix`` with one recipe option switched back, to measure what each buys;
  ``spellfix bf16_weights=true`` is the other arithmetic (forward/backward on a pure-bf16 copy of
  the weights) as its own named option — its accuracy cost is measured by
  ``benchmarks/train_throughput.py --bf16-weights-accuracy``.

Timing: each run trains ``warmup + steps`` optimizer steps; the figures come from the wall time
between consecutive step *ends* after the warm-up (data loading, forward, backward, optimizer,
the loop's own bookkeeping — everything a step costs). Runs are interleaved (a, b, c, a, b, c, ...,
rotating the order each round) so load from other processes hits all alike, and the reported
figure is the median over ``repeats`` runs; ratios are ratios of those medians. The bf16/fp32 matmul
peaks are measured in every round of the same process, and the load average is recorded.

Figures per system: ``samples_per_s`` (examples trained per second), ``tokens_per_s`` (non-pad
source + target tokens per second), ``epoch_samples_per_s`` (tokens/s divided by the dataset's mean
non-pad tokens per example: how fast an *epoch* goes, which removes the luck of which batches the
few measured steps drew — the Trainer's length grouping serves each mega-batch longest first),
``median_step_s``, ``achieved_tflops`` and ``mfu`` (model FLOPs of the non-pad tokens, 6·N per token
for the encoder or decoder + LM head it passes through, over the median of every bf16 matmul peak
measured during the benchmark — at the start of each round and before each run; one denominator for
all systems, because a single 1024² matmul timing swings by 2x on a shared machine; padding is
wasted work, not model FLOPs), and ``peak_rss_gb`` (the process's peak resident memory during the
run, sampled every 50 ms; all systems share one process, so it includes the common baseline).
"""

from __future__ import annotations

import gc
import json
import logging
import os
import platform
import shutil
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

if TYPE_CHECKING:
    from spellfix.training.step import TrainStep

log = logging.getLogger(__name__)

SYSTEMS = ("naive-trainer", "tuned-trainer", "tuned-trainer cpu_allocator=retain", "spellfix")
#: the Trainer under spellfix's CPU heap setting (spellfix.training.allocator): shows how much of the
#: gap is the allocator, which a Trainer user could also get (LD_PRELOAD jemalloc/tcmalloc, mallopt)
RECIPE = "bart-base-cpu-bench"
#: Ablations: spellfix with one option switched back to the slower choice (name -> recipe overrides).
#: (the recipe runs attention=eager; attention=sdpa is the default kernel switched back)
ABLATIONS: dict[str, dict[str, Any]] = {
    "spellfix loss=full-logits": {"train.loss": "full-logits"},
    "spellfix cpu_allocator=system": {"train.cpu_allocator": "system"},
    "spellfix bf16_weights=true": {"train.bf16_weights": True},
    "spellfix attention=sdpa": {"train.attention": "sdpa"},
    "spellfix length_key=source": {"train.batching.length_key": "source"},
    "spellfix group_by_length=false": {"train.batching.group_by_length": False},
    "spellfix padding=max_length": {"train.batching.padding": "max_length"},
    "spellfix fused_adamw=off": {"train.fused_adamw": "off", "train.host_sync": "every_step"},
    "spellfix host_sync=every_step": {"train.host_sync": "every_step"},
    "spellfix num_workers=1": {"train.batching.num_workers": 1},
    # token budget: micro-batches of <= 1024 padded tokens (~80 queries), 4 per step (~300 examples)
    "spellfix max_tokens=1024": {"train.batching.max_tokens": 1024, "train.per_device_batch_size": 64},
}
RESULTS_DIR = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
NAIVE_MAX_LENGTH = 64


# --------------------------------------------------------------------------------------------- data


@dataclass
class BenchData:
    """The pairs, tokenizer and token ids every system trains on."""

    queries: list[str]
    corrections: list[str]
    tokenizer_dir: Path
    source_ids: list[list[int]]
    target_ids: list[list[int]]

    @property
    def mean_tokens(self) -> float:
        """Mean non-pad (source + target) tokens per example."""
        return (sum(map(len, self.source_ids)) + sum(map(len, self.target_ids))) / len(self.source_ids)

    @property
    def mean_source_target(self) -> tuple[float, float]:
        n = len(self.source_ids)
        return sum(map(len, self.source_ids)) / n, sum(map(len, self.target_ids)) / n


def prepare_data(work_dir: Path, n_pairs: int, seed: int = 0) -> BenchData:
    """Noisy pairs from the first ``n_pairs`` clean queries + the recipe's byte-level BPE, trained once."""
    from spellfix.config import load_recipe
    from spellfix.data.pipeline import load_training_pairs
    from spellfix.modeling import encode_sources, encode_targets, load_tokenizer, train_byte_bpe_tokenizer

    recipe = load_recipe(RECIPE, overrides={"data.max_clean_queries": n_pairs})
    queries, corrections = load_training_pairs(recipe.data, seed=seed)
    tok_dir = work_dir / "tokenizer"
    if not (tok_dir / "tokenizer.json").exists():
        tok = recipe.model.tokenizer
        train_byte_bpe_tokenizer(queries + corrections, tok.vocab_size, tok.min_frequency).save_pretrained(tok_dir)
    tokenizer = load_tokenizer(tok_dir)
    src = encode_sources(tokenizer, queries, recipe.data.max_source_length)
    tgt = encode_targets(tokenizer, corrections, recipe.data.max_target_length)
    return BenchData(queries, corrections, tok_dir, src, tgt)


def model_flops_per_token(shape: dict[str, Any]) -> tuple[float, float]:
    """Training FLOPs (6·N) per source token and per target token of a BART of ``shape``.

    Source tokens pass the encoder layers; target tokens the decoder layers (self + cross attention
    projections) and the LM head (vocab x d_model). Embedding lookups and the attention-score
    matmuls (tiny at query lengths) are not counted.
    """
    d, vocab = shape["d_model"], shape["vocab_size"]
    enc_layer = 4 * d * d + 2 * d * shape["encoder_ffn_dim"]
    dec_layer = 8 * d * d + 2 * d * shape["decoder_ffn_dim"]
    return 6.0 * shape["encoder_layers"] * enc_layer, 6.0 * (shape["decoder_layers"] * dec_layer + vocab * d)


# ----------------------------------------------------------------------------------------- measuring


@dataclass
class RunRecord:
    """What one run measured: step-end times, samples and non-pad tokens of each step."""

    step_ends: list[float] = field(default_factory=list)
    samples: list[int] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    peak_rss_gb: float = 0.0
    load_before: float = 0.0
    load_after: float = 0.0
    setup_s: float = 0.0


class _RssPeak:
    """Samples this process's RSS every 50 ms in a thread; ``peak`` in bytes."""

    def __init__(self, interval_s: float = 0.05):
        import psutil

        self._proc, self._interval, self.peak = psutil.Process(), interval_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            self._stop.wait(self._interval)

    def __enter__(self) -> "_RssPeak":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


def measure_matmul_peak(dtype_name: str, size: int = 1024, tries: int = 5) -> float:
    """Best-of-``tries`` FLOP/s of a square matmul in ``dtype_name`` (bf16|fp32) with torch's threads."""
    import torch

    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype_name]
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(tries):
        begin = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - begin)
    return 2.0 * size**3 / best


# ------------------------------------------------------------------------------------------ systems


def _hf_model(seed: int):
    import torch
    from transformers import BartConfig, BartForConditionalGeneration

    from spellfix.modeling import BART_BASE_SHAPE, BOS_ID, EOS_ID, PAD_ID

    torch.manual_seed(seed)
    config = BartConfig(**BART_BASE_SHAPE, pad_token_id=PAD_ID, bos_token_id=BOS_ID, eos_token_id=EOS_ID,
                        decoder_start_token_id=EOS_ID, forced_bos_token_id=None, forced_eos_token_id=None)
    return BartForConditionalGeneration(config)


def run_trainer(data: BenchData, *, tuned: bool, steps: int, seed: int, work_dir: Path, threads: int,
                cpu_allocator: str = "system") -> RunRecord:
    """One Seq2SeqTrainer run (naive or tuned); step ends recorded by a callback. ``cpu_allocator``:
    ``retain`` runs it under spellfix's CPU heap setting (what ``train.cpu_allocator`` does)."""
    import datasets
    import torch
    from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainer, Seq2SeqTrainingArguments, TrainerCallback

    from spellfix.modeling import load_tokenizer

    record = RunRecord(load_before=os.getloadavg()[0])
    begin = time.perf_counter()
    tokenizer = load_tokenizer(data.tokenizer_dir)
    train_set = datasets.Dataset.from_dict({
        "input_ids": data.source_ids,
        "attention_mask": [[1] * len(s) for s in data.source_ids],
        "labels": data.target_ids,
    })
    model = _hf_model(seed)
    if tuned:
        collator = DataCollatorForSeq2Seq(tokenizer, model=model, padding=True)
    else:
        collator = DataCollatorForSeq2Seq(tokenizer, model=model, padding="max_length", max_length=NAIVE_MAX_LENGTH)

    def counting_collator(features):
        # batches are collated in step order (no workers): remember each one's real token count
        record.tokens.append(sum(len(f["input_ids"]) + len(f["labels"]) for f in features))
        record.samples.append(len(features))
        return collator(features)

    class StepEnds(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            record.step_ends.append(time.perf_counter())

    common = dict(
        output_dir=str(work_dir / ("tuned" if tuned else "naive")), max_steps=steps, learning_rate=4e-4,
        warmup_steps=min(10, steps), logging_strategy="no", save_strategy="no", eval_strategy="no",
        report_to="none", use_cpu=True, seed=seed, disable_tqdm=True, dataloader_num_workers=0,
    )
    if tuned:
        args = Seq2SeqTrainingArguments(
            **common, per_device_train_batch_size=256, train_sampling_strategy="group_by_length",
            bf16=True, optim="adamw_torch_fused",
        )
    else:
        args = Seq2SeqTrainingArguments(**common, per_device_train_batch_size=32)
    trainer = Seq2SeqTrainer(model=model, args=args, train_dataset=train_set, data_collator=counting_collator,
                             processing_class=tokenizer, callbacks=[StepEnds()])
    record.setup_s = time.perf_counter() - begin
    torch.set_num_threads(threads)
    from spellfix.training.allocator import cpu_heap

    with _RssPeak() as rss, cpu_heap(cpu_allocator, "cpu"):
        trainer.train()
    record.peak_rss_gb = rss.peak / 1e9
    record.load_after = os.getloadavg()[0]
    # the collator ran once per step (plus accelerate's one-batch look-ahead): align with steps
    record.tokens, record.samples = record.tokens[: len(record.step_ends)], record.samples[: len(record.step_ends)]
    del trainer, model
    return record


def run_spellfix(data: BenchData, *, steps: int, seed: int, work_dir: Path, threads: int,
                 overrides: dict[str, Any] | None = None) -> RunRecord:
    """One ``spellfix.train`` run of the cpu-bench recipe; per-step rows read from metrics.jsonl."""
    import torch

    from spellfix.config import load_recipe
    from spellfix.training.loop import train

    record = RunRecord(load_before=os.getloadavg()[0])
    out = work_dir / "spellfix"
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(data.tokenizer_dir, out / "tokenizer")  # the shared tokenizer: train() reuses it
    recipe = load_recipe(RECIPE, overrides={
        "data.max_clean_queries": len(data.queries), "data.dev": None, "train.max_steps": steps,
        "train.log_every": 1, "train.eval_every": 0, "train.save_every": 0, "train.seed": seed,
        "telemetry.stdout": False, "telemetry.tensorboard": False, **(overrides or {}),
    })
    torch.set_num_threads(threads)
    begin = time.perf_counter()
    with _RssPeak() as rss:
        train(recipe, out, resume="never", progress=False)
    record.peak_rss_gb = rss.peak / 1e9
    record.load_after = os.getloadavg()[0]
    rows = [json.loads(line) for line in (out / "logs" / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "samples_per_s" in r]
    # rows carry unix `time` at the end of each step; samples/tokens = rate x the step's own time
    offset = time.perf_counter() - time.time()
    record.step_ends = [r["time"] + offset for r in rows]
    record.samples = [round(r["samples_per_s"] * r["step_time_s"]) for r in rows]
    record.tokens = [round(r["tokens_per_s"] * r["step_time_s"]) for r in rows]
    record.setup_s = (record.step_ends[0] - begin) if record.step_ends else 0.0
    shutil.rmtree(out, ignore_errors=True)
    return record


def summarize(record: RunRecord, warmup: int, flops_per_token: float) -> dict[str, float]:
    """Figures of one run over the steps after the warm-up."""
    ends = record.step_ends
    # step k's duration is end(k) - end(k-1): measured steps start after the warm-up, and never
    # with the first step (no end before it)
    first = max(warmup, 1)
    if len(ends) < first + 1:
        raise RuntimeError(f"run recorded {len(ends)} step ends; need at least {first + 1}")
    times = [b - a for a, b in zip(ends[first - 1 : -1], ends[first:])]
    samples = sum(record.samples[first : len(ends)])
    tokens = sum(record.tokens[first : len(ends)])
    total = sum(times)
    tokens_per_s = tokens / total
    return {
        "samples_per_s": samples / total,
        "tokens_per_s": tokens_per_s,
        "median_step_s": statistics.median(times),
        "achieved_tflops": tokens_per_s * flops_per_token / 1e12,
        "peak_rss_gb": record.peak_rss_gb,
        "measured_steps": len(times),
        "load_avg_1m": (record.load_before + record.load_after) / 2,
    }


# ------------------------------------------------------------------------------------------ driver


def run_train_benchmark(
    output_dir: str | Path | None = RESULTS_DIR,
    *,
    systems: Sequence[str] = SYSTEMS,
    ablations: Sequence[str] = (),
    steps: int = 20,
    naive_steps: int = 3,
    warmup: int = 1,
    repeats: int = 3,
    threads: int = 2,
    n_pairs: int | None = None,
    seed: int = 0,
    work_dir: str | Path | None = None,
    name: str = "train_throughput",
    json_out: str | Path | None = None,
    progress: Callable[[str], None] = lambda s: log.info("%s", s),
) -> list[dict[str, Any]]:
    """Run the side-by-side training benchmark and return its JSON entries.

    Writes ``<output_dir>/<name>.json`` and ``.md`` (``json_out=PATH`` writes PATH and the .md next
    to it; ``output_dir=None`` writes nothing). ``n_pairs`` defaults to 4 x (warmup + steps) x 256
    so that the tuned Trainer's length-grouped sampler makes mega-batches of exactly the steps run
    (its mega-batch is a quarter of the data), i.e. its measured steps span short and long batches.
    ``ablations``: names from :data:`ABLATIONS` (spellfix with one option reverted).
    ``naive_steps``: measured steps of the naive Trainer — its batches all have the same padded
    shape (32 x 64), so a few steps measure it as well as many, and each costs ~10x a tuned step.
    """
    import torch

    unknown = [s for s in systems if s not in SYSTEMS] + [a for a in ablations if a not in ABLATIONS]
    if unknown:
        raise ValueError(f"unknown system(s) {unknown}; choose from {', '.join(SYSTEMS + tuple(ABLATIONS))}")
    if min(steps, naive_steps) < 1 or repeats < 1 or warmup < 0 or warmup + min(steps, naive_steps) < 2:
        raise ValueError("need steps, naive_steps >= 1, repeats >= 1, warmup >= 0 and warmup + steps >= 2 "
                         "(a step is timed from the end of the one before it)")
    if json_out is not None:
        output_dir, name = Path(json_out).parent, Path(json_out).stem
    from spellfix.modeling import BART_BASE_SHAPE

    torch.set_num_threads(threads)
    n_pairs = n_pairs or 4 * (warmup + steps) * 256
    tmp = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="spellfix-bench-train-"))
    tmp.mkdir(parents=True, exist_ok=True)
    progress(f"preparing {n_pairs} pairs and the tokenizer in {tmp}")
    data = prepare_data(tmp, n_pairs, seed)
    src_flops, tgt_flops = model_flops_per_token(BART_BASE_SHAPE)
    mean_src, mean_tgt = data.mean_source_target
    flops_per_token = (src_flops * mean_src + tgt_flops * mean_tgt) / (mean_src + mean_tgt)

    runners: dict[str, Callable[[int], RunRecord]] = {
        "naive-trainer": lambda r: run_trainer(data, tuned=False, steps=warmup + naive_steps, seed=seed + r, work_dir=tmp, threads=threads),
        "tuned-trainer": lambda r: run_trainer(data, tuned=True, steps=warmup + steps, seed=seed + r, work_dir=tmp, threads=threads),
        "tuned-trainer cpu_allocator=retain": lambda r: run_trainer(
            data, tuned=True, steps=warmup + steps, seed=seed + r, work_dir=tmp, threads=threads, cpu_allocator="retain"),
        "spellfix": lambda r: run_spellfix(data, steps=warmup + steps, seed=seed + r, work_dir=tmp, threads=threads),
    }
    for ablation in ablations:
        runners[ablation] = lambda r, o=ABLATIONS[ablation]: run_spellfix(
            data, steps=warmup + steps, seed=seed + r, work_dir=tmp, threads=threads, overrides=o
        )
    order = [s for s in systems] + list(ablations)
    runs: dict[str, list[dict[str, float]]] = {s: [] for s in order}
    peaks: dict[str, list[float]] = {"bf16": [], "fp32": []}
    loads: list[float] = []
    started = time.time()
    for r in range(repeats):
        for dtype in peaks:
            peaks[dtype].append(measure_matmul_peak(dtype))
        shift = r % len(order)
        for system in order[shift:] + order[:shift]:
            gc.collect()
            peaks["bf16"].append(measure_matmul_peak("bf16"))  # right before the run: the load it meets
            record = runners[system](r)
            figures = summarize(record, warmup, flops_per_token)
            runs[system].append(figures)
            loads.append(figures["load_avg_1m"])
            progress(
                f"round {r + 1}/{repeats} {system}: {figures['samples_per_s']:.2f} samples/s, "
                f"{figures['tokens_per_s']:.0f} tokens/s, median step {figures['median_step_s']:.2f} s, "
                f"load {figures['load_avg_1m']:.1f}"
            )
    bf16_peak = statistics.median(peaks["bf16"])
    entries = [_entry(name_, figures, data.mean_tokens, flops_per_token, bf16_peak) for name_, figures in runs.items()]
    entries.append(_summary(entries))
    entries.append(_machine(threads, peaks, loads, time.time() - started))
    entries.append({"name": "versions", **_versions()})
    entries.append(_setup(data, n_pairs, steps, naive_steps, warmup, repeats, seed, flops_per_token))
    if work_dir is None:
        shutil.rmtree(tmp, ignore_errors=True)
    if output_dir is not None:
        write_results(entries, Path(output_dir), name)
    return entries


def _median(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def _entry(name: str, runs: list[dict[str, float]], mean_tokens: float, flops_per_token: float,
           bf16_peak: float) -> dict[str, Any]:
    """Medians over the runs; MFU = the median achieved FLOP/s over ``bf16_peak`` (the benchmark's
    median bf16 matmul peak)."""
    tokens_per_s = _median(runs, "tokens_per_s")
    return {
        "name": name,
        "samples_per_s": round(_median(runs, "samples_per_s"), 3),
        "tokens_per_s": round(tokens_per_s, 1),
        "epoch_samples_per_s": round(tokens_per_s / mean_tokens, 3),
        "median_step_s": round(_median(runs, "median_step_s"), 3),
        "achieved_tflops": round(tokens_per_s * flops_per_token / 1e12, 4),
        "mfu": round(tokens_per_s * flops_per_token / bf16_peak, 4),
        "peak_rss_gb": round(max(r["peak_rss_gb"] for r in runs), 2),
        "repeats": len(runs),
        "runs_samples_per_s": [round(r["samples_per_s"], 3) for r in runs],
        "runs_tokens_per_s": [round(r["tokens_per_s"], 1) for r in runs],
        "runs_load_avg_1m": [round(r["load_avg_1m"], 2) for r in runs],
    }


def _summary(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Ratios of medians, and the acceptance targets of the issue (spellfix >= 1.3x tuned, >= 15x naive)."""
    by = {e["name"]: e for e in entries}
    out: dict[str, Any] = {"name": "summary"}
    if "spellfix" in by:
        for other, target in (("tuned-trainer", 1.3), ("naive-trainer", 15.0), ("tuned-trainer cpu_allocator=retain", None)):
            if other not in by:
                continue
            for key in ("samples_per_s", "epoch_samples_per_s", "tokens_per_s"):
                out[f"spellfix_vs_{other}_{key}"] = round(by["spellfix"][key] / by[other][key], 3)
            if target is not None:
                out[f"target_vs_{other}"] = target
                out[f"meets_target_vs_{other}"] = bool(by["spellfix"]["samples_per_s"] / by[other]["samples_per_s"] >= target)
        for e in entries:
            if e["name"].startswith("spellfix "):
                out[f"{e['name']}_vs_spellfix"] = round(e["samples_per_s"] / by["spellfix"]["samples_per_s"], 3)
    return out


def _machine(threads: int, peaks: dict[str, list[float]], loads: list[float], wall_s: float) -> dict[str, Any]:
    import torch

    from spellfix.telemetry.throughput import _cpu_model

    return {
        "name": "machine",
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "torch_threads": threads,
        "bf16_matmul_peak_gflops": round(statistics.median(peaks["bf16"]) / 1e9, 1),
        "fp32_matmul_peak_gflops": round(statistics.median(peaks["fp32"]) / 1e9, 1),
        "measured_bf16_peaks_gflops": [round(p / 1e9, 1) for p in peaks["bf16"]],
        "load_avg_1m_median": round(statistics.median(loads), 2) if loads else None,
        "load_avg_1m_max": round(max(loads), 2) if loads else None,
        "mkldnn_bf16": bool(getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)()),
        "wall_time_s": round(wall_s, 1),
        "platform": platform.platform(),
    }


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("spellfix", "torch", "transformers", "accelerate", "datasets", "tokenizers"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def _setup(data: BenchData, n_pairs: int, steps: int, naive_steps: int, warmup: int, repeats: int, seed: int,
           flops_per_token: float) -> dict[str, Any]:
    from spellfix.modeling import BART_BASE_SHAPE

    mean_src, mean_tgt = data.mean_source_target
    return {
        "name": "setup",
        "model": "bart-base shape (spellfix.modeling.BART_BASE_SHAPE), random init",
        "model_shape": BART_BASE_SHAPE,
        "data": f"{n_pairs} noisy pairs from data/clean_queries.txt (recipe {RECIPE}), byte-level BPE",
        "mean_source_tokens": round(mean_src, 3),
        "mean_target_tokens": round(mean_tgt, 3),
        "model_flops_per_token": round(flops_per_token),
        "steps_measured": steps,
        "naive_steps_measured": naive_steps,
        "warmup_steps": warmup,
        "repeats": repeats,
        "seed": seed,
        "recipe": RECIPE,
    }


# ------------------------------------------------------------------------------------------ report


def write_results(entries: list[dict[str, Any]], output_dir: Path, name: str) -> tuple[Path, Path]:
    """``<name>.json`` (the entries) and ``<name>.md`` (the table), both written atomically."""
    from spellfix.config import write_text_atomic

    output_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = output_dir / f"{name}.json", output_dir / f"{name}.md"
    write_text_atomic(json_path, json.dumps(entries, indent=1) + "\n")
    write_text_atomic(md_path, render_markdown(entries))
    return json_path, md_path


def render_markdown(entries: list[dict[str, Any]]) -> str:
    by = {e["name"]: e for e in entries}
    systems = [e for e in entries if "samples_per_s" in e]
    machine, setup, summary = by.get("machine", {}), by.get("setup", {}), by.get("summary", {})
    base = by.get("tuned-trainer")
    lines = [
        "# Training throughput: Seq2SeqTrainer vs spellfix (bart-base shape, CPU)",
        "",
        f"Model: {setup.get('model', '?')}; data: {setup.get('data', '?')} (mean {setup.get('mean_source_tokens')} source / "
        f"{setup.get('mean_target_tokens')} target tokens). Median of {setup.get('repeats')} interleaved runs, each "
        f"{setup.get('steps_measured')} measured steps after {setup.get('warmup_steps')} warm-up. "
        f"{machine.get('torch_threads')} torch threads on {machine.get('cpu')}; measured matmul peak "
        f"bf16 {machine.get('bf16_matmul_peak_gflops')} / fp32 {machine.get('fp32_matmul_peak_gflops')} GFLOP/s; "
        f"load average (1 min) median {machine.get('load_avg_1m_median')}, max {machine.get('load_avg_1m_max')}.",
        "",
        "| system | samples/s | epoch samples/s | non-pad tokens/s | median step (s) | achieved TFLOP/s | MFU (bf16 peak) | peak RSS (GB) | vs tuned-trainer |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for e in systems:
        ratio = f"{e['samples_per_s'] / base['samples_per_s']:.2f}x" if base else "-"
        lines.append(
            f"| {e['name']} | {e['samples_per_s']:.2f} | {e['epoch_samples_per_s']:.2f} | {e['tokens_per_s']:.0f} | "
            f"{e['median_step_s']:.2f} | {e['achieved_tflops']:.3f} | {100 * e['mfu']:.1f}% | {e['peak_rss_gb']:.1f} | {ratio} |"
        )
    if summary:
        lines += ["", "Ratios of medians (spellfix / other):", ""]
        for key, value in summary.items():
            if key != "name":
                lines.append(f"- `{key}`: {value}")
    lines += [
        "",
        "samples/s counts the examples of the measured steps; epoch samples/s = non-pad tokens/s / mean non-pad "
        "tokens per example (independent of which batches the measured steps drew). MFU counts model FLOPs of "
        "non-pad tokens only (6·N per token through the encoder, or the decoder + LM head) over the bf16 matmul "
        "peak (the median of every peak measured during the benchmark: one denominator for all systems). Written by "
        "`python benchmarks/train_throughput.py` (spellfix.bench.train).",
        "",
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------- profile

#: torch.profiler op names grouped into where a training step's time goes
PROFILE_GROUPS = {
    "matmul (linear, LM head)": ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear"),
    "attention kernels": ("aten::_scaled_dot_product", "aten::_softmax", "aten::softmax", "aten::_softmax_backward_data"),
    "optimizer (AdamW)": ("aten::_fused_adamw_", "aten::_foreach_", "Optimizer.step"),
    "casts and copies": ("aten::copy_", "aten::to", "aten::_to_copy", "aten::clone", "aten::contiguous", "aten::cat"),
    "loss (log-softmax/CE)": ("aten::_log_softmax", "aten::logsumexp", "aten::nll_loss", "aten::exp", "aten::scatter_add_", "aten::gather"),
    "layer norm": ("aten::native_layer_norm",),
    "dropout": ("aten::bernoulli_", "aten::native_dropout"),
    "gelu": ("aten::gelu",),
    "reductions (bias grads)": ("aten::sum",),
    "fills / zeroing": ("aten::fill_", "aten::zero_", "aten::zeros"),
    "elementwise (add/mul/div)": ("aten::add", "aten::mul", "aten::div", "aten::sub", "aten::where"),
    "embedding": ("aten::embedding", "aten::index_select", "aten::index_add_"),
}


def profile_step(data: BenchData, overrides: dict[str, Any] | None = None, *, threads: int = 2,
                 warmup: int = 4, row_limit: int = 25, record_shapes: bool = False) -> dict[str, Any]:
    """torch.profiler over one optimizer step of the cpu-bench recipe's setup (first global batch).

    Runs the same :class:`~spellfix.training.step.TrainStep` as ``spellfix.train`` (:func:`bench_step`)
    without the run around it, so the profile is the step alone. Returns the top ops
    by self CPU time and the share of the step per :data:`PROFILE_GROUPS` category.
    """
    import torch
    from torch.profiler import ProfilerActivity, profile

    from spellfix.config import load_recipe
    from spellfix.data.batching import PairCollator, plan_epoch
    from spellfix.modeling import EOS_ID, PAD_ID

    torch.set_num_threads(threads)
    recipe = load_recipe(RECIPE, overrides=overrides or {})
    t = recipe.train
    train_step = bench_step(recipe)
    src, tgt = [len(s) for s in data.source_ids], [len(x) for x in data.target_ids]
    plan = plan_epoch(src, tgt, global_batch_size=t.global_batch_size, micro_batches_per_step=1, seed=0, epoch=0,
                      group_by_length=t.batching.group_by_length, pool_factor=t.batching.pool_factor,
                      length_key=t.batching.length_key)
    # the batch whose padded size is closest to the median: a typical step
    sizes = sorted(plan, key=lambda b: max(src[i] for i in b.micro_batches[0]) + max(tgt[i] for i in b.micro_batches[0]))
    chosen = sizes[len(sizes) // 2]
    padding = t.batching.padding == "max_length"
    collate = PairCollator(PAD_ID, EOS_ID, max_source_length=recipe.data.max_source_length if padding else None,
                           max_target_length=recipe.data.max_target_length if padding else None)
    batch = collate([(data.source_ids[i], data.target_ids[i]) for i in chosen.micro_batches[0]])

    def step() -> None:
        train_step.step([batch], chosen.target_tokens)

    from spellfix.training.allocator import cpu_heap

    with cpu_heap(t.cpu_allocator, "cpu"):  # as spellfix.train runs the step
        for _ in range(warmup):
            step()
        with profile(activities=[ProfilerActivity.CPU], record_shapes=record_shapes) as prof:
            begin = time.perf_counter()
            step()
            wall = time.perf_counter() - begin
    averages = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in averages) / 1e6
    groups = {name: 0.0 for name in PROFILE_GROUPS}
    groups["other"] = 0.0
    for e in averages:
        key = next((g for g, prefixes in PROFILE_GROUPS.items() if any(e.key.startswith(p) for p in prefixes)), "other")
        groups[key] += e.self_cpu_time_total / 1e6
    return {
        "overrides": overrides or {},
        "batch_shape": {"rows": len(chosen.micro_batches[0]), "source": int(batch["input_ids"].shape[1]),
                        "target": int(batch["labels"].shape[1])},
        "step_wall_s": round(wall, 3),
        "profiled_self_cpu_s": round(total, 3),
        "share": {k: round(v / total, 4) for k, v in sorted(groups.items(), key=lambda kv: -kv[1])},
        "top_ops": averages.table(sort_by="self_cpu_time_total", row_limit=row_limit),
        **({"top_ops_by_shape": prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=row_limit)}
           if record_shapes else {}),
    }


# ------------------------------------------------------------------------------- step A/B (paired)


def bench_step(recipe: Any) -> "TrainStep":
    """The :class:`~spellfix.training.step.TrainStep` that ``spellfix.train`` runs for ``recipe``
    (one process, CPU, the recipe's precision), on a freshly initialised model: what the step A/B
    and the profile time is the training step itself, not a copy of it."""
    import torch

    from spellfix.modeling import build_model
    from spellfix.training.hardware import resolve_precision
    from spellfix.training.loop import set_attention
    from spellfix.training.step import TrainStep

    t = recipe.train
    torch.manual_seed(0)
    model = build_model(recipe.model, recipe.model.config.get("vocab_size", 50265))
    set_attention(model, t.attention)
    precision = resolve_precision(t.precision, "cpu", None)
    return TrainStep(model, t, precision=precision, device=torch.device("cpu"), total_steps=max(t.max_steps or 0, 10_000))


def _step_pieces(data: BenchData, overrides: dict[str, Any], threads: int):
    """A step function over a given micro-batch for the cpu-bench recipe with ``overrides``."""
    import torch

    from spellfix.config import load_recipe

    torch.set_num_threads(threads)
    train_step = bench_step(load_recipe(RECIPE, overrides=overrides))

    def step(batch: dict, target_tokens: int) -> None:
        train_step.step([batch], target_tokens)

    return step


def compare_steps(data: BenchData, variants: dict[str, dict[str, Any]], *, rounds: int = 5, batches: int = 3,
                  threads: int = 2, progress: Callable[[str], None] = lambda s: None) -> dict[str, dict[str, float]]:
    """Paired step timing of recipe variants that change the step, not the data (loss, precision,
    attention, optimizer): every variant trains the *same* ``batches`` typical global batches, and
    steps alternate variant by variant (A, B, A, B, ...), so slow phases of a shared machine hit
    all variants alike. Returns per variant the median step time and its ratio to the first variant.

    Every variant holds a bart-base model + optimizer (~2-3 GB): compare two or three at a time. The
    steps run under the variants' ``train.cpu_allocator`` (a process-wide setting: it must be the same
    for all; the full benchmark's ablation ``spellfix cpu_allocator=system`` measures it).
    """
    import torch

    from spellfix.config import load_recipe
    from spellfix.training.allocator import cpu_heap

    from spellfix.data.batching import PairCollator, plan_epoch
    from spellfix.modeling import EOS_ID, PAD_ID

    src, tgt = [len(s) for s in data.source_ids], [len(x) for x in data.target_ids]
    plan = plan_epoch(src, tgt, global_batch_size=256, micro_batches_per_step=1, seed=0, epoch=0)
    by_size = sorted(plan, key=lambda b: max(src[i] for i in b.micro_batches[0]) + max(tgt[i] for i in b.micro_batches[0]))
    middle = len(by_size) // 2
    chosen = by_size[max(0, middle - batches // 2) : max(0, middle - batches // 2) + batches]
    collate = PairCollator(PAD_ID, EOS_ID)
    prepared = [(collate([(data.source_ids[i], data.target_ids[i]) for i in b.micro_batches[0]]), b.target_tokens) for b in chosen]
    heaps = {load_recipe(RECIPE, overrides=o).train.cpu_allocator for o in variants.values()}
    if len(heaps) != 1:
        raise ValueError("train.cpu_allocator is process-wide: paired A/B variants must share it "
                         "(the full benchmark's ablation 'spellfix cpu_allocator=system' measures it)")
    steps = {name: _step_pieces(data, overrides, threads) for name, overrides in variants.items()}
    times: dict[str, list[float]] = {name: [] for name in variants}
    with cpu_heap(heaps.pop(), "cpu"):
        for name, step in steps.items():  # warm-up: first-touch allocations, oneDNN primitive caches
            step(*prepared[0])
        for r in range(rounds):
            for b in prepared:
                order = list(steps) if r % 2 == 0 else list(reversed(steps))
                for name in order:
                    begin = time.perf_counter()
                    steps[name](*b)
                    times[name].append(time.perf_counter() - begin)
            progress(f"A/B round {r + 1}/{rounds}: " + ", ".join(f"{n} {statistics.median(t):.2f} s" for n, t in times.items()))
    del steps
    gc.collect()
    torch.set_num_threads(threads)
    first = next(iter(variants))
    return {
        name: {
            "median_step_s": round(statistics.median(t), 3),
            "vs_" + first: round(statistics.median(t) / statistics.median(times[first]), 3),
            "paired_ratio_median": round(statistics.median(x / y for x, y in zip(t, times[first])), 3),
            "steps": len(t),
        }
        for name, t in times.items()
    }


def padding_table(data: BenchData, *, batch: int = 256, seed: int = 0) -> dict[str, dict[str, float]]:
    """Deterministic padding of each batching choice on the benchmark data: the share of padded
    positions and the positions computed per real token (source + target), for spellfix's plans and
    for the Trainer's samplers (random; LengthGroupedSampler, which sorts mega-batches by source
    length only). No timing involved: this is the work each choice asks for."""
    import torch
    from transformers.trainer_pt_utils import get_length_grouped_indices

    from spellfix.data.batching import plan_epoch

    src, tgt = [len(s) for s in data.source_ids], [len(x) for x in data.target_ids]
    real = sum(src) + sum(tgt)

    def stats(batches: list[list[int]], fixed: tuple[int, int] | None = None) -> dict[str, float]:
        used = [i for b in batches for i in b]
        real_used = sum(src[i] + tgt[i] for i in used)
        if fixed:
            positions = len(used) * (fixed[0] + fixed[1])
        else:
            positions = sum(len(b) * (max(src[i] for i in b) + max(tgt[i] for i in b)) for b in batches)
        target_pad = 1 - sum(tgt[i] for i in used) / sum(len(b) * max(tgt[i] for i in b) for b in batches) if not fixed else \
            1 - sum(tgt[i] for i in used) / (len(used) * fixed[1])
        return {"padding_share": round(1 - real_used / positions, 4), "positions_per_real_token": round(positions / real_used, 3),
                "target_padding_share": round(target_pad, 4)}

    def plan(**kw) -> list[list[int]]:
        return [list(m) for b in plan_epoch(src, tgt, global_batch_size=batch, micro_batches_per_step=1, seed=seed, epoch=0, **kw)
                for m in b.micro_batches]

    order = torch.randperm(len(src), generator=torch.Generator().manual_seed(seed)).tolist()
    random_batches = [order[i : i + batch] for i in range(0, len(order) - batch + 1, batch)]
    grouped = get_length_grouped_indices(src, batch, generator=torch.Generator().manual_seed(seed))
    trainer_grouped = [grouped[i : i + batch] for i in range(0, len(grouped) - batch + 1, batch)]
    return {
        "spellfix (group by source+target, dynamic)": stats(plan()),
        "spellfix length_key=source": stats(plan(length_key="source")),
        "spellfix group_by_length=false (dynamic)": stats(plan(group_by_length=False)),
        "spellfix max_tokens=1024 (micro-batches)": stats([list(m) for b in plan_epoch(
            src, tgt, global_batch_size=4, micro_batches_per_step=4, seed=seed, epoch=0, max_tokens=1024) for m in b.micro_batches]),
        "Trainer group_by_length (source only, dynamic)": stats(trainer_grouped),
        "Trainer random batches (dynamic)": stats(random_batches),
        "padding to max_length 64 + 64": stats(random_batches, fixed=(NAIVE_MAX_LENGTH, NAIVE_MAX_LENGTH)),
    }
