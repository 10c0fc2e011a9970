"""Memory per GPU of the bart-base recipes: weights, gradients, Adam states, autocast's half-precision
weight copies, activations at max length (measured on CPU with the real model) and loss buffers.

A thin face over ``spellfix.bench.train_memory``; shows that batch 32/GPU of bart-base-8xv100.yaml
fits a 16 GB V100 (and what the full-logits loss would add).

    python benchmarks/train_memory.py
Writes benchmarks/results/train_memory.json and .md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from spellfix.bench.train_memory import budget_table, estimate, write

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    budgets = [
        estimate("bart-base-8xv100"),
        estimate("bart-base-8xv100", loss="full-logits"),
        estimate("bart-base-8xv100", per_device_batch=64),
        estimate("bart-base-1gpu", device_gb=24.0),
    ]
    print(budget_table(budgets))
    write(budgets, args.output_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
