"""Multi-process training on CPU (gloo through ``torchrun``): the same recipe, the same global batch and
the same result whatever the number of processes; only rank 0 writes; resume works under 2 processes.

The 2-process runs are real: ``torchrun --standalone`` (a free rendezvous port, so parallel test
runs never collide) starts two workers of ``spellfix train``; accelerate sees the torchrun
environment and uses gloo on CPU (NCCL on GPUs — the same code path).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from spellfix.config import load_recipe
from spellfix.training import checkpoint as ckpt
from spellfix.training.loop import train

from conftest import TINY_MODEL, make_pairs, write_jsonl

pytestmark = pytest.mark.slow
STEPS = 6


def mp_recipe(tmp: Path, **train_overrides) -> dict:
    """d_model-32 model, global batch 16 in 4 micro-batches of 4: 1 process accumulates 4, 2 processes 2 each."""
    model = json.loads(json.dumps(TINY_MODEL))
    model["config"].update(d_model=32, encoder_ffn_dim=64, decoder_ffn_dim=64)
    pairs = write_jsonl(tmp / "train.jsonl", make_pairs(96, seed=1))
    recipe = {
        "name": "tiny-mp",
        "model": model,
        "data": {"train": [str(pairs)], "dev": None},
        "train": {
            "precision": "fp32", "global_batch_size": 16, "per_device_batch_size": 4, "lr": 3e-3,
            "warmup_steps": 1, "schedule": "constant",  # LR independent of max_steps: a stopped run can resume
            "max_steps": STEPS, "log_every": 1, "eval_every": 0, "save_every": 0, "seed": 0,
        },
        "telemetry": {"sample_interval_s": 5.0, "tensorboard": False},
    }
    recipe["train"].update(train_overrides)
    return recipe


def torchrun(recipe: dict, out: Path, nproc: int = 2, *extra: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Both ranks must exit 0 within ``timeout`` (a hang — one rank waiting in a collective — fails)."""
    recipe_file = out.parent / f"{out.name}.recipe.json"
    recipe_file.write_text(json.dumps(recipe))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "spellfix.cli", "train", "--recipe", str(recipe_file), "--output-dir", str(out), "--no-progress", *extra]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "final" / "model.safetensors"))


def logged_steps(run: Path) -> list[int]:
    rows = [json.loads(line) for line in (run / "logs" / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r["step"] for r in rows if "loss" in r]


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    tmp = tmp_path_factory.mktemp("mp")
    out = tmp / "two"
    return out, torchrun(mp_recipe(tmp), out)


def test_two_gloo_processes_end_with_the_same_weights_as_one_process_with_the_same_global_batch(two_process_run, tmp_path):
    two, proc = two_process_run
    assert "2 process(es)" in proc.stdout + proc.stderr
    torch.set_num_threads(1)
    one = train(load_recipe(mp_recipe(tmp_path)), tmp_path / "one", progress=False).output_dir
    a, b = weights(one), weights(two)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5, msg=name)


def test_only_rank_zero_writes_logs_and_checkpoints(two_process_run):
    two, proc = two_process_run
    assert logged_steps(two) == list(range(1, STEPS + 1))  # one row per step, not one per rank
    assert [p.name for p in ckpt.list_complete(two / "checkpoints")] == [f"step-{STEPS:06d}"]
    assert sorted(p.name for p in (two / "checkpoints" / f"step-{STEPS:06d}").glob("rng-rank*.pt")) == ["rng-rank0.pt", "rng-rank1.pt"]
    output = proc.stdout + proc.stderr
    assert output.count("spellfix: step=1 ") == 1
    assert output.count("saved checkpoint") == 1  # rank 0's, once
    state = json.loads((two / "checkpoints" / f"step-{STEPS:06d}" / ckpt.STATE_FILE).read_text())
    assert state["world_size"] == 2 and state["samples_seen"] == 16 * STEPS


def test_a_stopped_two_process_run_resumes_under_two_processes_to_the_same_weights(two_process_run, tmp_path):
    two, _ = two_process_run
    out = tmp_path / "resumed"
    torchrun(mp_recipe(tmp_path, max_steps=STEPS // 2), out)
    assert ckpt.latest_complete(out / "checkpoints").name == f"step-{STEPS // 2:06d}"
    proc = torchrun(mp_recipe(tmp_path), out, 2, "--resume", "auto")
    assert f"resumed from {out / 'checkpoints' / f'step-{STEPS // 2:06d}'}" in proc.stdout + proc.stderr
    assert logged_steps(out) == list(range(1, STEPS + 1))
    a, b = weights(two), weights(out)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)


def test_sigterm_to_torchrun_checkpoints_once_on_agreement_of_both_ranks_and_the_run_resumes(tmp_path):
    """A spot interruption: torchrun forwards SIGTERM to both workers, they agree on the same step,
    rank 0 writes one checkpoint, and a new 2-process launch finishes the run from it."""
    import signal
    import time

    recipe = mp_recipe(tmp_path, max_steps=400, log_every=1, save_every=1000)
    out = tmp_path / "spot"
    recipe_file = tmp_path / "spot.recipe.json"
    recipe_file.write_text(json.dumps(recipe))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "spellfix.cli",
         "train", "--recipe", str(recipe_file), "--output-dir", str(out), "--no-progress"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (out / "logs" / "metrics.jsonl").exists() and len(logged_steps(out)) >= 3:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=300)
    saved = ckpt.latest_complete(out / "checkpoints")
    assert saved is not None and 3 <= int(saved.name.split("-")[1]) < 400, output[-3000:]
    assert output.count("saved checkpoint") == 1 and "(SIGTERM)" in output
    assert output.count("stopped by SIGTERM") == 2  # both ranks stopped at the agreed step
    done = torchrun(mp_recipe(tmp_path, max_steps=int(saved.name.split("-")[1]) + 2, log_every=1), out, 2, "--resume", "auto")
    assert f"resumed from {saved}" in done.stdout + done.stderr


def summaries(proc: subprocess.CompletedProcess) -> list[dict]:
    """The JSON summary each rank's ``spellfix train`` printed. Two ranks share the pipe: a summary
    is one write, but its newline is another, so two summaries can share a line — decode each where
    it starts."""
    decoder, marker, out, start = json.JSONDecoder(), '{"output_dir"', [], 0
    while (start := proc.stdout.find(marker, start)) >= 0:
        summary, end = decoder.raw_decode(proc.stdout, start)
        out.append(summary)
        start = end
    return out


def test_early_stopping_on_two_processes_stops_both_ranks_at_the_same_step(tmp_path):
    """Only rank 0 evaluates; its 'no improvement' reaches rank 1 through the stop vote, so both
    stop at the eval step, save one checkpoint and exit 0 (this hung before: rank 1 trained on)."""
    dev = write_jsonl(tmp_path / "dev.jsonl", make_pairs(4, seed=2))
    recipe = mp_recipe(tmp_path, max_steps=400, eval_every=2, early_stopping_patience=1, lr=1e-9)
    recipe["data"]["dev"] = str(dev)
    recipe["eval"] = {"limit": 4, "max_new_tokens": 4}
    out = tmp_path / "early"
    proc = torchrun(recipe, out, 2, timeout=300)
    assert [(s["steps"], s["stop_reason"]) for s in summaries(proc)] == [(4, "early_stopping")] * 2, proc.stdout[-2000:]
    assert [p.name for p in ckpt.list_complete(out / "checkpoints")] == ["step-000004"]
    assert (out / "final" / "model.safetensors").exists()


def test_a_time_capped_two_process_run_stops_both_ranks_and_resumed_reaches_max_steps(two_process_run, tmp_path):
    """max_minutes is a per-invocation budget: both ranks stop at the first agreed decision step
    after it (log_every=3, host_sync=log_steps), and the resumed launch ends at max_steps with the
    weights of the run never capped."""
    two, _ = two_process_run
    recipe = mp_recipe(tmp_path, max_minutes=1e-6, log_every=3, host_sync="log_steps")
    out = tmp_path / "capped"
    first = torchrun(recipe, out, 2, timeout=300)
    assert [(s["steps"], s["stop_reason"]) for s in summaries(first)] == [(3, "max_minutes")] * 2, first.stdout[-2000:]
    second = torchrun(recipe, out, 2, "--resume", "auto", timeout=300)
    assert [(s["steps"], s["stop_reason"]) for s in summaries(second)] == [(STEPS, "max_steps")] * 2, second.stdout[-2000:]
    a, b = weights(two), weights(out)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)
