"""Inference benchmark: spellfix's runtime vs transformers ``generate`` and CTranslate2, side by side.

What runs (DESIGN.md names): ``generate`` (transformers, fp32), ``spellfix-torch`` (our decoding loop
over the torch graph modules), ``onnxruntime fp32`` / ``onnxruntime int8`` (our loop over the
exported graphs; int8 = ``quantize_dynamic``), ``ctranslate2 fp32`` / ``ctranslate2 int8`` (converted
from the same weights). The model is the bart-base shape (``spellfix.modeling.BART_BASE_SHAPE``) with
random weights; every system gets the same 10 source ids (``<s>`` + 8 tokens + ``</s>``) and is
forced to generate exactly 10 tokens (min = max = 10), so all do the same work. Tokenization is
excluded everywhere (ids in, ids out).

Timing: after warm-up, ``repeats`` rounds; in each round every system makes ``calls // repeats``
batch-1 calls and ``batch_calls`` calls at batch 32, interleaved call by call in rotating order so
that load from other processes (the machine is shared) hits every system alike. Reported: p50 (median over rounds of each round's median) and p99 (over all
batch-1 calls), queries/s at batch 32 (median over rounds), and ratios to ``generate`` and to
CTranslate2 at the same precision. Also the *floor*: the time a batch-1 query cannot beat on this
machine — streaming every weight that a query touches from memory (the decoder + LM head each step)
at the measured bandwidth — and the FLOP floor at the measured matmul peak (what limits batch 32).

Artifacts (random-weight model dir, export, CTranslate2 conversions) are cached in ``work_dir``.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import statistics
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

log = logging.getLogger(__name__)

SYSTEMS = ("generate", "spellfix-torch", "onnxruntime fp32", "onnxruntime int8", "ctranslate2 fp32", "ctranslate2 int8")
#: extra variants measured for the ablation table (not DESIGN entries): what the shortlist head buys
ABLATIONS = ("onnxruntime fp32 full-head",)
#: ONNX Runtime threads sleep between ops instead of spinning: on a shared machine a spinning pool
#: waits on descheduled workers (2x slower measured under load); costs a wake-up per parallel op idle
ORT_SESSION_OPTIONS = {"config:session.intra_op.allow_spinning": "0"}
SOURCE_TOKENS = 10  # <s> + 8 + </s>
NEW_TOKENS = 10
DEFAULT_WORK_DIR = Path(os.environ.get("SPELLFIX_BENCH_CACHE", Path.home() / ".cache" / "spellfix" / "bench-infer"))
RESULTS_DIR = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


# ------------------------------------------------------------------------------------------ artifacts


@dataclass
class Artifacts:
    hf_dir: Path
    export_dir: Path
    ct2_dirs: dict[str, Path]


def full_vocab_tokenizer(vocab_size: int) -> Any:
    """A byte-level BPE whose vocabulary has exactly ``vocab_size`` entries (BART's special tokens,
    the 256 byte symbols, then fillers), so converters that read the vocabulary from the tokenizer
    (CTranslate2) see the model's full LM head."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    from spellfix.modeling import BOS_ID, EOS_ID, SPECIAL_TOKENS, wrap_tokenizer

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for symbol in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab.setdefault(symbol, len(vocab))
    while len(vocab) < vocab_size:
        vocab[f"<extra_{len(vocab)}>"] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", BOS_ID), ("</s>", EOS_ID)])
    return wrap_tokenizer(tok)


def build_random_bart_base(out_dir: Path, seed: int = 0) -> Path:
    """facebook/bart-base's shape (post-LN BART, 139 M parameters) with random weights, saved like a
    spellfix model dir."""
    import torch
    from transformers import BartConfig, BartForConditionalGeneration

    from spellfix.modeling import BART_BASE_SHAPE, BOS_ID, EOS_ID, PAD_ID, input_settings, save_model_dir, set_generation_defaults

    torch.manual_seed(seed)
    config = BartConfig(
        **BART_BASE_SHAPE,
        pad_token_id=PAD_ID,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        decoder_start_token_id=EOS_ID,
        forced_bos_token_id=None,
        forced_eos_token_id=None,
    )
    model = BartForConditionalGeneration(config).eval()
    set_generation_defaults(model, max_new_tokens=NEW_TOKENS)
    tokenizer = full_vocab_tokenizer(config.vocab_size)
    return save_model_dir(model, tokenizer, out_dir, settings=input_settings(64, None))


def convert_ctranslate2(hf_dir: Path, out_dir: Path, quantization: str) -> Path:
    """CTranslate2 conversion of the same weights. CT2 4.8's BART loader reads config keys that
    transformers 5 no longer writes (``normalize_before`` ...): convert from a copy with them added."""
    import ctranslate2

    staging = out_dir.with_name(out_dir.name + ".src")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for item in hf_dir.iterdir():
        if item.name != "config.json":
            (staging / item.name).symlink_to(item.resolve())
    config = json.loads((hf_dir / "config.json").read_text())
    config.setdefault("normalize_before", config.get("model_type") == "mbart")
    config.setdefault("normalize_embedding", True)
    config.setdefault("add_final_layer_norm", config.get("model_type") == "mbart")
    (staging / "config.json").write_text(json.dumps(config))
    try:
        ctranslate2.converters.TransformersConverter(str(staging)).convert(str(out_dir), quantization=quantization, force=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def prepare_artifacts(work_dir: Path, seed: int = 0) -> Artifacts:
    """Create (or reuse) the model dir, its export (hf, onnx, onnx-int8) and the CT2 conversions."""
    from spellfix.export import export

    work_dir.mkdir(parents=True, exist_ok=True)
    hf_dir = work_dir / f"bart-base-random-{seed}"
    export_dir = work_dir / f"bart-base-random-{seed}-export"
    ct2 = {"fp32": work_dir / f"bart-base-random-{seed}-ct2-float32", "int8": work_dir / f"bart-base-random-{seed}-ct2-int8"}
    if not (hf_dir / "config.json").exists():
        log.info("building the random-weight bart-base-shape model in %s", hf_dir)
        build_random_bart_base(hf_dir, seed)
    from spellfix.export.manifest import EXPORT_REVISION

    manifest_path = export_dir / "manifest.json"
    if not manifest_path.exists() or json.loads(manifest_path.read_text()).get("export_revision") != EXPORT_REVISION:
        log.info("exporting %s -> %s", hf_dir, export_dir)
        export(hf_dir, export_dir, formats=["onnx", "onnx-int8"])
    for precision, path in ct2.items():
        if not (path / "model.bin").exists():
            log.info("converting to CTranslate2 %s", precision)
            convert_ctranslate2(hf_dir, path, "float32" if precision == "fp32" else "int8")
    return Artifacts(hf_dir, export_dir, ct2)


# ------------------------------------------------------------------------------------------ systems


@dataclass
class System:
    name: str
    precision: str
    run: Callable[[np.ndarray, np.ndarray], list[list[int]]]  # (ids, mask) -> generated ids per row
    backend: Any = None


def _generate_system(hf_dir: Path) -> System:
    import torch

    from spellfix.modeling import load_pretrained

    model, _ = load_pretrained(hf_dir)
    model.eval()

    def run(ids: np.ndarray, mask: np.ndarray) -> list[list[int]]:
        with torch.inference_mode():
            out = model.generate(
                input_ids=torch.from_numpy(ids),
                attention_mask=torch.from_numpy(mask),
                do_sample=False,
                num_beams=1,
                min_new_tokens=NEW_TOKENS,
                max_new_tokens=NEW_TOKENS,
            )
        return out[:, 1:].tolist()

    return System("generate", "fp32", run)


def _forced_options() -> Any:
    from spellfix.inference.decoding import DecodingOptions

    return DecodingOptions(decoder_start_token_id=2, eos_token_id=2, pad_token_id=1, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS)


def _spellfix_system(name: str, precision: str, backend: Any) -> System:
    from spellfix.inference.decoding import generate

    options = _forced_options()
    return System(name, precision, lambda ids, mask: generate(backend, ids, mask, options), backend)


class _TimedBackend:
    """Wraps a backend and records the wall time of each call, to show where a query's time goes."""

    def __init__(self, inner: Any):
        self.inner, self.name = inner, inner.name
        self.times: dict[str, list[float]] = {"encode": [], "first_step": [], "later_steps": []}

    def _timed(self, key: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        self.times[key].append(time.perf_counter() - start)
        return out

    def encode(self, ids: np.ndarray, mask: np.ndarray) -> Any:
        self._first = True
        return self._timed("encode", self.inner.encode, ids, mask)

    def decode_step(self, state: Any, ids: np.ndarray, full_logits: bool = True, suppress_token: int | None = None) -> Any:
        key = "first_step" if self._first else "later_steps"
        self._first = False
        return self._timed(key, self.inner.decode_step, state, ids, full_logits, suppress_token)

    def select_rows(self, state: Any, rows: np.ndarray) -> Any:
        return self.inner.select_rows(state, rows)


def step_breakdown(backend: Any, batch1: tuple[np.ndarray, np.ndarray], runs: int = 10) -> dict[str, float]:
    """Median ms of the encoder, the first decoder step and one later step at batch 1."""
    from spellfix.inference.decoding import generate

    timed = _TimedBackend(backend)
    for _ in range(runs):
        generate(timed, *batch1, _forced_options())
    return {f"{k}_ms": round(1e3 * statistics.median(v), 2) for k, v in timed.times.items() if v}


def _ctranslate2_system(name: str, precision: str, model_dir: Path, threads: int) -> System:
    import ctranslate2

    translator = ctranslate2.Translator(
        str(model_dir), device="cpu", compute_type="float32" if precision == "fp32" else "int8", inter_threads=1, intra_threads=threads
    )
    vocab_path = model_dir / "shared_vocabulary.json"
    vocab = json.loads(vocab_path.read_text()) if vocab_path.exists() else [l.rstrip("\n") for l in (model_dir / "shared_vocabulary.txt").open()]
    index = {tok: i for i, tok in enumerate(vocab)}

    def run(ids: np.ndarray, mask: np.ndarray) -> list[list[int]]:
        source = [[vocab[i] for i, m in zip(row, mrow) if m] for row, mrow in zip(ids.tolist(), mask.tolist())]
        results = translator.translate_batch(source, beam_size=1, min_decoding_length=NEW_TOKENS, max_decoding_length=NEW_TOKENS)
        return [[index[t] for t in r.hypotheses[0]] for r in results]

    return System(name, precision, run)


def build_systems(artifacts: Artifacts, names: Sequence[str], threads: int) -> list[System]:
    systems: list[System] = []
    for name in names:
        if name == "generate":
            systems.append(_generate_system(artifacts.hf_dir))
        elif name == "spellfix-torch":
            from spellfix.inference.backends.torch_backend import TorchBackend
            from spellfix.modeling import load_pretrained

            model, _ = load_pretrained(artifacts.hf_dir)
            systems.append(_spellfix_system(name, "fp32", TorchBackend(model)))
        elif name.startswith("onnxruntime"):
            from spellfix.inference.backends.onnxruntime_backend import OnnxRuntimeBackend

            precision = name.split()[1]
            subdir = "onnx" if precision == "fp32" else "onnx-int8"
            backend = OnnxRuntimeBackend(
                artifacts.export_dir / subdir,
                providers=["CPUExecutionProvider"],
                intra_op_num_threads=threads,
                session_options=ORT_SESSION_OPTIONS,
                use_shortlist="full-head" not in name,
            )
            systems.append(_spellfix_system(name, precision, backend))
        elif name.startswith("ctranslate2"):
            precision = name.split()[-1]
            systems.append(_ctranslate2_system(name, precision, artifacts.ct2_dirs[precision], threads))
        else:
            raise ValueError(f"unknown system {name!r}; choose from {', '.join(SYSTEMS + ABLATIONS)}")
    return systems


# ------------------------------------------------------------------------------------------ floors


def work_per_query(config: dict[str, Any], source_tokens: int, new_tokens: int) -> dict[str, float]:
    """FLOPs of one query and the weight bytes a batch-1 query must stream (per weight byte-width).

    Counted: every matmul (2 FLOPs per multiply-add) including attention scores/values; embeddings
    are gathers (no FLOPs, only the rows used are read). The decoder's cross-attention K/V
    projections run once per query over the source; every decoding step streams the rest of the
    decoder and the LM head (vocab x d_model).
    """
    d, f, v = config["d_model"], config["decoder_ffn_dim"], config["vocab_size"]
    enc_l, dec_l, s = config["encoder_layers"], config["decoder_layers"], source_tokens
    enc_layer_params = 4 * d * d + 2 * d * config["encoder_ffn_dim"]
    enc_flops = enc_l * (2 * enc_layer_params * s + 2 * 2 * s * s * d)
    cross_kv_params = dec_l * 2 * d * d
    step_params = dec_l * (4 * d * d + 2 * d * d + 2 * d * f) + v * d  # self qkvo, cross q/o, ffn; LM head
    dec_flops = 2 * cross_kv_params * s
    for t in range(1, new_tokens + 1):
        dec_flops += 2 * step_params + dec_l * 2 * 2 * d * (t + s)  # weights + self/cross attention
    weights_once = enc_l * enc_layer_params + cross_kv_params
    return {
        "flops": float(enc_flops + dec_flops),
        "weights_streamed": float(weights_once + new_tokens * step_params),  # number of weights read
        "step_weights": float(step_params),
    }


def measure_machine(threads: int) -> dict[str, float]:
    """Peaks the floors are computed from, with ``threads`` torch threads, best of a few tries:
    fp32 and int8 matmul (2048^3) throughput and memory read bandwidth (a parallel sum over 512 MB)."""
    import torch

    torch.set_num_threads(threads)

    def best(fn: Callable[[], Any], work: float, tries: int = 5) -> float:
        top = 0.0
        for _ in range(tries):
            start = time.perf_counter()
            fn()
            top = max(top, work / (time.perf_counter() - start))
        return top

    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    qa, qb = torch.randint(-127, 127, (n, n), dtype=torch.int8), torch.randint(-127, 127, (n, n), dtype=torch.int8)
    buf = torch.ones(128 * 1024 * 1024)
    out = {
        "fp32_matmul_gflops": best(lambda: a @ b, 2 * n**3 / 1e9),
        "memory_read_gbps": best(buf.sum, buf.numel() * 4 / 1e9),
    }
    try:
        out["int8_matmul_gops"] = best(lambda: torch._int_mm(qa, qb), 2 * n**3 / 1e9)
    except (RuntimeError, AttributeError):  # no CPU int8 matmul in this torch build
        out["int8_matmul_gops"] = 4 * out["fp32_matmul_gflops"]
    return {k: round(v, 1) for k, v in out.items()}


def floors(work: dict[str, float], machine: dict[str, float]) -> dict[str, float]:
    """Batch 1: stream every weight a query touches at the memory bandwidth (fp32: 4 bytes, int8:
    1 byte per weight). Batch 32: do its FLOPs at the matmul peak of the precision."""
    gbps = machine["memory_read_gbps"] * 1e9
    out = {
        "memory_floor_ms_fp32": 1e3 * work["weights_streamed"] * 4 / gbps,
        "memory_floor_ms_int8": 1e3 * work["weights_streamed"] * 1 / gbps,
        "flop_floor_ms_fp32": 1e3 * work["flops"] / (machine["fp32_matmul_gflops"] * 1e9),
    }
    if "int8_matmul_gops" in machine:
        out["flop_floor_ms_int8"] = 1e3 * work["flops"] / (machine["int8_matmul_gops"] * 1e9)
    return out


#: idle figures of this machine type (STACK.md: torch 2.13, 2 threads), for the floors' second column
REFERENCE_MACHINE = {"fp32_matmul_gflops": 180.0, "memory_read_gbps": 39.0}


# ------------------------------------------------------------------------------------------ timing


def _time_call(system: System, ids: np.ndarray, mask: np.ndarray) -> float:
    start = time.perf_counter()
    system.run(ids, mask)
    return time.perf_counter() - start


def time_systems(
    systems: Sequence[System],
    batch1: tuple[np.ndarray, np.ndarray],
    batch_n: tuple[np.ndarray, np.ndarray],
    *,
    calls: int,
    repeats: int,
    warmup: int,
    batch_calls: int,
    progress: Callable[[str], None] = lambda s: None,
) -> dict[str, dict[str, Any]]:
    per_round = max(1, -(-calls // repeats))
    samples: dict[str, dict[str, list]] = {s.name: {"b1": [], "b1_round_p50": [], "bn_round_qps": []} for s in systems}
    for system in systems:
        for _ in range(warmup):
            system.run(*batch1)
        system.run(*batch_n)
    # Calls are interleaved one by one across systems (rotating the order every pass), so a burst of
    # load from another process hits every system alike instead of whichever block was running.
    for round_index in range(repeats):
        b1_times: dict[str, list[float]] = {s.name: [] for s in systems}
        bn_times: dict[str, list[float]] = {s.name: [] for s in systems}
        for i in range(per_round):
            shift = (round_index * per_round + i) % len(systems)
            for system in systems[shift:] + systems[:shift]:
                b1_times[system.name].append(_time_call(system, *batch1))
        for i in range(batch_calls):
            shift = (round_index + i) % len(systems)
            for system in systems[shift:] + systems[:shift]:
                bn_times[system.name].append(_time_call(system, *batch_n))
        for system in systems:
            samples[system.name]["b1"].extend(b1_times[system.name])
            samples[system.name]["b1_round_p50"].append(statistics.median(b1_times[system.name]))
            samples[system.name]["bn_round_qps"].append(batch_n[0].shape[0] / statistics.median(bn_times[system.name]))
        progress(
            f"round {round_index + 1}/{repeats}: "
            + ", ".join(f"{s.name} {1e3 * statistics.median(b1_times[s.name]):.0f} ms" for s in systems)
        )
    out = {}
    for name, s in samples.items():
        b1 = np.array(s["b1"]) * 1e3
        out[name] = {
            "p50_ms": round(float(statistics.median(s["b1_round_p50"])) * 1e3, 2),
            "p99_ms": round(float(np.percentile(b1, 99)), 2),
            "calls": int(len(b1)),
            "round_p50_ms": [round(x * 1e3, 2) for x in s["b1_round_p50"]],
            "queries_per_s": round(float(statistics.median(s["bn_round_qps"])), 2),
            "round_queries_per_s": [round(x, 2) for x in s["bn_round_qps"]],
        }
    return out


# ------------------------------------------------------------------------------------------ report


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("spellfix", "torch", "transformers", "onnxruntime", "onnx", "ctranslate2", "numpy", "tokenizers"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def bench_inputs(batch_size: int, vocab_size: int, seed: int = 0) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    body = rng.integers(261, min(vocab_size, 50000), size=SOURCE_TOKENS - 2)  # past the special + byte symbols
    ids1 = np.array([[0, *body, 2]], dtype=np.int64)
    ids_n = np.repeat(ids1, batch_size, axis=0)
    return (ids1, np.ones_like(ids1)), (ids_n, np.ones_like(ids_n))


def run_infer_benchmark(
    work_dir: str | Path | None = None,
    output_dir: str | Path | None = RESULTS_DIR,
    *,
    systems: Sequence[str] = SYSTEMS + ABLATIONS,
    calls: int = 200,
    repeats: int = 4,
    warmup: int = 5,
    batch_size: int = 32,
    batch_calls: int = 3,
    threads: int = 2,
    seed: int = 0,
    name: str = "infer_latency",
    json_out: str | Path | None = None,
    command: str = "spellfix bench infer",
    progress: Callable[[str], None] = lambda s: log.info("%s", s),
) -> list[dict[str, Any]]:
    """Run the benchmark; write ``<output_dir>/<name>.json`` and ``.md`` (unless output_dir is None;
    ``json_out=PATH`` writes PATH and the .md next to it instead, for ``spellfix bench infer --json``);
    return the entries (one dict per system, DESIGN.md names and figures)."""
    if json_out is not None:
        output_dir, name = Path(json_out).parent, Path(json_out).stem
    import torch

    unknown = [s for s in systems if s not in SYSTEMS + ABLATIONS]
    if unknown:
        raise ValueError(f"unknown system(s) {unknown}; choose from {', '.join(SYSTEMS + ABLATIONS)}")
    if calls < 1 or repeats < 1 or batch_size < 1:
        raise ValueError("calls, repeats and batch_size must be >= 1")
    torch.set_num_threads(threads)
    artifacts = prepare_artifacts(Path(work_dir) if work_dir else DEFAULT_WORK_DIR, seed)
    config = json.loads((artifacts.hf_dir / "config.json").read_text())
    batch1, batch_n = bench_inputs(batch_size, config["vocab_size"], seed)
    load_before = os.getloadavg()
    built = build_systems(artifacts, systems, threads)

    outputs = {s.name: s.run(*batch1)[0] for s in built}
    lengths = {name: len(ids) for name, ids in outputs.items()}
    if any(n != NEW_TOKENS for n in lengths.values()):
        raise RuntimeError(f"every system must generate exactly {NEW_TOKENS} tokens, got {lengths}")

    peaks_before = measure_machine(threads)
    timings = time_systems(built, batch1, batch_n, calls=calls, repeats=repeats, warmup=warmup, batch_calls=batch_calls, progress=progress)
    peaks_after = measure_machine(threads)
    breakdowns = {s.name: step_breakdown(s.backend, batch1) for s in built if s.backend is not None}
    machine = {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        **{k: max(peaks_before[k], peaks_after[k]) for k in peaks_before},
    }
    work = work_per_query(config, SOURCE_TOKENS, NEW_TOKENS)
    floor = floors(work, machine)
    reference = outputs.get("generate")
    entries: list[dict[str, Any]] = []
    for system in built:
        t = timings[system.name]
        precision = "int8" if system.precision == "int8" else "fp32"
        entry: dict[str, Any] = {"name": system.name, "precision": system.precision, **t}
        entry["batch_size"] = batch_size
        entry["x_memory_floor_batch1"] = round(t["p50_ms"] / floor[f"memory_floor_ms_{precision}"], 2)
        entry["x_flop_floor_batch32"] = round((1e3 / t["queries_per_s"]) / floor[f"flop_floor_ms_{precision}"], 2)
        if reference is not None:
            entry["same_output_as_generate"] = outputs[system.name] == reference
        if system.name in breakdowns:
            entry["batch1_breakdown_ms"] = breakdowns[system.name]
        stats = getattr(system.backend, "stats", None)
        if stats and stats.get("shortlist_rows"):
            entry["shortlist_fallback_rate"] = round(stats["fallback_rows"] / stats["shortlist_rows"], 4)
        entries.append(entry)
    by_name = {e["name"]: e for e in entries}
    for entry in entries:
        if "generate" in by_name:
            entry["p50_vs_generate"] = round(entry["p50_ms"] / by_name["generate"]["p50_ms"], 3)
        peer = by_name.get(f"ctranslate2 {entry['precision']}")
        if peer is not None:
            entry["p50_vs_ctranslate2"] = round(entry["p50_ms"] / peer["p50_ms"], 3)
            entry["qps_vs_ctranslate2"] = round(entry["queries_per_s"] / peer["queries_per_s"], 3)
    report = {
        "benchmark": name,
        "command": command,
        "setup": {
            "model": "bart-base shape (BART_BASE_SHAPE), random weights, fp32 master copy",
            "source_tokens": SOURCE_TOKENS,
            "new_tokens": NEW_TOKENS,
            "batch_size": batch_size,
            "calls_batch1": calls,
            "repeats": repeats,
            "warmup": warmup,
            "batch_calls_per_round": batch_calls,
        },
        "floor": {
            "flops_per_query": work["flops"],
            "weights_streamed_per_query": work["weights_streamed"],
            **{k: round(v, 2) for k, v in floor.items()},
            "at_reference_machine": {k: round(v, 2) for k, v in floors(work, REFERENCE_MACHINE).items()},
            "reference_machine": REFERENCE_MACHINE,
        },
        "entries": [e for e in entries if e["name"] in SYSTEMS],
        "ablations": [e for e in entries if e["name"] not in SYSTEMS],
        "machine": machine,
        "versions": _versions(),
    }
    if output_dir is not None:
        from spellfix.fsutil import write_json_atomic, write_text_atomic

        write_json_atomic(Path(output_dir) / f"{name}.json", report)
        write_text_atomic(Path(output_dir) / f"{name}.md", render_markdown(report))
    return report["entries"]


def render_markdown(report: dict[str, Any]) -> str:
    setup, floor, machine = report["setup"], report["floor"], report["machine"]
    lines = [
        "# Inference latency: spellfix runtime vs generate vs CTranslate2",
        "",
        f"bart-base shape, random weights, {setup['source_tokens']} source tokens -> exactly {setup['new_tokens']} generated "
        f"tokens (greedy, forced length), ids in / ids out. {machine['threads']} threads, {machine['cpu_count']} cores; "
        f"load average {machine['loadavg_before'][0]} before / {machine['loadavg_after'][0]} after (shared machine: compare "
        f"ratios within this table, not absolute figures across runs). p50 = median over {setup['repeats']} rounds of "
        f"per-round medians; p99 over {setup['calls_batch1']} batch-1 calls; queries/s at batch {setup['batch_size']}.",
        "",
        "| system | p50 ms (b=1) | p99 ms | vs generate | vs CT2 same precision | queries/s (b=32) | qps vs CT2 | x memory floor (b=1) | x FLOP floor (b=32) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for e in report["entries"] + report.get("ablations", []):
        lines.append(
            f"| {e['name']} | {e['p50_ms']:.1f} | {e['p99_ms']:.1f} | {e.get('p50_vs_generate', '-')} | "
            f"{e.get('p50_vs_ctranslate2', '-')} | {e['queries_per_s']:.1f} | {e.get('qps_vs_ctranslate2', '-')} | "
            f"{e['x_memory_floor_batch1']} | {e['x_flop_floor_batch32']} |"
        )
    rows = [e for e in report["entries"] + report.get("ablations", []) if "batch1_breakdown_ms" in e]
    if rows:
        lines += [
            "",
            "Where a batch-1 query's time goes in spellfix's runtime (median ms per call, measured after the timing):",
            "",
            "| system | encoder | first decoder step (+ cross K/V) | each later step |",
            "|---|---:|---:|---:|",
        ]
        for e in rows:
            b = e["batch1_breakdown_ms"]
            lines.append(f"| {e['name']} | {b.get('encode_ms', '-')} | {b.get('first_step_ms', '-')} | {b.get('later_steps_ms', '-')} |")
    ref = floor["at_reference_machine"]
    lines += [
        "",
        f"**Floors per query.** {floor['flops_per_query'] / 1e9:.2f} GFLOP; a batch-1 query streams "
        f"{floor['weights_streamed_per_query'] / 1e6:.0f} M weights (encoder and cross-attention K/V once, decoder + "
        f"LM head every step). Measured in this run (best of before/after the timing; the machine is shared, so "
        f"these peaks carry the same load as the timings): {machine['fp32_matmul_gflops']} GFLOP/s fp32, "
        f"{machine['int8_matmul_gops']} GOP/s int8 matmul, {machine['memory_read_gbps']} GB/s memory read -> "
        f"batch-1 floor {floor['memory_floor_ms_fp32']:.1f} ms fp32 / {floor['memory_floor_ms_int8']:.1f} ms int8, "
        f"batch-32 FLOP floor {floor['flop_floor_ms_fp32']:.1f} ms fp32 / {floor['flop_floor_ms_int8']:.1f} ms int8 per "
        f"query. The x-floor columns divide by these. On an idle machine of this type (STACK.md: "
        f"{floor['reference_machine']['fp32_matmul_gflops']:.0f} GFLOP/s, {floor['reference_machine']['memory_read_gbps']:.0f} GB/s) "
        f"the batch-1 floor is {ref['memory_floor_ms_fp32']:.1f} ms fp32 / {ref['memory_floor_ms_int8']:.1f} ms int8.",
        "",
        "The fp32 floor assumes a dense fp32 LM head; `onnxruntime fp32` streams the head in int8 (the exact shortlist "
        "head, docs/export.md) and can go below it; `onnxruntime fp32 full-head` is the same runtime without it.",
        "",
    ]
    return "\n".join(lines)
