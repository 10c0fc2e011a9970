"""``spellfix bench train|infer|corrector``: run a side-by-side benchmark and write benchmarks/results/."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    quick = {"repeats": 1} if args.quick else {}
    if args.which == "corrector":
        from spellfix.bench.corrector import run_corrector_benchmark

        # a missing peer is a MissingExtraError (RuntimeError): one `spellfix: error:` line naming the extra
        results = run_corrector_benchmark(**({"batch1_queries": 40, "rounds": 1} if args.quick else {}))
    elif args.which == "infer":
        from spellfix.bench.corrector import require_ctranslate2
        from spellfix.bench.infer import run_infer_benchmark

        require_ctranslate2()

        if args.quick:
            quick.update(calls=20, batch_calls=1, warmup=2)
        results = run_infer_benchmark(**quick)
    else:
        from spellfix.bench.train import run_train_benchmark

        results = run_train_benchmark(**quick)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    return 0
