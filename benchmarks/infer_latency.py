"""Inference latency/throughput: spellfix's runtime vs transformers generate vs CTranslate2.

A thin face over ``spellfix.bench.infer.run_infer_benchmark`` (also ``spellfix bench infer``); the
setup and the floors are described there and in the written markdown.

    python benchmarks/infer_latency.py                 # full run: >= 200 batch-1 calls per system
    python benchmarks/infer_latency.py --quick         # smoke run (few calls)
Writes benchmarks/results/infer_latency.json and .md. Needs the `bench` extra (ctranslate2).
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path

from spellfix.bench.infer import ABLATIONS, DEFAULT_WORK_DIR, RESULTS_DIR, SYSTEMS, run_infer_benchmark


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK_DIR, help="cache for the model, export and CT2 conversions")
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--systems", default=",".join(SYSTEMS + ABLATIONS), help="comma-separated subset")
    parser.add_argument("--calls", type=int, default=200, help="batch-1 calls per system (split over the rounds)")
    parser.add_argument("--repeats", type=int, default=4, help="rounds; p50 is the median of per-round medians")
    parser.add_argument("--batch-calls", type=int, default=3, help="batch-32 calls per system per round")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="smoke run: 8 calls, 2 rounds, 1 batch call")
    args = parser.parse_args(argv)
    if args.quick:
        args.calls, args.repeats, args.batch_calls = 8, 2, 1
    logging.basicConfig(level=logging.INFO, format="[infer] %(message)s", stream=sys.stderr)
    for noisy in ("onnxscript", "torch", "transformers"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    warnings.simplefilter("ignore")
    run_infer_benchmark(
        args.work_dir,
        args.output_dir,
        systems=[s.strip() for s in args.systems.split(",") if s.strip()],
        calls=args.calls,
        repeats=args.repeats,
        batch_calls=args.batch_calls,
        threads=args.threads,
        command="python benchmarks/infer_latency.py " + " ".join(sys.argv[1:] if argv is None else argv),
    )
    print((args.output_dir / "infer_latency.md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
