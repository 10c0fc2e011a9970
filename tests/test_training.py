"""The training loop end to end on a tiny model: it learns, resumes exactly, and survives crashes."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from spellfix.config import load_recipe
from spellfix.training import checkpoint as ckpt
from spellfix.training.loop import NonFiniteLossError, train

from conftest import make_pairs, write_jsonl


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(model_dir / "model.safetensors"))


@pytest.mark.slow
def test_tiny_model_overfits_32_pairs_to_90_percent_exact_match(tiny_recipe_dict, tmp_path):
    pairs = write_jsonl(tmp_path / "p32.jsonl", make_pairs(32, seed=5))
    recipe = load_recipe(
        tiny_recipe_dict,
        overrides={
            "data.train": [str(pairs)], "data.dev": str(pairs), "train.global_batch_size": 32,
            "train.max_steps": 150, "train.lr": 3e-3, "train.warmup_steps": 10, "train.save_every": 0,
            "train.label_smoothing": 0.0, "train.log_every": 50, "eval.limit": 32,
        },
    )
    result = train(recipe, tmp_path / "run", progress=False)
    assert result.metrics["exact_match"] >= 0.9, result.metrics
    assert (result.final_dir / "model.safetensors").exists()
    assert json.loads((result.final_dir / "metrics.json").read_text())["exact_match"] >= 0.9


def test_run_writes_the_documented_layout(tiny_recipe_dict, tmp_path):
    result = train(load_recipe(tiny_recipe_dict), tmp_path / "run", progress=False)
    out = tmp_path / "run"
    assert (out / "recipe.yaml").exists()
    assert [p.name for p in ckpt.list_complete(out / "checkpoints")] == ["step-000004", "step-000008", "step-000012"]
    for name in ("config.json", "model.safetensors", "tokenizer.json", "spellfix.json", "recipe.yaml", "metrics.json"):
        assert (out / "final" / name).exists(), name
    rows = [json.loads(line) for line in (out / "logs" / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train_rows] == [2, 4, 6, 8, 10, 12]
    assert all({"time", "lr", "samples_per_s", "tokens_per_s", "step_time_s", "data_wait_s"} <= r.keys() for r in train_rows)
    assert any("eval/exact_match" in r and "eval/false_positive_rate" in r for r in rows)
    assert result.steps == 12


def test_resume_after_sigterm_ends_with_the_same_weights_as_an_uninterrupted_run(tiny_recipe_dict, tmp_path):
    tiny_recipe_dict["train"].update(max_steps=40, save_every=1000, log_every=1)
    straight = train(load_recipe(tiny_recipe_dict), tmp_path / "straight", progress=False)

    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(json.dumps(tiny_recipe_dict))
    out = tmp_path / "interrupted"
    proc = subprocess.Popen(
        [sys.executable, "-m", "spellfix.cli", "train", "--recipe", str(recipe_file), "--output-dir", str(out), "--no-progress",
         "--set", "train.max_steps=40"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        # Same intra-op thread count as this process: a different count changes float reduction order.
        env={**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())},
    )
    metrics = out / "logs" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and any(json.loads(l).get("step", 0) >= 3 for l in metrics.read_text().splitlines() if l.strip()):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, output
    saved = ckpt.latest_complete(out / "checkpoints")
    assert saved is not None and 3 <= int(saved.name.split("-")[1]) < 40, output

    resumed = train(load_recipe(tiny_recipe_dict), out, resume="auto", progress=False)
    assert resumed.steps == 40
    a, b = weights(straight.final_dir), weights(resumed.final_dir)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_crash_mid_save_leaves_the_previous_checkpoint_usable(tiny_recipe_dict, tmp_path, monkeypatch):
    real_save = ckpt.save_model
    calls = {"n": 0}

    def crash_on_second_save(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full (simulated)")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(ckpt, "save_model", crash_on_second_save)
    with pytest.raises(OSError, match="disk full"):
        train(load_recipe(tiny_recipe_dict), tmp_path / "run", progress=False)
    monkeypatch.setattr(ckpt, "save_model", real_save)
    done = ckpt.list_complete(tmp_path / "run" / "checkpoints")
    assert [p.name for p in done] == ["step-000004"]
    result = train(load_recipe(tiny_recipe_dict), tmp_path / "run", resume="auto", progress=False)
    assert result.steps == 12 and result.final_dir is not None


def test_non_finite_loss_stops_with_a_clear_message(tiny_recipe_dict, tmp_path):
    recipe = load_recipe(tiny_recipe_dict, overrides={"train.lr": 1e12, "train.grad_clip": None, "train.warmup_steps": 1,
                                                       "train.max_nonfinite_steps": 2, "train.max_steps": 60})
    with pytest.raises(NonFiniteLossError, match="not finite for 2 consecutive steps.*lower train.lr"):
        train(recipe, tmp_path / "run", progress=False)
    # the stop is saved like any other: the last good weights, resumable with a lower LR
    saved = ckpt.latest_complete(tmp_path / "run" / "checkpoints")
    assert saved is not None and json.loads((saved / ckpt.STATE_FILE).read_text())["stop_reason"] == "non_finite"


def test_checkpoint_loading_rejects_an_incomplete_directory(tmp_path):
    (tmp_path / "step-000001").mkdir()
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        ckpt.load_checkpoint(tmp_path / "step-000001", model=None, rank=0)
    assert ckpt.latest_complete(tmp_path) is None


# ------------------------------------------------------------------------ time budget and resume


def test_a_time_capped_run_resumed_until_done_ends_bit_for_bit_with_the_weights_of_an_uncapped_run(tiny_recipe_dict, tmp_path):
    """max_minutes is a budget per invocation: each call stops at its first decision step after the
    budget (a log step here: host_sync=log_steps, log_every=3), saves, and the next call continues
    the same schedule; the schedule is in steps, so the end is the uncapped run's end."""
    tiny_recipe_dict["train"].update(max_steps=9, log_every=3, save_every=0, host_sync="log_steps")
    straight = train(load_recipe(tiny_recipe_dict), tmp_path / "straight", progress=False)
    assert straight.stop_reason == "max_steps" and straight.steps == 9

    capped = load_recipe(tiny_recipe_dict, overrides={"train.max_minutes": 1e-6})  # spent before the first step ends
    out = tmp_path / "capped"
    runs = [train(capped, out, resume="auto", progress=False) for _ in range(3)]
    assert [(r.steps, r.stop_reason, r.complete) for r in runs] == [
        (3, "max_minutes", False), (6, "max_minutes", False), (9, "max_steps", True)]
    a, b = weights(straight.final_dir), weights(runs[-1].final_dir)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_an_early_stopped_run_is_finished_and_resuming_it_trains_no_further(tiny_recipe_dict, tmp_path):
    # lr 1e-9: the dev score cannot improve after the first evaluation -> stop at the second
    tiny_recipe_dict["train"].update(max_steps=200, eval_every=2, early_stopping_patience=1, lr=1e-9, save_every=0)
    tiny_recipe_dict["eval"].update(limit=4, max_new_tokens=4)
    recipe = load_recipe(tiny_recipe_dict)
    first = train(recipe, tmp_path / "run", progress=False)
    assert (first.steps, first.stop_reason) == (4, "early_stopping")
    assert json.loads((ckpt.latest_complete(tmp_path / "run" / "checkpoints") / ckpt.STATE_FILE).read_text())["stop_reason"] == "early_stopping"
    again = train(recipe, tmp_path / "run", resume="auto", progress=False)
    assert (again.steps, again.stop_reason) == (4, "early_stopping")


# ---------------------------------------------------------------------------- fp16 on CPU, for real


def _inject_inf_at_call(monkeypatch, k: int) -> None:
    """Make the k-th forward of the loss module (1-based) return +inf: an fp16 overflow."""
    from spellfix.training import loss as loss_mod

    real, calls = loss_mod.Seq2SeqLoss.forward, {"n": 0}

    def forward(self, *args, **kwargs):
        calls["n"] += 1
        out = real(self, *args, **kwargs)
        return out * float("inf") if calls["n"] == k else out

    monkeypatch.setattr(loss_mod.Seq2SeqLoss, "forward", forward)


@pytest.mark.parametrize("host_sync", ["every_step", "log_steps"])
def test_fp16_autocast_with_the_real_grad_scaler_skips_an_injected_inf_lowers_the_scale_and_goes_on(
        tiny_recipe_dict, tmp_path, monkeypatch, host_sync):
    # grad_clip set: the gradients are unscaled before clipping, and the skipped step still closes
    # the scaler's step (a second unscale_ in one step would raise)
    tiny_recipe_dict["train"].update(precision="fp16", max_steps=7, save_every=1, keep_last=10, log_every=1,
                                     grad_clip=1.0, host_sync=host_sync)
    _inject_inf_at_call(monkeypatch, 4)  # one micro-batch per step: step 4's forward
    result = train(load_recipe(tiny_recipe_dict), tmp_path / "run", progress=False)
    assert result.steps == 7
    cks = tmp_path / "run" / "checkpoints"

    def scale(step: int) -> float:
        return torch.load(cks / f"step-{step:06d}" / "scaler.pt", weights_only=True)["scale"]

    def ck_weights(step: int) -> dict[str, torch.Tensor]:
        return load_file(str(cks / f"step-{step:06d}" / "model.safetensors"))

    assert scale(4) == scale(3) / 2  # the scaler backed off at the injected step
    w3, w4, w5 = ck_weights(3), ck_weights(4), ck_weights(5)
    assert all(torch.equal(w3[n], w4[n]) for n in w3)  # step 4 was skipped
    assert any(not torch.equal(w4[n], w5[n]) for n in w4)  # and training went on
    assert all(torch.isfinite(t).all() for t in w5.values())
    rows = [json.loads(line) for line in (tmp_path / "run" / "logs" / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train_rows] == list(range(1, 8))
    assert all(math.isfinite(r["loss"]) for r in train_rows if r["step"] != 4)
    assert {r["step"]: r["loss_scale"] for r in train_rows}[4] == scale(4)


def test_a_resumed_fp16_run_restores_the_grad_scaler_and_ends_bit_for_bit_as_the_uninterrupted_one(
        tiny_recipe_dict, tmp_path, monkeypatch):
    tiny_recipe_dict["train"].update(precision="fp16", max_steps=7, save_every=1, keep_last=10, log_every=1, grad_clip=1.0)
    with monkeypatch.context() as m:
        _inject_inf_at_call(m, 2)
        straight = train(load_recipe(tiny_recipe_dict), tmp_path / "straight", progress=False)
    src = tmp_path / "straight"
    saved_scale = torch.load(src / "checkpoints" / "step-000004" / "scaler.pt", weights_only=True)["scale"]
    assert saved_scale < 65536.0  # below the initial scale: a reset scaler would be seen
    out = tmp_path / "resumed"
    shutil.copytree(src / "tokenizer", out / "tokenizer")
    shutil.copytree(src / "checkpoints" / "step-000004", out / "checkpoints" / "step-000004")
    resumed = train(load_recipe(tiny_recipe_dict), out, resume="auto", progress=False)
    assert resumed.steps == 7

    def logged_scales(run: Path) -> dict[int, float]:
        rows = [json.loads(line) for line in (run / "logs" / "metrics.jsonl").read_text().splitlines()]
        return {r["step"]: r["loss_scale"] for r in rows if "loss_scale" in r}

    assert logged_scales(out) == {s: v for s, v in logged_scales(src).items() if s > 4}
    a, b = weights(straight.final_dir), weights(resumed.final_dir)
    for name in a:
        assert torch.equal(a[name], b[name]), name


# --------------------------------------------------------------------------------- durability


def test_sigint_is_handled_like_sigterm_checkpoint_then_exit_130(tiny_recipe_dict, tmp_path):
    tiny_recipe_dict["train"].update(max_steps=400, save_every=1000, log_every=1)
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(json.dumps(tiny_recipe_dict))
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "spellfix.cli", "train", "--recipe", str(recipe_file), "--output-dir", str(out), "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    metrics = out / "logs" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and any(json.loads(l).get("step", 0) >= 2 for l in metrics.read_text().splitlines() if l.strip()):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output
    assert "stopped by SIGINT" in output and "(SIGINT)" in output
    saved = ckpt.latest_complete(out / "checkpoints")
    assert saved is not None and 2 <= int(saved.name.split("-")[1]) < 400, output


def test_a_crash_between_the_two_renames_of_a_same_step_resave_still_leaves_that_checkpoint(tmp_path):
    """Re-saving step N moves the old step-N aside before renaming the new one in; a crash in
    between leaves `.replaced-step-N`, which still counts as step N (and only then)."""
    aside = tmp_path / ".replaced-step-000007"
    aside.mkdir()
    (aside / ckpt.STATE_FILE).write_text("{}")
    (tmp_path / "step-000005").mkdir()
    (tmp_path / "step-000005" / ckpt.STATE_FILE).write_text("{}")
    assert ckpt.latest_complete(tmp_path) == aside
    (tmp_path / "step-000007").mkdir()
    (tmp_path / "step-000007" / ckpt.STATE_FILE).write_text("{}")
    assert ckpt.list_complete(tmp_path) == [tmp_path / "step-000005", tmp_path / "step-000007"]


@pytest.mark.slow
def test_kill_9_at_random_moments_while_saving_always_leaves_a_complete_checkpoint_that_resumes(tmp_path):
    """A few trials of benchmarks/checkpoint_crash_trials.py (the script runs >= 20)."""
    import importlib.util

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "checkpoint_crash_trials.py"
    spec = importlib.util.spec_from_file_location("checkpoint_crash_trials", script)
    trials = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(trials)
    report = trials.run_trials(3, tmp_path, seed=1)
    assert report["trials"] == 3 and report["failures"] == [], report
    assert report["final_steps"] == report["max_steps"]
