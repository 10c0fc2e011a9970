"""Crash trials: ``kill -9`` a training run at random moments while it writes checkpoints, and check
that every time a complete checkpoint is left that loads and resumes.

    python benchmarks/checkpoint_crash_trials.py                 # 20 trials (~3-5 min on 2 cores)
    python benchmarks/checkpoint_crash_trials.py --trials 50 --seed 3

A small model (a few MB of weights + optimizer state) saves a checkpoint after *every* step, so
saving is a large share of the run's time and a random kill often lands inside a save (the report
counts how many left a half-written ``.tmp-step-*`` directory behind). Each trial starts
``spellfix train --resume auto`` in a fresh process on the same output directory — i.e. it resumes
from whatever the previous kill left —, waits until that process has written one new checkpoint,
sleeps a random 0-1.5 s and sends SIGKILL. After each kill, the newest complete checkpoint is
loaded file by file (safetensors weights, every ``.pt`` with ``weights_only=True``, the state JSON,
whose step must match the directory name). A trial fails if there is no complete checkpoint, one
does not load, or a process fails to resume before it is killed. Finally one more process resumes
and trains to the end (exit 0). Writes ``benchmarks/results/checkpoint_crash_trials.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "checkpoint_crash_trials.json"
WORDS = "hello world music rock love song night day blue red green house party dance baby girl heart fire".split()


def _recipe(work: Path, max_steps: int) -> dict[str, Any]:
    rng = random.Random(0)
    rows = []
    for _ in range(256):
        correct = " ".join(rng.sample(WORDS, rng.randint(1, 3)))
        i = rng.randrange(1, len(correct) - 1)
        rows.append({"query": correct[:i] + correct[i + 1 :] if rng.random() < 0.5 else correct, "correction": correct})
    pairs = work / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return {
        "name": "crash-trials",
        "model": {
            "architecture": "mbart",
            "config": {"d_model": 128, "encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 4,
                       "decoder_attention_heads": 4, "encoder_ffn_dim": 512, "decoder_ffn_dim": 512,
                       "max_position_embeddings": 64, "dropout": 0.0},
            "tokenizer": {"vocab_size": 300, "min_frequency": 1},
        },
        "data": {"train": [str(pairs)], "dev": None},
        "train": {"precision": "fp32", "global_batch_size": 16, "lr": 1e-3, "warmup_steps": 1, "schedule": "constant",
                  "max_steps": max_steps, "log_every": 1, "eval_every": 0, "save_every": 1, "keep_last": 2, "seed": 0},
        "telemetry": {"sample_interval_s": 5.0, "tensorboard": False},
    }


def verify_latest(checkpoints: Path) -> tuple[int | None, str | None]:
    """(step, None) if the newest complete checkpoint loads file by file, else (step or None, why)."""
    import torch
    from safetensors.torch import load_file

    from spellfix.training import checkpoint as ckpt

    latest = ckpt.latest_complete(checkpoints)
    if latest is None:
        return None, "no complete checkpoint"
    try:
        state = json.loads((latest / ckpt.STATE_FILE).read_text(encoding="utf-8"))
        step = int(latest.name.rsplit("-", 1)[1])
        if state["step"] != step:
            return step, f"{latest.name}: state says step {state['step']}"
        load_file(str(latest / "model.safetensors"))
        for f in ("optimizer.pt", "scheduler.pt", "rng-rank0.pt"):
            torch.load(latest / f, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to load is what the trial looks for
        return None, f"{latest.name}: {type(exc).__name__}: {exc}"
    return step, None


def _train_cmd(recipe_file: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "spellfix.cli", "train", "--recipe", str(recipe_file), "--output-dir", str(out),
            "--resume", "auto", "--no-progress", *extra]


def run_trials(trials: int, work: Path, *, seed: int = 0, max_steps: int = 100_000, timeout_s: float = 180) -> dict[str, Any]:
    """Run ``trials`` kill -9 trials in ``work``; return the report (``failures`` empty when all passed)."""
    work.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    recipe_file = work / "recipe.json"
    recipe_file.write_text(json.dumps(_recipe(work, max_steps)), encoding="utf-8")
    out, checkpoints = work / "run", work / "run" / "checkpoints"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    failures: list[str] = []
    mid_save = 0
    steps_after: list[int | None] = []
    for trial in range(trials):
        before, _ = verify_latest(checkpoints)
        log_file = work / f"trial-{trial:03d}.log"
        with open(log_file, "w") as log:
            proc = subprocess.Popen(_train_cmd(recipe_file, out), env=env, stdout=log, stderr=subprocess.STDOUT)
            deadline = time.time() + timeout_s
            while time.time() < deadline and proc.poll() is None:
                now, _ = verify_latest(checkpoints)
                if now is not None and (before is None or now > before):
                    break  # this process resumed and wrote a checkpoint of its own
                time.sleep(0.05)
            if proc.poll() is not None:
                failures.append(f"trial {trial}: the process exited with {proc.returncode} before the kill (see {log_file})")
                continue
            time.sleep(rng.uniform(0.0, 1.5))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        if any(p.name.startswith(".tmp-step-") for p in checkpoints.iterdir()):
            mid_save += 1
        step, why = verify_latest(checkpoints)
        steps_after.append(step)
        if why:
            failures.append(f"trial {trial}: {why}")
    last, why = verify_latest(checkpoints)
    final_steps = None
    if last is not None and not why:
        done = subprocess.run(_train_cmd(recipe_file, out, "--set", f"train.max_steps={last + 2}"), env=env,
                              capture_output=True, text=True, timeout=timeout_s)
        if done.returncode != 0 or f"resumed from {checkpoints / f'step-{last:06d}'}" not in done.stdout + done.stderr:
            failures.append(f"final resume from step {last} failed (exit {done.returncode}): {(done.stdout + done.stderr)[-500:]}")
        else:
            final_steps = json.loads(done.stdout.strip().splitlines()[-1])["steps"]
    return {"trials": trials, "killed_mid_save": mid_save, "steps_after_each_kill": steps_after, "failures": failures,
            "final_steps": final_steps, "max_steps": None if last is None else last + 2, "seed": seed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", type=Path, default=None, help="default: a fresh temp dir")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    import tempfile

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="spellfix-crash-"))
    begin = time.time()
    report = run_trials(args.trials, work, seed=args.seed)
    report["wall_s"] = round(time.time() - begin, 1)
    report["work_dir"] = str(work)
    from spellfix.config import write_text_atomic

    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.output, json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    return 0 if not report["failures"] and report["final_steps"] == report["max_steps"] else 1


if __name__ == "__main__":
    sys.exit(main())
