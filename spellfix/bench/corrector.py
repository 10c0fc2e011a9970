"""The corrector users call, timed end to end: text in, text out, the shipped model's full rule.

What runs side by side in one process (``spellfix bench corrector``, ``benchmarks/corrector_latency.py``),
all on the same weights (the shipped ``spell-small-cpu``, exported to ONNX fp32 and int8, converted
to CTranslate2 fp32 and int8):

- ``spellfix full <p>``: ``SpellCorrector(export, backend="onnxruntime")`` as shipped — dictionary
  candidates, copy-verify decoding, one judging pass, the acceptance model;
- ``spellfix full step-loop <p>``: the same rule over the one-token-per-call greedy loop (the
  corrector before copy-verify: what the fast path is measured against);
- ``spellfix greedy <p>``: this runtime's plain greedy decoder (step loop, no rule);
- ``ctranslate2 greedy <p>``: CTranslate2's ``translate_batch`` greedy, the engine a user would
  pick instead — same encoder text (the candidates included), same tokenizer, no rule.

Per system: batch 1 at 1 thread (p50 / p99 over the dev queries, each query seen once per system,
so every corrector starts with a cold candidate cache), batched at ``threads`` threads
(queries/s over all of ``data/dev.jsonl``, candidate caches cleared before each round), mean decoder calls per query, and the fixed /
changed shares on dev (misspelled rows fixed exactly, correct rows changed). Rounds are
interleaved (system A, B, ..., then again) and the figures are medians over them. The machine (CPU
model, load average before and after) is recorded: the 2-core machines this runs on are shared.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import random
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np


log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
RESULTS_DIR = ROOT / "benchmarks" / "results"
DEFAULT_MODEL = "spell-small-cpu"
DEFAULT_DATA = ROOT / "data" / "dev.jsonl"
DEFAULT_WORK_DIR = Path(os.environ.get("SPELLFIX_BENCH_CACHE", Path.home() / ".cache" / "spellfix" / "bench-corrector"))
PRECISIONS = ("fp32", "int8")
KINDS = ("spellfix full", "spellfix full step-loop", "spellfix greedy", "ctranslate2 greedy")
SYSTEMS = tuple(f"{kind} {p}" for kind in KINDS for p in PRECISIONS)
#: ONNX Runtime threads sleep between ops instead of spinning (a spinning pool waits on descheduled
#: workers on a shared machine)
ORT_SESSION_OPTIONS = {"config:session.intra_op.allow_spinning": "0"}


class MissingExtraError(RuntimeError):
    """A peer this benchmark compares against is not installed; the message says which extra."""


@dataclass
class System:
    """One way of correcting queries: ``correct(queries)`` -> outputs, and its decoder-call count."""

    name: str
    correct: Callable[[list[str]], list[str]]
    decoder_calls: Callable[[], int] = lambda: 0
    calls_counted: bool = False
    clear_caches: Callable[[], None] = lambda: None
    #: switch to the batched phase: ``threads`` intra-op threads, ``batch_size`` queries per batch
    batched: Callable[[int, int], None] = lambda threads, batch_size: None
    latencies_ms: list[float] = field(default_factory=list)
    batched_qps: list[float] = field(default_factory=list)
    calls: int = 0
    queries_seen: int = 0


def require_ctranslate2() -> Any:
    try:
        import ctranslate2
    except ImportError:
        raise MissingExtraError(
            "the corrector benchmark compares against CTranslate2, which is not installed: "
            "pip install -e '.[bench]' (or pip install 'spellfix[bench]')"
        ) from None
    return ctranslate2


def prepare(model: str | Path, work_dir: Path, progress: Callable[[str], None]) -> tuple[Path, Path, dict[str, Path]]:
    """The model dir, its export (hf, onnx, onnx-int8: ``spellfix.export.cache``) and the CTranslate2
    conversions, cached in ``work_dir`` under the same key (a re-calibrated rule is a new export)."""
    from spellfix.bench.infer import convert_ctranslate2
    from spellfix.export.cache import cached_export
    from spellfix.shipped import resolve_model_dir

    model_dir = Path(resolve_model_dir(model))
    progress(f"export of {model_dir} (made once, then cached)")
    export_dir = cached_export(model_dir)
    base = work_dir / export_dir.name  # the export's content key: the conversions follow the same weights
    ct2 = {}
    for precision in PRECISIONS:
        path = base / f"ct2-{precision}"
        if not (path / "model.bin").is_file():
            progress(f"converting {model_dir} to CTranslate2 {precision}")
            convert_ctranslate2(model_dir, path, "float32" if precision == "fp32" else "int8")
            _set_decoder_start(path, model_dir)
        ct2[precision] = path
    return model_dir, export_dir, ct2


def _set_decoder_start(ct2_dir: Path, model_dir: Path) -> None:
    """CTranslate2's converter leaves an mbart model's decoder start token unset (it expects a
    language token as target prefix); spellfix models start decoding with their own token."""
    from spellfix.inference import layout

    start_id = layout.read_input_settings(model_dir).decoder_start_token_id
    vocab = json.loads((ct2_dir / "shared_vocabulary.json").read_text(encoding="utf-8"))
    config = json.loads((ct2_dir / "config.json").read_text(encoding="utf-8"))
    config["decoder_start_token"] = vocab[start_id]
    (ct2_dir / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")


def _spellfix_system(name: str, export_dir: Path, precision: str, threads: int, **options: Any) -> System:
    from spellfix.inference import SpellCorrector
    from spellfix.inference.backends.onnxruntime_backend import OnnxRuntimeBackend

    engine_options = {"intra_op_num_threads": threads, "session_options": ORT_SESSION_OPTIONS}
    corrector = SpellCorrector(export_dir, backend="onnxruntime", precision=precision, backend_options=engine_options, **options)
    onnx_dir = corrector.backend.onnx_dir
    corrector.backend = _CallCounter(corrector.backend)
    calls_before = 0  # decoder calls of the engines replaced so far

    def use_engine(engine_threads: int) -> None:
        nonlocal calls_before
        calls_before += corrector.backend.calls
        corrector.backend = _CallCounter(OnnxRuntimeBackend(onnx_dir, intra_op_num_threads=engine_threads, session_options=ORT_SESSION_OPTIONS))

    def batched(engine_threads: int, batch_size: int) -> None:
        use_engine(engine_threads)
        corrector.batch_size = batch_size

    return System(
        name, corrector.correct, lambda: calls_before + corrector.backend.calls, calls_counted=True,
        clear_caches=corrector.clear_caches, batched=batched,
    )  # fmt: skip


class _CallCounter:
    """Counts decoder calls (``decode_step`` + ``decode_block``) of a backend it forwards to."""

    def __init__(self, inner: Any):
        self.inner, self.calls = inner, 0
        self.name = inner.name

    def encode(self, *args: Any) -> Any:
        return self.inner.encode(*args)

    def decode_step(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.inner.decode_step(*args, **kwargs)

    def decode_block(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.inner.decode_block(*args, **kwargs)

    def select_rows(self, *args: Any) -> Any:
        return self.inner.select_rows(*args)


def _ctranslate2_system(name: str, export_dir: Path, ct2_dir: Path, precision: str, threads: int) -> System:
    """CTranslate2 greedy over the encoder text the model was trained on (query + candidates)."""
    ctranslate2 = require_ctranslate2()
    from spellfix.inference import SpellCorrector

    text_side = SpellCorrector(export_dir, backend="onnxruntime", acceptance=None, copy_margin=None)  # its tokenizer and annotator
    tokenizer = text_side.tokenizer
    max_new = text_side.options.max_new_tokens
    translator: Any = None

    def use_engine(engine_threads: int) -> None:
        nonlocal translator
        compute_type = "float32" if precision == "fp32" else "int8"
        translator = ctranslate2.Translator(str(ct2_dir), device="cpu", compute_type=compute_type, inter_threads=1, intra_threads=engine_threads)

    def correct(queries: list[str]) -> list[str]:
        texts = text_side.encoder_texts(queries)
        keep = [i for i, t in enumerate(texts) if t]
        ids = tokenizer.encode_ids([texts[i] for i in keep])
        source = [[tokenizer.tokenizer.id_to_token(i) for i in row] for row in ids]
        results = translator.translate_batch(source, beam_size=1, max_decoding_length=max_new, max_batch_size=32) if source else []
        out = [""] * len(queries)
        for i, result in zip(keep, results):
            out[i] = " ".join(tokenizer.tokenizer.decode([tokenizer.tokenizer.token_to_id(t) for t in result.hypotheses[0]]).split())
        return out

    use_engine(threads)
    return System(name, correct, clear_caches=text_side.clear_caches, batched=lambda engine_threads, _: use_engine(engine_threads))


def build_systems(names: Sequence[str], export_dir: Path, ct2: dict[str, Path], threads: int) -> list[System]:
    systems = []
    for name in names:
        precision = name.rsplit(" ", 1)[1]
        if name.startswith("spellfix full step-loop"):
            systems.append(_spellfix_system(name, export_dir, precision, threads, copy_verify=False))
        elif name.startswith("spellfix full"):
            systems.append(_spellfix_system(name, export_dir, precision, threads))
        elif name.startswith("spellfix greedy"):
            systems.append(_spellfix_system(name, export_dir, precision, threads, copy_verify=False, copy_margin=None, acceptance=None))
        elif name.startswith("ctranslate2 greedy"):
            systems.append(_ctranslate2_system(name, export_dir, ct2[precision], precision, threads))
        else:
            raise ValueError(f"unknown system {name!r}; choose from {', '.join(SYSTEMS)}")
    return systems


def load_rows(path: Path) -> list[dict[str, str]]:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            row = json.loads(line)
            if not isinstance(row.get("query"), str) or not isinstance(row.get("correction"), str):
                raise ValueError(f"{path}:{number}: expected string fields 'query' and 'correction'")
            rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no rows")
    return rows


def accuracy(rows: Sequence[dict[str, str]], outputs: Sequence[str]) -> dict[str, float]:
    """Fixed (misspelled rows answered exactly) and changed (correct rows not left alone), in %,
    by the project's one scorer (``spellfix.evaluation.compute_metrics``)."""
    from spellfix.evaluation import compute_metrics

    metrics = compute_metrics([r["query"] for r in rows], outputs, [r["correction"] for r in rows])
    return {"fixed_pct": round(100 * metrics["exact_match_misspelled"], 2), "changed_pct": round(100 * metrics["false_positive_rate"], 2)}


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("spellfix", "onnxruntime", "ctranslate2", "numpy", "tokenizers", "symspellpy", "rapidfuzz"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run_corrector_benchmark(
    model: str | Path = DEFAULT_MODEL,
    data: Path = DEFAULT_DATA,
    output_dir: Path | None = RESULTS_DIR,
    *,
    systems: Sequence[str] = SYSTEMS,
    batch1_queries: int = 600,
    rounds: int = 3,
    threads: int = 2,
    batch_size: int = 32,
    work_dir: Path = DEFAULT_WORK_DIR,
    name: str = "corrector_latency",
    command: str = "python benchmarks/corrector_latency.py",
    progress: Callable[[str], None] = lambda s: log.info("%s", s),
) -> dict[str, Any]:
    """Run the benchmark; write ``<output_dir>/<name>.json`` and ``.md``; return the report."""
    if any(s.startswith("ctranslate2") for s in systems):
        require_ctranslate2()
    rows = load_rows(Path(data))
    _, export_dir, ct2 = prepare(model, Path(work_dir), progress)
    load_before = os.getloadavg()
    built = build_systems(systems, export_dir, ct2, threads=1)
    queries = [row["query"] for row in rows]
    order = list(range(len(queries)))
    random.Random(0).shuffle(order)
    batch1 = [queries[i] for i in order[: min(batch1_queries, len(order))]]
    per_round = [batch1[r::rounds] for r in range(rounds)]
    for r, chunk in enumerate(per_round):  # batch 1, 1 thread: every query once per system
        for system in built:
            progress(f"batch 1, round {r + 1}/{rounds}: {system.name}")
            calls_before = system.decoder_calls()
            for query in chunk:
                start = time.perf_counter()
                system.correct([query])
                system.latencies_ms.append((time.perf_counter() - start) * 1e3)
            system.calls += system.decoder_calls() - calls_before
            system.queries_seen += len(chunk)
    outputs: dict[str, list[str]] = {}
    for system in built:
        system.batched(threads, batch_size)
    for r in range(rounds):  # batched, `threads` threads, all of dev
        for system in built:
            progress(f"batched, round {r + 1}/{rounds}: {system.name}")
            system.clear_caches()
            start = time.perf_counter()
            answers = system.correct(queries)
            system.batched_qps.append(len(queries) / (time.perf_counter() - start))
            outputs.setdefault(system.name, answers)
    entries = []
    for system in built:
        lat = np.asarray(system.latencies_ms)
        entry = {
            "name": system.name,
            "p50_ms": round(float(np.median(lat)), 3),
            "p99_ms": round(float(np.percentile(lat, 99)), 3),
            "batch1_queries": len(lat),
            "queries_per_s": round(float(np.median(system.batched_qps)), 1),
            "decoder_calls_per_query": round(system.calls / system.queries_seen, 3) if system.calls_counted else None,
            **accuracy(rows, outputs[system.name]),
        }
        entries.append(entry)
    by_name = {e["name"]: e for e in entries}
    for entry in entries:
        peer = by_name.get(f"ctranslate2 greedy {entry['name'].rsplit(' ', 1)[1]}")
        if peer is not None and peer is not entry:
            entry["p50_vs_ctranslate2_greedy"] = round(entry["p50_ms"] / peer["p50_ms"], 3)
            entry["qps_vs_ctranslate2_greedy"] = round(entry["queries_per_s"] / peer["queries_per_s"], 3)
    report = {
        "entries": entries,
        "data": {"path": str(data), "rows": len(rows)},
        "settings": {"rounds": rounds, "threads_batched": threads, "threads_batch1": 1, "batch_size": batch_size},
        "machine": {
            "cpu": _cpu_model(),
            "cores": os.cpu_count(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        },
        "versions": _versions(),
        "command": command,
        "date": time.strftime("%Y-%m-%d"),
    }
    if output_dir is not None:
        from spellfix.fsutil import write_json_atomic, write_text_atomic

        write_json_atomic(Path(output_dir) / f"{name}.json", report)
        write_text_atomic(Path(output_dir) / f"{name}.md", render_markdown(report))
    return report


def render_markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        "# Corrector latency: text in, text out, the shipped model",
        "",
        f"`{report['command']}` on {report['date']}: {m['cpu']}, {m['cores']} cores, load average "
        f"{m['loadavg_before'][0]} before / {m['loadavg_after'][0]} after (a shared machine: compare rows of this table, "
        "not absolute milliseconds across runs). Batch 1 at 1 thread over "
        f"{report['entries'][0]['batch1_queries']} dev queries (each once per system, cold candidate caches); batched at "
        f"{report['settings']['threads_batched']} threads, batch {report['settings']['batch_size']}, over all "
        f"{report['data']['rows']} rows of `{Path(report['data']['path']).name}`; medians over {report['settings']['rounds']} interleaved rounds.",
        "",
        "| system | p50 ms | p99 ms | p50 / CT2 greedy | queries/s | q/s / CT2 greedy | decoder calls / query | fixed % | changed % |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for e in report["entries"]:
        calls = "-" if e["decoder_calls_per_query"] is None else f"{e['decoder_calls_per_query']:.2f}"
        lines.append(
            f"| {e['name']} | {e['p50_ms']:.2f} | {e['p99_ms']:.2f} | {e.get('p50_vs_ctranslate2_greedy', '-')} | "
            f"{e['queries_per_s']:.0f} | {e.get('qps_vs_ctranslate2_greedy', '-')} | {calls} | {e['fixed_pct']:.1f} | {e['changed_pct']:.1f} |"
        )
    lines += [
        "",
        "`full`: the shipped rule (candidates, acceptance model, candidate answers); `step-loop`: the same rule over the "
        "one-token-per-call greedy loop; `greedy`: the raw decoder, no rule. CTranslate2 gets the same encoder text "
        "(query + dictionary candidates) and runs plain greedy.",
        "",
    ]
    return "\n".join(lines)
