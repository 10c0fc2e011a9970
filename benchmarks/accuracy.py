"""Accuracy side by side: spellfix vs SymSpell vs pyspellchecker, one scoring rule, every dev set.

Issue 8's bar: on queries_dev the shipped model must beat *both* classic correctors on *both* the
fix rate (exact match on misspelled queries) and the false-positive rate (correct queries changed),
and beat them on the Norvig word lists too. This script runs every system on every set shipped in
data/ through the same functions (spellfix.evaluation), single-threaded, in one process:

* ``dev-heldout``      -- the rows of data/dev.jsonl that ``spellfix calibrate --holdout word`` held out (split by
  corrected word): where the shipped rule is scored on queries it was not fitted on.
* ``dev-heldout-no-codespell`` -- the same, less the misspelled rows whose (misspelling, word) pair is in
  codespell's dictionaries (a noise source of training: those rows measure recall of a known list).
* ``dev``              -- data/dev.jsonl: multi-word queries, one real human misspelling each, plus
                          the same queries spelled right (identity rows); breakdown by error type
                          (non-word / real-word) and domain;
* ``norvig1/2``        -- data/norvig1.tsv, norvig2.tsv: single words (misspelling<TAB>correct);
* ``codespell_common`` -- data/codespell_common.tsv (a public list: measures recall of a known list).

For the word lists the distinct correct words are fed as inputs too, so every set has a
false-positive rate. Reported per set and system: fix rate, false-positive rate, word correction
rate, CER, queries/s and characters/s (one thread, whole set), and p50/p99 latency at batch 1.
``--candidates`` adds the recall ceiling of dictionary candidates (spellfix.lexical.candidates).

Besides the peers (SymSpell's ``lookup_compound``, pyspellchecker) two model-free baselines
(``candidates-top1``; ``symspell-guarded``: SymSpell word by word behind spellfix's known-word guard,
ranked by wordfreq) and two ablations of the model (``spellfix-decoder``: the raw decoder;
``spellfix-no-candidate-answers``: the acceptance rule over the decoder's answers only) say how much
each part of the corrector adds.

    python benchmarks/accuracy.py                       # peers only (~4 min: pyspellchecker is slow)
    python benchmarks/accuracy.py --model runs/q/best   # + spellfix
    python benchmarks/accuracy.py --systems symspell --sets dev --limit 200   # quick look

Writes benchmarks/results/accuracy.json and accuracy.md (``--name`` changes the stem).
"""

from __future__ import annotations

# One thread for every system: the figure is "queries/s single-threaded" (set before numpy/torch load).
import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import json
import platform
import sys
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
DATA = REPO / "data"
SETS = {
    "dev": "dev.jsonl",
    # the half of dev the shipped rule was not fitted on (spellfix calibrate --holdout word)
    "dev-heldout": "dev.jsonl",
    # the same half without the misspelled rows whose (misspelling, word) pair codespell lists: the
    # noise synthesizer trains on codespell's pairs, so those rows measure recall of a known list
    "dev-heldout-no-codespell": "dev.jsonl",
    "norvig1": "norvig1.tsv",
    "norvig2": "norvig2.tsv",
    "codespell_common": "codespell_common.tsv",
}
PEER_NAMES = ("symspell", "pyspellchecker")  # the bar (issue 8)
# our own floors: the first dictionary candidate for unknown words; SymSpell word by word behind the
# same known-word guard, ranked by wordfreq (what a careful engineer builds without a model)
BASELINE_NAMES = ("candidates-top1", "symspell-guarded")
#: the model with parts of the corrector switched off (ablations of the full ``spellfix``): the raw
#: decoder (no acceptance rule, no dictionary candidate answers), and the rule choosing among the
#: decoder's answers only
SPELLFIX_ABLATIONS: dict[str, dict[str, Any]] = {
    "spellfix-decoder": {"acceptance": None, "copy_margin": None, "candidate_answers": 0},
    "spellfix-no-candidate-answers": {"candidate_answers": 0},
}
SPELLFIX_SYSTEMS = ("spellfix", *SPELLFIX_ABLATIONS)  # the ones that need --model
KNOWN_SYSTEMS = (*SPELLFIX_SYSTEMS, *PEER_NAMES, *BASELINE_NAMES)

# Candidate configurations measured with --candidates (the default one first).
CANDIDATE_VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "unknown-only": {"words": "unknown"},
    "unknown-no-context": {"words": "unknown", "context": False},
    # SymSpell's own order: fewest edits, then most frequent.
    "symspell-order": {"words": "unknown", "context": False, "first_letter_penalty": 0.0, "distance_penalty": 100.0},
    "k8": {"max_per_word": 8},
}


#: correct inputs a system changed, kept per set and system in the JSON (and shown for small counts)
CHANGED_CORRECT_LISTED = 40


def load_set(path: Path, limit: int | None = None) -> tuple[list[dict[str, str]], bool]:
    """Rows of a pair file, plus identity rows (correct -> correct) when the file has none.

    Returns (rows, identity_rows_added). ``limit`` keeps that many of the file's rows, spread
    evenly over it, before identity rows are added."""
    sys.path.insert(0, str(REPO))
    from spellfix.data.readers import read_pairs, spread_rows

    rows = spread_rows(read_pairs(path)[0], limit)
    if any(r["query"] == r["correction"] for r in rows):
        return rows, False
    correct = sorted({r["correction"] for r in rows})
    return rows + [{"query": c, "correction": c} for c in correct], True


def without_codespell_pairs(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """``rows`` less the misspelled ones whose (misspelling, corrected word) pair is in codespell's
    dictionaries (the lists the noise synthesizer draws real misspellings from); correct rows stay."""
    from spellfix.data.noise import codespell_pairs

    listed = set(codespell_pairs())
    return [r for r in rows if r["query"] == r["correction"] or (r.get("misspelling"), r.get("word")) not in listed]


def build_system(name: str, model: str | None, backend: str, **spellfix_options: Any):
    if name in SPELLFIX_SYSTEMS:
        spellfix_options.update(SPELLFIX_ABLATIONS.get(name, {}))
        if backend == "torch":
            import torch

            torch.set_num_threads(1)
        from spellfix.inference import SpellCorrector

        return SpellCorrector(model, backend=backend, **spellfix_options)
    from spellfix.peers import make_peer

    return make_peer(name)


def run_one(system, rows: list[dict[str, str]], *, batch_size: int, latency_sample: int) -> dict[str, Any]:
    from spellfix.evaluation import compute_metrics, measure_latency, normalize, row_groups, run_corrector

    queries = [r["query"] for r in rows]
    references = [r["correction"] for r in rows]
    latency = measure_latency(system, queries, sample=latency_sample)
    start, cpu_start = time.perf_counter(), time.process_time()
    predictions, qps = run_corrector(system, queries, batch_size=batch_size)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    metrics = compute_metrics(queries, predictions, references, groups=row_groups(rows) or None)
    return {
        **metrics,
        "queries_per_s": qps,
        # CPU time of this (single-threaded) process: robust to other jobs on a shared machine.
        "queries_per_cpu_s": len(queries) / cpu if cpu > 0 else None,
        "chars_per_s": sum(len(q) for q in queries) / elapsed if elapsed > 0 else None,
        "p50_ms": latency["p50"],
        "p99_ms": latency["p99"],
        "batch_size": batch_size,
        # Which correct inputs came back changed: on the word lists a few "correct" words are
        # themselves misspellings (norvig1 lists "arrangeing"), so the names matter, not just the rate.
        "changed_correct": [
            {"query": q, "prediction": p}
            for q, p, r in zip(queries, predictions, references)
            if normalize(q) == normalize(r) and normalize(p) != normalize(r)
        ][:CHANGED_CORRECT_LISTED],
        "examples": [
            {"query": q, "prediction": p, "correction": r}
            for q, p, r in list(zip(queries, predictions, references))[:: max(1, len(queries) // 5)][:5]
        ],
    }


def measure_candidates(rows: list[dict[str, str]]) -> dict[str, Any]:
    from spellfix.lexical.candidates import CandidateAnnotator, CandidatesConfig, candidate_recall
    from spellfix.evaluation import row_groups

    misspelled = [r for r in rows if r["query"] != r["correction"]]
    labels = row_groups(misspelled).get("error_type")
    out = {}
    for variant, overrides in CANDIDATE_VARIANTS.items():
        annotator = CandidateAnnotator(CandidatesConfig(enabled=True, **overrides))
        result = candidate_recall(
            annotator,
            [r["query"] for r in misspelled],
            [r["correction"] for r in misspelled],
            ks=(1, 3, 5),
            error_types=labels,
        )
        result["overrides"] = overrides
        result["example"] = annotator.annotate(misspelled[0]["query"])
        out[variant] = result
    return out


def merge_reports(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """New entries replace old ones with the same (system, dataset); the rest are kept, in the
    order systems then sets first appeared. Each entry carries its own time and load average."""
    fresh = {(e["name"], e["dataset"]) for e in new["entries"]}
    kept = [e for e in old.get("entries", []) if (e["name"], e["dataset"]) not in fresh]
    merged = dict(new)
    merged["entries"] = kept + new["entries"]
    order = {name: i for i, name in enumerate(KNOWN_SYSTEMS)}
    merged["entries"].sort(key=lambda e: order.get(e["name"], len(order)))
    if "candidates" not in new and "candidates" in old:
        merged["candidates"] = old["candidates"]
    previous = old.get("command", "?")
    merged["command"] = previous if previous.endswith(new["command"]) else f"{previous}; then {new['command']}"  # a re-run adds nothing
    merged["versions"] = {**old.get("versions", {}), **new["versions"]}
    return merged


def _versions(systems: Sequence[str]) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("symspellpy", "pyspellchecker", "rapidfuzz", "spellfix", *(("torch", "onnxruntime") if set(systems) & set(SPELLFIX_SYSTEMS) else ())):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def render_markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Accuracy: spellfix vs classic correctors",
        "",
        "Same scoring for every system (`spellfix.evaluation`: lower-cased, whitespace-collapsed exact "
        "match). *fix* = exact match on misspelled inputs; *false-pos* = correct inputs changed (for the "
        "word lists the distinct correct words are fed as inputs). One thread, whole set; latency at batch 1 "
        "(wall clock, so it moves with the machine's load; queries/CPU-s does not).",
        f"Reproduce: `{report['command']}`. Load average before/after: "
        f"{report['machine']['loadavg_before'][0]:.2f} / {report['machine']['loadavg_after'][0]:.2f} on "
        f"{report['machine']['cpu_count']} cores.",
        "",
    ]
    by_set: dict[str, list[dict[str, Any]]] = {}
    for entry in report["entries"]:
        by_set.setdefault(entry["dataset"], []).append(entry)
    for dataset, entries in by_set.items():
        first = entries[0]
        lines += [
            f"## {dataset} ({first['n_misspelled']} misspelled + {first['n_correct']} correct inputs)",
            "",
            "| system | fix (exact, misspelled) | false-pos | word corr. | CER | queries/s (wall) | queries/CPU-s | p50 ms | p99 ms |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for e in entries:
            lines.append(
                f"| {e['name']} | {_pct(e['exact_match_misspelled'])} | {_pct(e['false_positive_rate'])} | "
                f"{_pct(e['word_correction_rate'])} | {e['cer']:.3f} | {e['queries_per_s']:.0f} | "
                f"{e['queries_per_cpu_s']:.0f} | "
                f"{e['p50_ms']:.2f} | {e['p99_ms']:.2f} |"
            )
        peers = [e for e in entries if e["name"] in PEER_NAMES]
        if peers:
            bar_fix = max(e["exact_match_misspelled"] or 0 for e in peers)
            bar_fp = min(e["false_positive_rate"] or 0 for e in peers)
            lines.append("")
            lines.append(f"Bar to beat on both at once: fix > {_pct(bar_fix)} and false-pos < {_pct(bar_fp)}.")
            for e in entries:
                if e["name"] not in PEER_NAMES and e["name"] not in BASELINE_NAMES:
                    beats = (e["exact_match_misspelled"] or 0) > bar_fix and (e["false_positive_rate"] or 0) < bar_fp
                    margin = e.get("copy_margin")
                    setting = f" (copy margin {margin:.2f} nats" if margin is not None else ""
                    if e.get("acceptance"):
                        setting = f" (acceptance model, threshold {e['acceptance']['threshold']:.2f}"
                    if setting and not e.get("acceptance") and e.get("real_word_margin") is not None:
                        setting += f", real-word changes {e['real_word_margin']:.2f}"
                    if setting and e.get("known_word_zipf") is not None:
                        setting += f", known words: Zipf >= {e['known_word_zipf']:g}"
                    setting += ")" if setting else ""
                    lines.append(f"{e['name']}{setting} clears it: **{'yes' if beats else 'no'}**.")
        if first.get("identity_rows_added"):
            lines += ["", "Correct words changed:", ""]
            for e in entries:
                changed = e.get("changed_correct") or []
                shown = ", ".join(f"{c['query']}→{c['prediction']}" for c in changed[:12])
                more = f" (+{len(changed) - 12} more)" if len(changed) > 12 else ""
                lines.append(f"- {e['name']}: {shown or 'none'}{more}")
        breakdown = first.get("breakdown") or {}
        for group in ("error_type", "domain"):
            if group not in breakdown:
                continue
            values = [v for v in breakdown[group] if v != "none"]
            lines += ["", f"By {group} (fix rate; false-pos on correct inputs):", "",
                      "| system | " + " | ".join(values) + (" | false-pos |" if group != "error_type" else " |"),
                      "|---|" + "---:|" * (len(values) + (group != "error_type"))]
            for e in entries:
                b = e["breakdown"][group]
                cells = [f"{_pct(b[v]['exact_match_misspelled'])} (n={b[v]['n_misspelled']})" for v in values]
                if group != "error_type":
                    cells.append(" / ".join(f"{v} {_pct(b[v]['false_positive_rate'])}" for v in values))
                lines.append(f"| {e['name']} | " + " | ".join(cells) + " |")
        lines.append("")
    if report.get("candidates"):
        lines += render_candidates(report["candidates"])
    return "\n".join(lines) + "\n"


def render_candidates(candidates: dict[str, Any]) -> list[str]:
    lines = [
        "## Dictionary candidates on dev (misspelled rows): the ceiling they give the model",
        "",
        "*annotated* = misspelled words that get candidates; *recall@k* = the right word among the first "
        "k; *query recall* = every misspelled word of the query has its fix listed; *noise* = words of "
        "correct queries that get candidates anyway.",
        "",
        "| variant | annotated | recall@1 | recall@3 | recall@5 | non-word @5 | real-word @5 | query recall | noise | +chars | CPU µs/query cold / warm |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in candidates.items():
        kmax = max(int(k.split("@")[1]) for k in r if k.startswith("recall@"))
        by = r.get("by_error_type", {})
        at5 = "recall@5" if "recall@5" in r else f"recall@{kmax}"
        lines.append(
            f"| {name} `{r['overrides']}` | {_pct(r['annotated'])} | {_pct(r['recall@1'])} | {_pct(r['recall@3'])} | "
            f"{_pct(r.get('recall@5'))} | {_pct(by.get('non-word', {}).get(at5))} | {_pct(by.get('real-word', {}).get(at5))} | "
            f"{_pct(r['query_recall'])} | {_pct(r['noise_rate'])} | {r['chars_added_mean']:.1f} | "
            f"{r['cpu_us_per_query']:.0f} / {r['cpu_us_per_query_warm']:.0f} |"
        )
    lines += ["", f"Example (default): `{next(iter(candidates.values()))['example']}`", ""]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="spellfix model dir (training output, checkpoint or export); omit for peers only")
    parser.add_argument("--backend", default="torch", choices=["torch", "onnxruntime", "tensorrt"])
    parser.add_argument("--num-beams", type=int, default=1, help="spellfix beam width (1: greedy)")
    parser.add_argument("--precision", default="fp32", help="spellfix onnxruntime graphs: fp32 or int8")
    parser.add_argument(
        "--systems", default=None,
        help=f"comma list of {', '.join(KNOWN_SYSTEMS)} (default: spellfix if --model, then the others)",
    )
    parser.add_argument(
        "--merge", action="store_true",
        help="keep the other entries of an existing results file (e.g. add a spellfix model without "
        "re-running pyspellchecker, which takes ~10 min)",
    )
    parser.add_argument("--sets", default=",".join(SETS), help=f"comma list of {', '.join(SETS)}")
    parser.add_argument("--data-dir", type=Path, default=DATA, help="where the dev sets live (default: the repo's data/)")
    parser.add_argument("--limit", type=int, default=None, help="rows per set file (spread evenly), for quick runs")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size for the throughput pass")
    parser.add_argument("--latency-sample", type=int, default=200, help="queries timed one at a time")
    parser.add_argument("--candidates", action="store_true", help="also measure dictionary-candidate recall on dev")
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    parser.add_argument("--name", default="accuracy", help="output file stem")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(REPO))
    from spellfix.evaluation import write_json_atomic

    systems = args.systems.split(",") if args.systems else [*(["spellfix"] if args.model else []), *PEER_NAMES, *BASELINE_NAMES]
    unknown = [s for s in systems if s not in KNOWN_SYSTEMS]
    if unknown:
        parser.error(f"unknown system(s) {unknown}; choose from {', '.join(KNOWN_SYSTEMS)}")
    if any(s in SPELLFIX_SYSTEMS for s in systems) and not args.model:
        parser.error("the spellfix systems need --model")
    sets = [s for s in args.sets.split(",") if s]
    missing = [s for s in sets if s not in SETS]
    if missing:
        parser.error(f"unknown set(s) {missing}; choose from {', '.join(SETS)}")
    data = {}
    for name in sets:
        path = args.data_dir / SETS[name]
        if not path.exists():
            parser.error(f"dev set {name!r} not found at {path}")
        data[name] = load_set(path, args.limit)
        if name.startswith("dev-heldout"):
            from spellfix.calibration import split_by_word

            rows = data[name][0]
            _, held = split_by_word([r["query"] for r in rows], [r["correction"] for r in rows])
            rows = [rows[i] for i in held]
            if name == "dev-heldout-no-codespell":
                rows = without_codespell_pairs(rows)
            data[name] = (rows, data[name][1])

    load_before = os.getloadavg()
    entries = []
    for system_name in systems:
        start = time.perf_counter()
        spellfix_system = system_name in SPELLFIX_SYSTEMS
        options = {"num_beams": args.num_beams, "precision": args.precision} if spellfix_system else {}
        system = build_system(system_name, args.model, args.backend, **options)
        load_s = time.perf_counter() - start
        for set_name, (rows, added) in data.items():
            print(f"[accuracy] {system_name} on {set_name} ({len(rows)} inputs) ...", file=sys.stderr, flush=True)
            result = run_one(system, rows, batch_size=args.batch_size, latency_sample=args.latency_sample)
            entries.append({
                "name": system_name, "dataset": set_name, "identity_rows_added": added, "load_s": load_s,
                "model": args.model if spellfix_system else None,
                "copy_margin": getattr(system, "copy_margin", None),
                "real_word_margin": getattr(system, "real_word_margin", None),
                "known_word_zipf": getattr(system, "known_word_zipf", None),
                "acceptance": system.acceptance.to_dict() if getattr(system, "acceptance", None) else None,
                "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "loadavg": os.getloadavg()[0], **result,
            })
    report: dict[str, Any] = {
        "benchmark": "accuracy",
        "command": "python benchmarks/accuracy.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "entries": entries,
    }
    if args.candidates and "dev" in data:
        report["candidates"] = measure_candidates(data["dev"][0])
    report["machine"] = {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "threads": 1,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
    }
    report["versions"] = _versions(systems)
    json_path = args.output_dir / f"{args.name}.json"
    if args.merge and json_path.exists():
        report = merge_reports(json.loads(json_path.read_text(encoding="utf-8")), report)

    args.output_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(json_path, report)
    md = render_markdown(report)
    tmp = args.output_dir / f".{args.name}.md.tmp"
    tmp.write_text(md, encoding="utf-8")
    os.replace(tmp, args.output_dir / f"{args.name}.md")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
