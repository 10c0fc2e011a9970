"""The training loop end to end on a tiny model: it learns, resumes exactly, and survives crashes."""

from __future__ import annotations

import json
import os
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


def test_checkpoint_loading_rejects_an_incomplete_directory(tmp_path):
    (tmp_path / "step-000001").mkdir()
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        ckpt.load_checkpoint(tmp_path / "step-000001", model=None, rank=0)
    assert ckpt.latest_complete(tmp_path) is None
