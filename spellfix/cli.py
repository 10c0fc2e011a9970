"""The ``spellfix`` command: a thin face over library functions research code can call directly.

Every subcommand has ``--help``, exits 0 on success, and on a user error prints one line
``spellfix: error: <what to fix>`` and exits non-zero (2; 143/130 after a SIGTERM/SIGINT checkpoint).
Heavy imports happen inside the subcommand that needs them, so ``spellfix --help`` is instant.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

if TYPE_CHECKING:  # the CLI imports heavy modules inside its commands only
    from spellfix.calibration import MarginPoint

#: the corrector shipped in models/ (resolved by spellfix.modeling.resolve_model_dir)
DEFAULT_MODEL = "spell-small-cpu"

EXIT_USER_ERROR = 2
EXIT_SIGTERM = 143


# ----------------------------------------------------------------------------------- commands


def cmd_train(args: argparse.Namespace) -> int:
    from spellfix.config import load_recipe
    from spellfix.training.loop import train

    recipe = load_recipe(args.recipe, overrides=args.set)
    result = train(recipe, args.output_dir, resume=args.resume, progress=not args.no_progress)
    summary = {
        "output_dir": str(result.output_dir),
        "final_dir": str(result.final_dir) if result.final_dir else None,
        "best_dir": str(result.best_dir) if result.best_dir else None,
        "steps": result.steps,
        "total_steps": result.total_steps,
        "stop_reason": result.stop_reason,
        "minutes": round(result.elapsed_s / 60, 2),
        **{k: v for k, v in result.metrics.items() if k in ("exact_match", "exact_match_misspelled", "false_positive_rate")},
    }
    print(json.dumps(summary))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from spellfix.evaluation import evaluate, format_metrics

    metrics = evaluate(args.model, args.data, backend=args.backend, batch_size=args.batch_size, limit=args.limit, json_out=args.json, num_beams=args.num_beams, **_copy_margins(args.copy_margin))
    print(format_metrics(metrics))
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from spellfix import calibration
    from spellfix.data.readers import read_pairs, spread_rows
    from spellfix.inference import SpellCorrector

    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {args.limit}")
    if args.candidate_answers < 0:
        raise ValueError(f"--candidate-answers must be >= 0, got {args.candidate_answers}")
    rows = spread_rows(read_pairs(args.data)[0], args.limit)
    references = [r["correction"] for r in rows]
    known_word_zipf = args.known_word_zipf
    corrector = SpellCorrector(
        args.model, backend=args.backend, batch_size=args.batch_size, copy_margin=None, known_word_zipf=known_word_zipf,
        candidate_answers=args.candidate_answers, acceptance=None,  # the saved rule is being replaced
    )
    decisions = calibration.record_decisions(corrector, [r["query"] for r in rows], chunk_size=args.batch_size * 4, progress=not args.no_progress)
    separate = not args.single_margin
    split = calibration.split_by_word([r["query"] for r in rows], references) if args.holdout == "word" else calibration.even_odd(len(rows))
    fit_rows = split[0] if args.holdout == "word" else list(range(len(rows)))
    held_label = "the held-out half (split by corrected word)" if args.holdout == "word" else "the odd rows"
    if args.holdout == "word":
        print(f"fitting on {len(split[0])} rows, holding out {len(split[1])} (split by corrected word: no word or query text on both sides)")
    fit_decisions, fit_references = [decisions[i] for i in fit_rows], [references[i] for i in fit_rows]
    points = calibration.sweep(fit_decisions, fit_references, separate_real_word=separate)
    chosen = calibration.choose(points, objective=args.objective, max_fpr=args.max_fpr)
    print(calibration.format_sweep(points, chosen))
    held_out: dict[str, Any] = {}
    if len(rows) >= 2:
        on_fit, on_held = calibration.split_check(
            decisions, references, objective=args.objective, max_fpr=args.max_fpr, separate_real_word=separate, split=split
        )
        print(
            f"{'held-out' if args.holdout == 'word' else 'carry-over'} check: the margins chosen on the fit rows ({_margins_text(on_fit)}) "
            f"give {on_held.fixed:.1%} fixed / {on_held.false_positive_rate:.1%} changed on {held_label} "
            f"(on the fit rows: {on_fit.fixed:.1%} / {on_fit.false_positive_rate:.1%})"
        )
        held_out["margins"] = {"fixed": on_held.fixed, "changed": on_held.false_positive_rate}
    acceptance = None
    if args.rule == "acceptance":
        from spellfix.lexical.context import BigramContext
        from spellfix.lexical.lexicon import zipf_frequencies

        examples = calibration.acceptance_examples(decisions, corrector.known_words(), zipf_frequencies(), BigramContext.builtin())
        try:
            acceptance, accept_points, accept_chosen = calibration.calibrate_acceptance(
                fit_decisions, fit_references, [examples[i] for i in fit_rows], objective=args.objective, max_fpr=args.max_fpr
            )
        except ValueError as exc:  # e.g. a barely trained model that never gets a dev query right
            print(f"no acceptance model: {exc}; the margins decide")
        else:
            print("acceptance model (spellfix.inference.acceptance), by threshold:")
            print(calibration.format_sweep(accept_points, accept_chosen, label="threshold"))
        if acceptance is not None and len(rows) >= 4:
            try:
                on_fit, on_held = calibration.acceptance_split_check(
                    decisions, references, examples, objective=args.objective, max_fpr=args.max_fpr, split=split
                )
            except ValueError as exc:
                print(f"{held_label} check skipped: {exc}")
            else:
                print(
                    f"{'held-out' if args.holdout == 'word' else 'carry-over'} check: the acceptance model fitted on the fit rows "
                    f"(threshold {on_fit.margin:.3f}) gives {on_held.fixed:.1%} fixed / {on_held.false_positive_rate:.1%} changed "
                    f"on {held_label} (on the fit rows: {on_fit.fixed:.1%} / {on_fit.false_positive_rate:.1%})"
                )
                held_out["acceptance"] = {"fixed": on_held.fixed, "changed": on_held.false_positive_rate}
    if args.dry_run:
        return 0
    provenance = {
        "data": str(args.data), "rows": len(rows), "objective": args.objective, "max_fpr": args.max_fpr,
        "separate_real_word_margin": separate, "rule": "acceptance" if acceptance is not None else "margins",
        "holdout": args.holdout, "fit_rows": len(fit_rows),
        **({"held_out_rows": len(split[1]), "held_out": held_out} if args.holdout == "word" else {}),
    }
    path = calibration.save_copy_margin(
        corrector.model_dir, chosen.margin, real_word_margin=chosen.real_word_margin, known_word_zipf=known_word_zipf,
        acceptance=acceptance, candidate_answers=args.candidate_answers if corrector.settings.candidates_enabled else 0,
        provenance=provenance,
    )
    print(
        f"saved decoding.copy_margin={chosen.margin} decoding.real_word_margin={chosen.real_word_margin} "
        f"decoding.known_word_zipf={known_word_zipf} "
        + (f"decoding.acceptance (threshold {acceptance.threshold:.3f}, decides instead of the margins) " if acceptance else "")
        + f"in {path}"
    )
    return 0


#: dictionary candidates per word judged as answers besides the decoder's (docs/quality.md)
DEFAULT_CANDIDATE_ANSWERS = 2

#: chosen on data/dev.jsonl among 2.0 / 2.5 / 3.0 (docs/quality.md): "tv", "chili", "halen" count as known
DEFAULT_KNOWN_WORD_ZIPF = 2.5


def _known_word_zipf(value: str) -> float | None:
    """--known-word-zipf: 'off' or a Zipf frequency the shipped word list can serve."""
    from spellfix.lexical.lexicon import check_known_word_zipf

    if value == "off":
        return None
    try:
        zipf = float(value)
        check_known_word_zipf(zipf)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected 'off' or a number >= 1, got {value!r} ({exc})") from None
    return zipf


def _margins_text(point: MarginPoint) -> str:
    """The margins of a calibration point for the carry-over line ("copy 0.345, real-word 4.249")."""

    def fmt(value: float | None) -> str:
        return "off" if value is None else f"{value:.3f}"

    text = f"copy {fmt(point.margin)}"
    return text if point.real_word_margin is None else f"{text}, real-word {fmt(point.real_word_margin)}"


def cmd_correct(args: argparse.Namespace) -> int:
    if args.input or args.output:
        return _correct_file(args)
    from spellfix.inference import SpellCorrector

    fixer = SpellCorrector(
        _runtime_model(args), backend=args.backend, precision=args.precision, num_beams=args.num_beams, batch_size=args.batch_size,
        **_copy_margins(args.copy_margin),
    )
    if args.queries:
        for fixed in fixer.correct(args.queries):
            print(fixed)
        return 0
    return _correct_stdin(fixer, args.max_chars)


def _runtime_model(args: argparse.Namespace) -> str:
    """--model for --backend: the onnxruntime backend runs an export dir, made once per model dir
    (``spellfix.export.cache``) when a model dir or shipped name is given."""
    if args.backend == "torch" and args.precision != "fp32":
        raise ValueError(f"--precision {args.precision} needs --backend onnxruntime (int8) or tensorrt (fp16); torch runs fp32")
    if args.backend != "onnxruntime":
        return args.model
    from spellfix.export.cache import cached_export

    return str(cached_export(args.model))


def _correct_stdin(fixer: object, max_chars: int) -> int:
    """stdin lines -> one output line each: good lines corrected, bad ones (undecodable, empty,
    over-long) written unchanged and reported on stderr as ``<stdin>:LINE: what``."""
    from spellfix.batch.formats import Layout, format_rows, parse_lines

    layout = Layout("<stdin>", "text", "query", "correction", max_chars)
    rows = parse_lines(layout, sys.stdin.buffer.read())
    good = [r for r in rows if r.problem is None]
    for row, fixed in zip(good, fixer.correct([r.query for r in good])):  # type: ignore[attr-defined]
        row.correction = fixed
    sys.stdout.flush()
    sys.stdout.buffer.write(format_rows(layout, rows))
    sys.stdout.buffer.flush()
    for row in rows:
        if row.problem is not None:
            print(f"{row.location(layout)}: {row.problem}", file=sys.stderr)
    return 0


def _correct_file(args: argparse.Namespace) -> int:
    from spellfix.batch import ModelSpec, correct_file

    if not (args.input and args.output):
        raise ValueError("--input and --output go together")
    if args.queries:
        raise ValueError("give queries as arguments or --input FILE, not both")
    workers = args.workers
    threads = args.threads or max(1, (os.cpu_count() or 1) // workers)
    model = ModelSpec(
        _runtime_model(args), backend=args.backend, precision=args.precision, batch_size=args.batch_size, threads=threads,
        corrector_options={"num_beams": args.num_beams, **_copy_margins(args.copy_margin)},
    )
    summary = correct_file(
        args.input, args.output, model, fmt=args.format, column=args.column, output_column=args.output_column,
        part_rows=args.part_rows, max_chars=args.max_chars, rejects=args.rejects, workers=workers, engine=args.engine,
        ray_address=args.ray_address, progress=not args.no_progress,
    )
    for line in summary.lines():
        print(line, file=sys.stderr)
    return 0


def _copy_margins(value: str) -> dict[str, float | str | None]:
    """--copy-margin as SpellCorrector keywords: "model" (the rule saved with the model: its
    acceptance model, else its margins), "margins" (the saved margins, even when an acceptance model
    is saved), "off", or a number of nats (one margin for every change)."""
    if value == "model":
        return {"copy_margin": "model", "real_word_margin": "model", "acceptance": "model"}
    if value == "margins":
        return {"copy_margin": "model", "real_word_margin": "model", "acceptance": None}
    if value == "off":
        return {"copy_margin": None, "real_word_margin": None, "acceptance": None}
    try:
        return {"copy_margin": float(value), "real_word_margin": None, "acceptance": None}
    except ValueError:
        raise ValueError(f"--copy-margin: expected 'model', 'margins', 'off' or a number, got {value!r}") from None


def _add_copy_margin(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--copy-margin", default="model", metavar="NATS",
        help="when the correction replaces the query: 'model' (the rule `spellfix calibrate` saved: its "
        "acceptance model, else its margins), 'margins' (the saved margins), 'off' (always the decoder's "
        "answer), or a number (keep the query unless the correction scores this many nats above it)",
    )


def cmd_export(args: argparse.Namespace) -> int:
    from spellfix.export import export

    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    triton = dict(_key_values(args.triton)) or None
    manifest = export(args.model, args.output, formats=formats, fp16=args.fp16, opset=args.opset, triton_options=triton)
    print(json.dumps({"output": str(args.output), "formats": formats, "files": len(manifest.get("files", {}))}))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from spellfix.telemetry.report import write_report

    logdirs = [Path(args.logdir), *(Path(d) for d in args.compare or [])]
    table = write_report(logdirs, Path(args.output), labels=args.labels)
    print(table)
    return 0


def cmd_recipes(args: argparse.Namespace) -> int:
    from spellfix.config import describe_fields, list_recipes

    if args.fields:
        for key, default, help_text in describe_fields():
            print(f"{key:40s} {default:14s} {help_text}")
        return 0
    for name, description in list_recipes():
        print(f"{name:32s} {description}")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    if args.data_command == "check":
        from spellfix.data.readers import read_pairs

        rows, report = read_pairs(args.file, query_column=args.query_column, correction_column=args.correction_column, on_error="skip")
        for problem in report.problems:
            print(problem)
        print(report.summary())
        return 0 if report.n_skipped == 0 else 1
    if args.data_command == "noise":
        from spellfix.fsutil import write_text_atomic
        from spellfix.data.noise import make_noisy_pairs
        from spellfix.data.readers import read_clean_queries

        clean, _ = read_clean_queries(args.input)
        pairs = make_noisy_pairs(clean, seed=args.seed)
        lines = [json.dumps({"query": q, "correction": c}) for q, c in pairs]
        write_text_atomic(Path(args.output), "\n".join(lines) + "\n")
        print(f"wrote {len(lines)} pairs to {args.output}")
        return 0
    raise AssertionError(args.data_command)


def _key_values(items: Sequence[str]) -> list[tuple[str, object]]:
    """``["a=1", "b=x"]`` -> ``[("a", 1), ("b", "x")]`` with YAML scalars (numbers, booleans)."""
    import yaml

    pairs = []
    for item in items:
        if "=" not in item:
            raise ValueError(f"{item!r} must look like key=value")
        key, raw = item.split("=", 1)
        pairs.append((key.strip(), yaml.safe_load(raw.strip())))
    return pairs


def _delegate(module: str, function: str = "run") -> Callable[[argparse.Namespace], int]:
    """Subcommands implemented in their own module (serve, bench, launch) with run(args) -> int."""

    def call(args: argparse.Namespace) -> int:
        import importlib

        return importlib.import_module(module).__getattribute__(function)(args)

    return call


# ------------------------------------------------------------------------------------ parsing


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spellfix", description="Train, evaluate, export and serve BART spelling correctors.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a recipe")
    p.add_argument("--recipe", required=True, help="recipe YAML or shipped recipe name (see `spellfix recipes`)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe field, e.g. train.lr=3e-4")
    p.add_argument("--output-dir", help="run directory (default runs/<recipe name>)")
    p.add_argument("--resume", default="auto", help="auto (newest complete checkpoint), never, or a checkpoint path")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="score a model on a pair file")
    p.add_argument("--model", required=True, help="training output dir, checkpoint dir, export dir or hub id")
    p.add_argument("--data", required=True, help="pair file (query, correction)")
    p.add_argument("--backend", default="torch", choices=["torch", "onnxruntime", "tensorrt"])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--num-beams", type=int, default=1)
    p.add_argument("--limit", type=int, help="evaluate the first N rows only")
    p.add_argument("--json", help="write the metrics JSON here")
    _add_copy_margin(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("calibrate", help="choose when a correction replaces the query (acceptance model, copy margins) on a dev set and save it with the model")
    p.add_argument("--model", required=True, help="training output dir, checkpoint dir or export dir (its spellfix.json is updated)")
    p.add_argument("--data", required=True, help="dev pair file with misspelled and correct queries")
    p.add_argument("--backend", default="torch", choices=["torch", "onnxruntime", "tensorrt"])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--limit", type=int, help="use N rows spread evenly over the file")
    p.add_argument("--objective", default="exact_match", choices=["exact_match", "fixed"], help="what the margin maximises: exact match over all rows, or the fix rate (with --max-fpr as the budget of changed correct queries)")
    p.add_argument("--max-fpr", type=float, help="only margins whose false-positive rate is at most this (0-1)")
    p.add_argument(
        "--rule", default="acceptance", choices=["acceptance", "margins"],
        help="what decides whether a correction replaces the query: a logistic model over word frequencies, edit "
        "distance and the model's scores, fitted on the dev set (default), or the two copy margins alone "
        "(the margins are chosen and saved either way)",
    )
    p.add_argument(
        "--candidate-answers", type=int, default=DEFAULT_CANDIDATE_ANSWERS, metavar="K",
        help="also judge the query with one word replaced by each of its first K dictionary candidates "
        f"(models trained with candidates; 0: only the decoder's answer; default {DEFAULT_CANDIDATE_ANSWERS})",
    )
    p.add_argument("--single-margin", action="store_true", help="one margin for every change (default: a separate one for answers that only replace dictionary words)")
    p.add_argument(
        "--known-word-zipf", type=_known_word_zipf, default=DEFAULT_KNOWN_WORD_ZIPF, metavar="ZIPF",
        help="words at least this frequent in wordfreq (Zipf scale, >= 1) count as dictionary words for the "
        f"real-word margin, besides symspellpy's dictionary; 'off': symspellpy's alone (default {DEFAULT_KNOWN_WORD_ZIPF})",
    )
    p.add_argument(
        "--holdout", default="none", choices=["none", "word"],
        help="'word': fit and choose on about half of the rows, split by corrected word (no word or query text on both "
        "sides), and report (and save in spellfix.json) the figures of the other half; 'none': fit on every row and "
        "print the even/odd carry-over check (default)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the sweep, save nothing")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("export", help="export a model (hf, onnx, tensorrt, triton)")
    p.add_argument("--model", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--format", default="hf,onnx", help="comma-separated: hf,onnx,tensorrt,triton")
    p.add_argument("--fp16", action="store_true", help="also write fp16 graphs for TensorRT")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument(
        "--triton", action="append", default=[], metavar="KEY=VALUE",
        help="Triton repository option, e.g. max_batch_size=64, instance_count=2, kind=KIND_GPU, max_queue_delay_us=500",
    )
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("correct", help="correct queries given as arguments or on stdin")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"model dir, export dir, shipped model name or hub id (default: the shipped {DEFAULT_MODEL})")
    p.add_argument(
        "--backend", default="torch", choices=["torch", "onnxruntime", "tensorrt"],
        help="torch (default), onnxruntime (the fast CPU runtime: a model dir or shipped name is exported once into "
        "$SPELLFIX_CACHE, default ~/.cache/spellfix) or tensorrt (an export dir with engines)",
    )
    p.add_argument("--precision", default="fp32", choices=["fp32", "int8", "fp16"], help="onnxruntime: fp32 or int8 graphs; tensorrt: fp16")
    p.add_argument("--num-beams", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32, help="queries per decoding batch")
    _add_copy_margin(p)
    p.add_argument("--max-chars", type=int, default=256, help="longer queries (after normalisation) are bad rows, left unchanged")
    p.add_argument("queries", nargs="*", metavar="QUERY")
    f = p.add_argument_group("a whole file (streamed, resumable by re-running the same command, every row kept in order)")
    f.add_argument("--input", metavar="FILE", help="query log: .txt/.log (a query per line), .jsonl, .csv, .tsv or .parquet")
    f.add_argument("--output", metavar="FILE", help="same format with the correction added (text: one line per input line)")
    f.add_argument("--format", choices=["text", "jsonl", "csv", "tsv", "parquet"], help="instead of the suffix")
    f.add_argument("--column", default="query", help="the query column (jsonl/csv/tsv/parquet; default query)")
    f.add_argument("--output-column", default="correction", help="the added column (default correction)")
    f.add_argument("--rejects", metavar="FILE", help="write bad rows here (JSONL with file, line, error) instead of passing them through")
    f.add_argument("--workers", type=int, default=1, help="model copies: processes (local) or actors (ray)")
    f.add_argument("--threads", type=int, help="intra-op threads per worker (default: cores / workers)")
    f.add_argument("--engine", default="local", choices=["local", "ray"], help="local processes, or Ray Data actors (pip install 'spellfix[ray]')")
    f.add_argument("--ray-address", help="an existing Ray cluster ('auto', ray://HEAD:10001); default: a local instance on 127.0.0.1")
    f.add_argument("--part-rows", type=int, default=1000, help="rows per part (the unit of resume and of work)")
    f.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_correct)

    p = sub.add_parser("serve", help="start Triton on 127.0.0.1 for a model repository")
    p.add_argument("--model-repository", required=True)
    p.add_argument("--port", type=int, default=8000, help="HTTP port (gRPC = port+1, metrics = port+2)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    p.set_defaults(func=_delegate("spellfix.serving.server"))

    p = sub.add_parser("bench", help="side-by-side benchmarks")
    p.add_argument("which", choices=["train", "infer", "corrector"])
    p.add_argument("--json", help="write results JSON here")
    p.add_argument("--quick", action="store_true", help="fewer repeats (smoke run)")
    p.set_defaults(func=_delegate("spellfix.bench.cli"))

    p = sub.add_parser("report", help="plot telemetry of one or more runs")
    p.add_argument("--logdir", required=True)
    p.add_argument("--compare", nargs="*", help="more runs drawn side by side")
    p.add_argument("--labels", nargs="*", help="one label per run")
    p.add_argument("--output", required=True, help="PNG path (a .md table is written next to it)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("launch", help="launch training elsewhere")
    launch_sub = p.add_subparsers(dest="launch_target", required=True)
    sm = launch_sub.add_parser("sagemaker", help="submit a SageMaker training job")
    try:
        from spellfix.launch.sagemaker import add_arguments

        add_arguments(sm)
        sm.set_defaults(func=_delegate("spellfix.launch.sagemaker"))
    except ImportError as exc:  # pragma: no cover - only when the module itself is broken
        sm.set_defaults(func=lambda a, exc=exc: _fail(f"SageMaker launcher unavailable: {exc}"))

    p = sub.add_parser("recipes", help="list shipped recipes")
    p.add_argument("--fields", action="store_true", help="list every recipe field with its default and help")
    p.set_defaults(func=cmd_recipes)

    p = sub.add_parser("data", help="data utilities")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    d = data_sub.add_parser("check", help="validate a pair file and list every bad row")
    d.add_argument("file")
    d.add_argument("--query-column", default="query")
    d.add_argument("--correction-column", default="correction")
    d = data_sub.add_parser("noise", help="turn clean queries into (noisy, clean) pairs")
    d.add_argument("--input", required=True)
    d.add_argument("--output", required=True, help="JSONL output")
    d.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_data)
    return parser


def _fail(message: str) -> int:
    print(f"spellfix: error: {message}", file=sys.stderr)
    return EXIT_USER_ERROR


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s", stream=sys.stderr)
    for noisy in ("httpx", "urllib3", "datasets", "filelock", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not sys.stderr.isatty():
        try:
            import datasets

            datasets.disable_progress_bars()  # no progress-bar spam in CI logs and job logs
        except ImportError:
            pass
    try:
        import transformers

        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    except ImportError:
        pass


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("train", "evaluate", "calibrate", "export", "correct", "bench"):
        _configure_logging(args.verbose)
    else:
        logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    from spellfix.training.signals import Preempted

    try:
        return int(args.func(args) or 0)
    except Preempted as exc:
        print(f"spellfix: {exc}", file=sys.stderr)
        return exc.exit_code  # 143 after SIGTERM, 130 after SIGINT
    except KeyboardInterrupt:
        return _fail("interrupted")
    except (ValueError, FileNotFoundError, RuntimeError, ImportError, OSError) as exc:
        if args.verbose:
            raise
        return _fail(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)


if __name__ == "__main__":
    sys.exit(main())
