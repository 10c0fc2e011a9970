"""Batch correction of a query log, side by side in one run: spellfix with 1 and 2 worker processes and
with Ray Data locally, CTranslate2's ``translate_iterable`` on the same weights (plain greedy, raw
query in: no dictionary candidates, no acceptance rule) and SymSpell's ``lookup_compound``.

The log (``--rows``, default 50,000 lines) is the dev set's queries followed by noised clean queries
(``spellfix.data.make_noisy_pairs`` over data/clean_queries.txt). Every system reads the same first
``--limit`` lines. spellfix's figure is its steady rate: rows of the parts finished in the last two
thirds of the run over the time they took (model loading and worker start excluded; the time to the
first part is reported apart as start-up); the median seconds between parts is given too. The CPU model and the load average
before and after are recorded: on a shared machine, compare only figures from one run.

    PYTHONPATH=. python benchmarks/batch_correct.py --limit 800 --part-rows 50
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from spellfix.batch.formats import Layout, plan_parts
from spellfix.batch.worker import ModelSpec, PartResult
from spellfix.export.cache import cached_export
from spellfix.shipped import resolve_model_dir

ROOT = Path(__file__).resolve().parents[1]


def build_log(path: Path, rows: int, seed: int = 0) -> Path:
    """``rows`` real-looking queries: dev queries, then noised clean queries (one per line)."""
    from spellfix.data.noise import make_noisy_pairs

    dev = [json.loads(line)["query"] for line in (ROOT / "data" / "dev.jsonl").open(encoding="utf-8")]
    clean = [q.strip() for q in (ROOT / "data" / "clean_queries.txt").open(encoding="utf-8") if q.strip()]
    noisy = [q for q, _ in make_noisy_pairs(clean[: max(0, rows - len(dev))], seed=seed)]
    queries = (dev + noisy)[:rows]
    if len(queries) < rows:
        raise ValueError(f"only {len(queries)} queries available for --rows {rows}")
    path.write_text("\n".join(queries) + "\n", encoding="utf-8")
    return path


def time_engine(run: Callable[..., None], layout: Layout, model: ModelSpec, parts: list, workers: int, **kw: Any) -> dict[str, Any]:
    stamps: list[tuple[float, int]] = []
    start = time.perf_counter()
    run(layout, model, parts, workers, lambda r: stamps.append((time.perf_counter(), r.meta["rows"])), **kw)
    total = time.perf_counter() - start
    stamps.sort()
    warm = len(stamps) // 3  # by then every worker has loaded its model and finished parts
    steady_rows = sum(n for _, n in stamps[warm + 1 :])
    steady_s = stamps[-1][0] - stamps[warm][0]
    gaps = [b[0] - a[0] for a, b in zip(stamps, stamps[1:])]
    return {
        "queries_per_s": round(steady_rows / steady_s, 2) if steady_s > 0 else None,
        "startup_s": round(stamps[0][0] - start, 2), "wall_s": round(total, 2), "rows": sum(n for _, n in stamps),
        "median_s_between_parts": round(statistics.median(gaps), 3) if gaps else None,
    }


def time_ctranslate2(model_dir: Path, queries: list[str], threads: int, work: Path, compute_type: str) -> dict[str, Any]:
    import ctranslate2
    from tokenizers import Tokenizer

    from spellfix.bench.infer import convert_ctranslate2

    ct2_dir = convert_ctranslate2(model_dir, work / "ct2", compute_type)
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    translator = ctranslate2.Translator(str(ct2_dir), device="cpu", compute_type=compute_type, inter_threads=1, intra_threads=threads)
    sources = [["<s>", *tokenizer.encode(q, add_special_tokens=False).tokens, "</s>"] for q in queries]
    start = time.perf_counter()
    outputs = [r.hypotheses[0] for r in translator.translate_iterable(
        iter(sources), target_prefix=iter([["</s>"]] * len(sources)), max_batch_size=32, beam_size=1, max_decoding_length=48)]
    elapsed = time.perf_counter() - start
    assert len(outputs) == len(queries)
    sample = [tokenizer.decode([tokenizer.token_to_id(t) for t in out if t != "</s>"]) for out in outputs[:3]]
    return {"queries_per_s": round(len(queries) / elapsed, 2), "wall_s": round(elapsed, 2), "rows": len(queries), "sample": sample}


def time_symspell(queries: list[str]) -> dict[str, Any]:
    from spellfix.peers import SymSpellPeer

    peer = SymSpellPeer()
    start = time.perf_counter()
    out = peer.correct(queries)
    elapsed = time.perf_counter() - start
    assert len(out) == len(queries)
    return {"queries_per_s": round(len(queries) / elapsed, 2), "wall_s": round(elapsed, 2), "rows": len(queries)}


def machine() -> dict[str, Any]:
    model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    return {"cpu": model, "cores": os.cpu_count(), "loadavg_1m": round(os.getloadavg()[0], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "spell-small-cpu"))
    parser.add_argument("--rows", type=int, default=50_000, help="lines in the generated log")
    parser.add_argument("--limit", type=int, help="time only the first N lines (default: all)")
    parser.add_argument("--part-rows", type=int, default=200)
    parser.add_argument("--backend", default="onnxruntime", choices=["onnxruntime", "torch"], help="onnxruntime: the fast corrector (exported once, spellfix.export.cache)")
    parser.add_argument("--precision", default="int8", choices=["fp32", "int8"], help="onnxruntime graphs; CTranslate2 runs the same precision")
    parser.add_argument("--systems", default="spellfix-1,spellfix-2,spellfix-ray-2,ctranslate2,symspell")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "batch_correct.json"))
    args = parser.parse_args()
    systems = args.systems.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        log = build_log(work / "log.txt", args.rows)
        if args.limit:
            lines = log.read_text(encoding="utf-8").splitlines()[: args.limit]
            (work / "head.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
            log = work / "head.txt"
        queries = log.read_text(encoding="utf-8").splitlines()
        plan = plan_parts(log, "text", "query", args.part_rows)
        layout = Layout(str(log), "text", "query", "correction", 256)
        runtime_model = str(cached_export(args.model)) if args.backend == "onnxruntime" else args.model
        report: dict[str, Any] = {"backend": args.backend, "precision": args.precision, "log_rows": args.rows, "timed_rows": len(queries), "part_rows": args.part_rows, "machine_before": machine(), "results": []}
        for name in systems:
            print(f"running {name} ...", flush=True)
            if name.startswith("spellfix"):
                workers = int(name.rsplit("-", 1)[1])
                model = ModelSpec(runtime_model, backend=args.backend, precision=args.precision if args.backend == "onnxruntime" else "fp32", threads=1)
                if "ray" in name:
                    from spellfix.batch.ray_engine import run_ray as run
                else:
                    from spellfix.batch.local import run_local as run
                entry = time_engine(run, layout, model, plan.parts, workers)
                entry.update(workers=workers, threads_per_worker=1, engine="ray" if "ray" in name else "local")
            elif name == "ctranslate2":
                entry = time_ctranslate2(Path(resolve_model_dir(args.model)), queries, threads=1, work=work, compute_type="int8" if args.precision == "int8" else "float32")
                entry.update(threads=1, note="plain greedy on the raw query (no candidates, no acceptance rule)")
            elif name == "symspell":
                entry = time_symspell(queries)
                entry.update(threads=1, note="lookup_compound, max edit distance 2")
            else:
                raise SystemExit(f"unknown system {name}")
            entry["name"] = name
            report["results"].append(entry)
            print(json.dumps(entry), flush=True)
        report["machine_after"] = machine()
    by = {e["name"]: e for e in report["results"]}
    if "spellfix-1" in by and "spellfix-2" in by and by["spellfix-1"]["queries_per_s"]:
        report["scaling_2_vs_1_workers"] = round(by["spellfix-2"]["queries_per_s"] / by["spellfix-1"]["queries_per_s"], 2)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    rows = [f"| {e['name']} | {e['queries_per_s']} | {e.get('startup_s', '-')} | {e['rows']} |" for e in report["results"]]
    md = [f"spellfix: `SpellCorrector(backend={args.backend!r}, precision={args.precision!r})`, 1 thread per worker, the shipped rule; "
          f"{report['timed_rows']} of {args.rows} log lines timed, parts of {args.part_rows} rows.", "",
          "| system | queries/s (steady) | start-up s | rows |", "| --- | --- | --- | --- |", *rows, "",
          f"CPU: {report['machine_before']['cpu']} ({report['machine_before']['cores']} cores); load average (1 min) "
          f"{report['machine_before']['loadavg_1m']} before, {report['machine_after']['loadavg_1m']} after."]
    if "scaling_2_vs_1_workers" in report:
        md.append(f"2 workers vs 1: {report['scaling_2_vs_1_workers']}x")
    out.with_suffix(".md").write_text("\n".join(md) + "\n", encoding="utf-8")
    print("\n".join(md))


if __name__ == "__main__":
    main()
