"""Copy-verify decoding vs the one-token-per-call greedy loop on every row of data/dev.jsonl:
the shipped model's raw decoder, torch and ONNX Runtime, batch 1 and batch 32 (mixed lengths).

    python benchmarks/copy_verify_exactness.py [--backends torch,onnxruntime] [--limit N]
Writes benchmarks/results/copy_verify_exactness.json: per backend and batch size, the rows whose
token ids differ (expected: none), the decoder calls per query and the wall time of both loops.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="torch,onnxruntime")
    parser.add_argument("--limit", type=int, default=None, help="first N dev rows only")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "copy_verify_exactness.json")
    args = parser.parse_args(argv)

    from spellfix.export import export
    from spellfix.fsutil import write_json_atomic
    from spellfix.inference import SpellCorrector

    rows = [json.loads(line) for line in (REPO / "data" / "dev.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    queries = [r["query"] for r in rows][: args.limit]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends.split(","):
            model: Path = REPO / "models" / "spell-small-cpu"
            if backend == "onnxruntime":
                model = Path(tmp) / "exp"
                if not model.exists():
                    export(REPO / "models" / "spell-small-cpu", model, formats=["onnx"])
            options = {"intra_op_num_threads": 2} if backend == "onnxruntime" else {}
            common = dict(backend=backend, backend_options=options, copy_margin=None, acceptance=None)
            fast, step_loop = SpellCorrector(model, **common), SpellCorrector(model, copy_verify=False, **common)
            for batch_size in (1, 32):
                fast.batch_size = step_loop.batch_size = batch_size
                fast_ids, calls, start = [], 0, time.perf_counter()
                for i in range(0, len(queries), batch_size):
                    fast_ids += fast.generate_ids(queries[i : i + batch_size])
                    calls += fast.last_decoder_calls
                fast_s, start = time.perf_counter() - start, time.perf_counter()
                loop_ids = [ids for i in range(0, len(queries), batch_size) for ids in step_loop.generate_ids(queries[i : i + batch_size])]
                loop_s = time.perf_counter() - start
                differing = [queries[i] for i, (a, b) in enumerate(zip(fast_ids, loop_ids)) if a != b]
                entry = {
                    "backend": backend,
                    "batch_size": batch_size,
                    "queries": len(queries),
                    "differing_rows": len(differing),
                    "differing_examples": differing[:10],
                    "decoder_calls_per_query": round(calls / len(queries), 3),
                    "copy_verify_s": round(fast_s, 1),
                    "step_loop_s": round(loop_s, 1),
                }
                print(json.dumps(entry), flush=True)
                results.append(entry)
    write_json_atomic(
        args.output,
        {"entries": results, "command": "python benchmarks/copy_verify_exactness.py " + " ".join(sys.argv[1:] if argv is None else argv),
         "loadavg_after": os.getloadavg(), "date": time.strftime("%Y-%m-%d")},
    )  # fmt: skip
    return 0 if all(e["differing_rows"] == 0 for e in results) else 1


if __name__ == "__main__":
    sys.exit(main())
