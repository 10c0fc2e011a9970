"""Training throughput: transformers' Seq2SeqTrainer (naive, tuned) vs spellfix, side by side on CPU.

A thin face over ``spellfix.bench.train.run_train_benchmark`` (also ``spellfix bench train``); what
runs and how it is timed is described there and in the written markdown.

    python benchmarks/train_throughput.py                    # 3 interleaved repeats, 20 measured steps each
    python benchmarks/train_throughput.py --ablations all    # + spellfix with each option reverted
    python benchmarks/train_throughput.py --quick            # smoke run (tiny, minutes)
Writes benchmarks/results/train_throughput.json and .md.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path

from spellfix.bench.train import ABLATIONS, RESULTS_DIR, SYSTEMS, run_train_benchmark


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--name", default="train_throughput", help="results file stem")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated subset of " + ", ".join(SYSTEMS))
    parser.add_argument("--ablations", default="", help="comma-separated names, or 'all': " + "; ".join(ABLATIONS))
    parser.add_argument("--steps", type=int, default=20, help="measured optimizer steps per run")
    parser.add_argument("--naive-steps", type=int, default=3, help="measured steps of the naive Trainer (fixed shapes)")
    parser.add_argument("--warmup", type=int, default=1, help="steps run before measuring")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs per system (median reported)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (set explicitly: shared machine)")
    parser.add_argument("--pairs", type=int, default=None, help="training pairs (default 4 x (warmup + steps) x 256)")
    parser.add_argument("--work-dir", type=Path, default=None, help="keep the tokenizer and run dirs here")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 steps, no warm-up, 1 repeat, 1024 pairs")
    parser.add_argument("--profile", action="store_true",
                        help="instead: torch.profiler of one spellfix step, with all options and with the Trainer-like "
                             "ones (autocast, full logits); writes <name>_profile.json/.md")
    parser.add_argument("--ab", action="store_true",
                        help="instead: paired step A/B of the step options on the same batches + the padding each "
                             "batching choice implies; writes <name>_ab.json/.md")
    parser.add_argument("--bf16-weights-accuracy", type=int, metavar="STEPS", default=0,
                        help="instead: train the quickstart recipe STEPS steps with bf16 autocast and with bf16_weights "
                             "(same seed, same data) and compare loss and dev accuracy; writes <name>_bf16_weights.json/.md")
    args = parser.parse_args(argv)
    if args.bf16_weights_accuracy:
        return bf16_weights_accuracy(args)
    if args.profile:
        return profile(args)
    if args.ab:
        return step_ab(args)
    if args.quick:
        args.steps, args.naive_steps, args.warmup, args.repeats, args.pairs = 2, 2, 0, 1, args.pairs or 1024
    ablations = list(ABLATIONS) if args.ablations == "all" else [a for a in args.ablations.split(",") if a]
    logging.basicConfig(level=logging.INFO, format="[train-bench] %(message)s", stream=sys.stderr)
    for noisy in ("spellfix", "transformers", "accelerate", "datasets", "torch"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    warnings.simplefilter("ignore")
    entries = run_train_benchmark(
        args.output_dir,
        systems=[s for s in args.systems.split(",") if s],
        ablations=ablations,
        steps=args.steps,
        naive_steps=args.naive_steps,
        warmup=args.warmup,
        repeats=args.repeats,
        threads=args.threads,
        n_pairs=args.pairs,
        work_dir=args.work_dir,
        name=args.name,
        progress=lambda s: logging.getLogger("train-bench").info("%s", s),
    )
    for e in entries:
        if "samples_per_s" in e:
            print(f"{e['name']:34s} {e['samples_per_s']:8.2f} samples/s {e['tokens_per_s']:9.0f} tokens/s  MFU {100 * e['mfu']:.1f}%")
    summary = next((e for e in entries if e["name"] == "summary"), {})
    for key, value in summary.items():
        if key != "name":
            print(f"{key}: {value}")
    return 0


def bf16_weights_accuracy(args: argparse.Namespace) -> int:
    """The accuracy cost of pure-bf16 compute weights: the same quickstart training (seed, data,
    steps) in bf16 autocast over fp32 weights vs ``train.bf16_weights=true``, then loss and dev
    metrics side by side. Runs one after the other (accuracy, not speed)."""
    import json
    import tempfile

    import torch

    from spellfix.config import load_recipe, write_text_atomic
    from spellfix.training.loop import train

    logging.basicConfig(level=logging.INFO, format="[train-bench] %(message)s", stream=sys.stderr)
    torch.set_num_threads(args.threads)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="spellfix-bf16w-"))
    steps = args.bf16_weights_accuracy
    results = {}
    for name, bf16_weights in (("bf16 autocast (fp32 weights)", False), ("bf16_weights=true (pure bf16 compute)", True)):
        recipe = load_recipe("quickstart", overrides={
            "train.precision": "bf16", "train.bf16_weights": bf16_weights, "train.max_steps": steps,
            "train.max_minutes": None, "train.warmup_steps": max(1, steps // 5), "train.eval_every": 0,
            "train.save_every": 0, "train.log_every": max(1, steps // 10), "eval.limit": 400,
            "telemetry.tensorboard": False, "telemetry.stdout": False,
        })
        out = work / ("bf16w" if bf16_weights else "autocast")
        if out.exists():
            import shutil

            shutil.rmtree(out)
        result = train(recipe, out, resume="never", progress=False)
        rows = [json.loads(line) for line in (out / "logs" / "metrics.jsonl").read_text().splitlines() if line.strip()]
        losses = [r["loss"] for r in rows if "loss" in r]
        results[name] = {
            "final_train_loss": round(losses[-1], 4),
            "mean_loss_last_3_logs": round(sum(losses[-3:]) / len(losses[-3:]), 4),
            **{k: round(v, 4) for k, v in result.metrics.items() if k in ("exact_match", "exact_match_misspelled", "false_positive_rate", "cer")},
        }
        logging.getLogger("train-bench").info("%s: %s", name, results[name])
    lines = [f"# Accuracy cost of pure-bf16 compute weights (quickstart recipe, {steps} steps, same seed and data, CPU)", "",
             "| arithmetic | final train loss | mean of last 3 logged losses | dev exact match | misspelled exact match | false positives | CER |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['final_train_loss']} | {r['mean_loss_last_3_logs']} | {r.get('exact_match')} | "
                     f"{r.get('exact_match_misspelled')} | {r.get('false_positive_rate')} | {r.get('cer')} |")
    lines += ["", f"Written by `python benchmarks/train_throughput.py --bf16-weights-accuracy {steps}`.", ""]
    args.output_dir.mkdir(parents=True, exist_ok=True)
    stem = args.output_dir / f"{args.name}_bf16_weights"
    write_text_atomic(stem.with_suffix(".json"), json.dumps({"steps": steps, "results": results}, indent=1) + "\n")
    write_text_atomic(stem.with_suffix(".md"), "\n".join(lines))
    print("\n".join(lines))
    return 0


def profile(args: argparse.Namespace) -> int:
    """Where the time of a step goes: the recipe as shipped vs the Trainer-like path."""
    import json
    import tempfile

    from spellfix.bench.train import prepare_data, profile_step
    from spellfix.config import write_text_atomic

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="spellfix-profile-"))
    data = prepare_data(work, args.pairs or 4096)
    variants = {
        "spellfix (recipe)": {},
        "trainer-like (autocast, full logits, SDPA)": {"train.loss": "full-logits", "train.attention": "sdpa"},
        "spellfix bf16_weights=true (pure bf16)": {"train.bf16_weights": True},
    }
    results = {name: profile_step(data, overrides, threads=args.threads) for name, overrides in variants.items()}
    lines = ["# Where a training step's time goes (torch.profiler, one step, bart-base shape, CPU)", ""]
    for name, r in results.items():
        lines += [f"## {name}", "", f"batch {r['batch_shape']}, step wall time {r['step_wall_s']} s "
                  f"(self CPU time summed over ops {r['profiled_self_cpu_s']} s)", "",
                  "| category | share of self CPU time |", "|---|---:|"]
        lines += [f"| {k} | {100 * v:.1f}% |" for k, v in r["share"].items()]
        lines += ["", "```", r["top_ops"], "```", ""]
    args.output_dir.mkdir(parents=True, exist_ok=True)
    stem = args.output_dir / f"{args.name}_profile"
    write_text_atomic(stem.with_suffix(".json"), json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "top_ops"}
                                                             for k, v in results.items()}, indent=1) + "\n")
    write_text_atomic(stem.with_suffix(".md"), "\n".join(lines))
    print("\n".join(lines))
    return 0


def step_ab(args: argparse.Namespace) -> int:
    """Options that change the step measured pairwise on identical batches; batching options by the
    padded positions they cause (deterministic)."""
    import json
    import tempfile

    from spellfix.bench.train import compare_steps, padding_table, prepare_data
    from spellfix.config import write_text_atomic

    log = logging.getLogger("train-bench")
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="spellfix-ab-"))
    data = prepare_data(work, args.pairs or 9216)
    pairs = {
        "loss": {"spellfix": {}, "loss=full-logits": {"train.loss": "full-logits"}},
        "precision": {"spellfix": {}, "bf16_weights=true (pure bf16)": {"train.bf16_weights": True}},
        "attention": {"spellfix": {}, "attention=sdpa": {"train.attention": "sdpa"}},
        "optimizer": {"spellfix": {}, "fused_adamw=off": {"train.fused_adamw": "off", "train.host_sync": "every_step"}},
        "trainer-like step": {"spellfix": {}, "full logits + SDPA": {"train.loss": "full-logits", "train.attention": "sdpa"}},
    }
    results: dict = {"padding": padding_table(data)}
    for title, variants in pairs.items():
        log.info("A/B %s", title)
        results[title] = compare_steps(data, variants, rounds=args.repeats + 1, threads=args.threads,
                                       progress=lambda s: log.info("%s", s))
    lines = ["# Step options A/B and batching padding (bart-base shape, CPU)", "",
             "Step options: the same 3 typical global batches (256 queries) per variant, steps alternating "
             "A, B, A, B, ...; median step time and the median of paired ratios (B's step / A's step).", "",
             "| comparison | variant | median step (s) | ratio to spellfix (median of pairs) |", "|---|---|---:|---:|"]
    for title, variants in results.items():
        if title == "padding":
            continue
        for name, r in variants.items():
            lines.append(f"| {title} | {name} | {r['median_step_s']:.2f} | {r['paired_ratio_median']:.3f} |")
    lines += ["", "Batching choices: padded positions on the benchmark data at batch 256 (no timing: the work each asks for).", "",
              "| batching | padding share | positions per real token | target padding share |", "|---|---:|---:|---:|"]
    for name, r in results["padding"].items():
        lines.append(f"| {name} | {100 * r['padding_share']:.1f}% | {r['positions_per_real_token']:.2f} | {100 * r['target_padding_share']:.1f}% |")
    stem = args.output_dir / f"{args.name}_ab"
    args.output_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(stem.with_suffix(".json"), json.dumps(results, indent=1) + "\n")
    write_text_atomic(stem.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
