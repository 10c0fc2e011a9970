"""The shipped corrector end to end (text -> text, its full rule) vs its step loop, this runtime's
plain greedy and CTranslate2 greedy on the same weights, in one run.

A thin face over ``spellfix.bench.corrector.run_corrector_benchmark`` (also ``spellfix bench corrector``).

    python benchmarks/corrector_latency.py            # full run (600 batch-1 queries, 3 rounds)
    python benchmarks/corrector_latency.py --quick    # smoke run
Writes benchmarks/results/corrector_latency.json and .md. Needs the `bench` extra (ctranslate2).
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path

from spellfix.bench.corrector import DEFAULT_DATA, DEFAULT_MODEL, RESULTS_DIR, SYSTEMS, MissingExtraError, run_corrector_benchmark


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model dir or shipped model name")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated subset")
    parser.add_argument("--batch1-queries", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--name", default="corrector_latency")
    parser.add_argument("--quick", action="store_true", help="smoke run: 40 batch-1 queries, 1 round")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch1_queries, args.rounds = 40, 1
    logging.basicConfig(level=logging.INFO, format="[corrector] %(message)s", stream=sys.stderr)
    warnings.simplefilter("ignore")
    try:
        run_corrector_benchmark(
            args.model,
            args.data,
            args.output_dir,
            systems=[s.strip() for s in args.systems.split(",") if s.strip()],
            batch1_queries=args.batch1_queries,
            rounds=args.rounds,
            threads=args.threads,
            name=args.name,
            command="python benchmarks/corrector_latency.py " + " ".join(sys.argv[1:] if argv is None else argv),
        )
    except MissingExtraError as exc:
        print(f"corrector_latency: error: {exc}", file=sys.stderr)
        return 2
    print((args.output_dir / f"{args.name}.md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
