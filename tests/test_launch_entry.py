"""launch/entry.py against a simulated /opt/ml tree: trains, exports, and resumes after SIGTERM.

One job scenario runs once per module (the ``interrupted_then_resumed_job`` fixture): run 1 is the real
script in a subprocess, stopped with SIGTERM mid-training as a spot interruption would; run 2 starts
"in a fresh container" (only the checkpoint dir kept) and finishes. The tests read its results.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from spellfix.launch.entry import EXIT_CONFIG_ERROR, main
from spellfix.telemetry import METRIC_DEFINITIONS, format_log_line, parse_log_line

REPO = Path(__file__).resolve().parent.parent
ENTRY = REPO / "launch" / "entry.py"
STEP_LINE = re.compile(r"^spellfix: step=(\d+) .*\bloss=")


def tiny_job_recipe(tmp: Path) -> dict:
    """The brief's tiny recipe: d_model 32, 1+1 layers, 2 heads, ffn 64, vocab 300, small JSONL data."""
    from conftest import TINY_MODEL, make_pairs, write_jsonl

    model = json.loads(json.dumps(TINY_MODEL))
    model["config"].update(
        d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=64, decoder_ffn_dim=64,
    )
    return {
        "name": "tiny",
        "model": model,
        "data": {
            "train": [str(write_jsonl(tmp / "train.jsonl", make_pairs(96, seed=1)))],
            "dev": str(write_jsonl(tmp / "dev.jsonl", make_pairs(16, seed=2))),
        },
        "train": {"precision": "fp32", "global_batch_size": 16, "lr": 3e-3, "warmup_steps": 5, "max_steps": 60,
                  "log_every": 1, "eval_every": 0, "save_every": 5, "keep_last": 2, "seed": 0},
        "eval": {"limit": 4, "max_new_tokens": 8},
        "telemetry": {"sample_interval_s": 0.05, "tensorboard": True},
    }


def opt_ml(tmp: Path, recipe: dict) -> tuple[Path, dict[str, str]]:
    """A fake /opt/ml: channels holding the recipe's data, empty model/output dirs, SM_* environment."""
    root = tmp / "opt_ml"
    for channel, source in (("train", recipe["data"]["train"][0]), ("validation", recipe["data"]["dev"])):
        (root / "input" / "data" / channel).mkdir(parents=True)
        shutil.copy(source, root / "input" / "data" / channel)
    for d in ("model", "output/data"):
        (root / d).mkdir(parents=True)
    recipe_file = tmp / "job_recipe.yaml"  # data paths deliberately wrong: the channels must win
    recipe_file.write_text(yaml.safe_dump({**recipe, "data": {"train": ["not-here.jsonl"]}}), encoding="utf-8")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SM_", "RANK", "LOCAL_RANK", "WORLD_SIZE"))},
        "SM_CHANNEL_TRAIN": str(root / "input" / "data" / "train"),
        "SM_CHANNEL_VALIDATION": str(root / "input" / "data" / "validation"),
        "SM_MODEL_DIR": str(root / "model"),
        "SM_OUTPUT_DATA_DIR": str(root / "output" / "data"),
        "SM_NUM_GPUS": "0",
        "SM_HOSTS": '["algo-1"]',
        "SM_CURRENT_HOST": "algo-1",
        "SM_HPS": json.dumps({"recipe": str(recipe_file), "resume": "auto", "overrides": {"train.seed": "3"}}),
        "SPELLFIX_CHECKPOINT_DIR": str(root / "checkpoints"),
        "SPELLFIX_TENSORBOARD_DIR": str(root / "output" / "tensorboard"),
        "PYTHONUNBUFFERED": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }
    return root, env


def step_lines(text: str) -> list[int]:
    return [int(m.group(1)) for line in text.splitlines() if (m := STEP_LINE.match(line))]


@dataclass
class Job:
    root: Path
    total_steps: int
    run1_rc: int
    run1_stderr: str
    run1_steps: list[int]
    checkpoint_after_sigterm: Path
    model_dir_after_run1: list[str]
    run2_rc: int
    run2_stdout: str
    run2_log: str


@pytest.fixture(scope="module")
def interrupted_then_resumed_job(tmp_path_factory) -> Job:
    import torch

    tmp = tmp_path_factory.mktemp("entry")
    recipe = tiny_job_recipe(tmp)
    root, env = opt_ml(tmp, recipe)
    args = ["--recipe", "ignored-because-SM_HPS-wins.yaml", "--resume", "auto"]

    # Run 1: the real script; SIGTERM once training is under way (as on a spot interruption).
    with open(tmp / "run1.err", "w") as err:
        proc = subprocess.Popen([sys.executable, str(ENTRY), *args], env=env, cwd=tmp, stdout=subprocess.PIPE, stderr=err, text=True)
        seen: list[int] = []
        for line in proc.stdout:
            if m := STEP_LINE.match(line):
                seen.append(int(m.group(1)))
                if len(seen) == 7:
                    proc.send_signal(signal.SIGTERM)
        rc1 = proc.wait(timeout=300)
    checkpoints = sorted((root / "checkpoints").glob("step-*"))
    model_after_run1 = sorted(p.name for p in (root / "model").iterdir())

    # Run 2 in a "fresh container": only /opt/ml/checkpoints comes back (SageMaker restores it from
    # S3). It runs in this process (same main(), same environment) to spare an interpreter start-up.
    shutil.rmtree(root / "output")
    (root / "output" / "data").mkdir(parents=True)
    logs = io.StringIO()
    handler = logging.StreamHandler(logs)
    spellfix_log = logging.getLogger("spellfix")
    spellfix_log.addHandler(handler)
    level, threads = spellfix_log.level, torch.get_num_threads()
    spellfix_log.setLevel(logging.INFO)
    torch.set_num_threads(1)  # as OMP_NUM_THREADS=1 in run 1: no oversubscription on a shared machine
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            rc2 = main(args, env)
    finally:
        torch.set_num_threads(threads)
        spellfix_log.removeHandler(handler)
        spellfix_log.setLevel(level)
    return Job(
        root=root, total_steps=recipe["train"]["max_steps"], run1_rc=rc1, run1_stderr=(tmp / "run1.err").read_text(),
        run1_steps=seen, checkpoint_after_sigterm=checkpoints[-1] if checkpoints else root / "none",
        model_dir_after_run1=model_after_run1, run2_rc=rc2, run2_stdout=out.getvalue(), run2_log=logs.getvalue(),
    )


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_143_without_exporting(interrupted_then_resumed_job):
    job = interrupted_then_resumed_job
    assert job.run1_rc == 143, job.run1_stderr[-2000:]
    assert "stopped by SIGTERM" in job.run1_stderr
    stopped_at = int(job.checkpoint_after_sigterm.name.split("-")[1])
    assert 7 <= stopped_at < job.total_steps and stopped_at == job.run1_steps[-1]
    assert job.model_dir_after_run1 == [], "nothing is exported from an interrupted run"


@pytest.mark.slow
def test_restarted_job_resumes_from_checkpoint_dir_with_the_same_tokenizer(interrupted_then_resumed_job):
    job = interrupted_then_resumed_job
    assert job.run2_rc == 0, job.run2_log[-2000:]
    stopped_at = int(job.checkpoint_after_sigterm.name.split("-")[1])
    steps = step_lines(job.run2_stdout)
    assert steps[0] == stopped_at + 1 and steps[-1] == job.total_steps, steps[:3]
    assert f"resumed from {job.checkpoint_after_sigterm} at step {stopped_at}" in job.run2_log
    # The tokenizer trained by run 1 was kept with the checkpoints and reused, not retrained.
    kept = json.loads((job.root / "checkpoints" / "tokenizer" / "tokenizer.json").read_text())
    exported = json.loads((job.root / "model" / "hf" / "tokenizer.json").read_text())
    assert kept["model"]["vocab"] == exported["model"]["vocab"]


@pytest.mark.slow
def test_finished_job_exports_model_to_sm_model_dir_and_logs_to_output_data(interrupted_then_resumed_job):
    job = interrupted_then_resumed_job
    hf = job.root / "model" / "hf"
    assert (hf / "model.safetensors").is_file() and (hf / "config.json").is_file() and (hf / "tokenizer.json").is_file()
    rows = [json.loads(line) for line in (job.root / "output" / "data" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == job.total_steps and "eval/exact_match" in rows[-1]
    assert list((job.root / "output" / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.slow
def test_sagemaker_metric_regexes_read_the_values_the_trainer_printed(interrupted_then_resumed_job):
    lines = [line for line in interrupted_then_resumed_job.run2_stdout.splitlines() if line.startswith("spellfix: step=")]
    matched_on_real_lines = set()
    for definition in METRIC_DEFINITIONS:
        regex = re.compile(definition["Regex"])
        key = definition["Regex"].split(".* ")[1].split("=")[0].replace("\\", "")
        for line in lines:
            parsed = parse_log_line(line)
            m = regex.search(line)
            if key in parsed:
                assert m, (definition, line)
                assert math.isclose(float(m.group(1)), parsed[key], rel_tol=1e-9), (definition, line)
                matched_on_real_lines.add(key)
            else:
                assert m is None, (definition, line)  # e.g. eval:loss must not read a training loss
    assert {"loss", "lr", "samples_per_s", "tokens_per_s", "eval/exact_match", "eval/false_positive_rate"} <= matched_on_real_lines
    # Keys a CPU run cannot print (GPU telemetry) are checked on lines from the same formatter.
    for definition in METRIC_DEFINITIONS:
        key = definition["Regex"].split(".* ")[1].split("=")[0].replace("\\", "")
        if key not in matched_on_real_lines:
            line = format_log_line(12, {"loss": 1.25, key: 87.5, "samples_per_s": 3.0})
            assert float(re.search(definition["Regex"], line).group(1)) == 87.5, definition


def test_entry_fails_in_one_sentence_when_sagemaker_promises_gpus_torch_cannot_see(tmp_path, capsys):
    root, env = opt_ml(tmp_path, tiny_job_recipe(tmp_path))
    env["SM_NUM_GPUS"] = "8"
    assert main([], env) == EXIT_CONFIG_ERROR
    err = capsys.readouterr().err
    assert "SM_NUM_GPUS=8 but torch" in err and "sees no CUDA device" in err
    assert "SM_NUM_GPUS=8" in (root / "output" / "failure").read_text()
    assert not list((root / "model").iterdir())


def test_entry_rejects_an_unknown_recipe_field_in_overrides(tmp_path, capsys):
    root, env = opt_ml(tmp_path, tiny_job_recipe(tmp_path))
    hps = json.loads(env["SM_HPS"])
    hps["overrides"] = {"train.learning_rate": "1e-4"}
    env["SM_HPS"] = json.dumps(hps)
    assert main([], env) == EXIT_CONFIG_ERROR
    assert "unknown key 'train.learning_rate'" in capsys.readouterr().err


def test_entry_refuses_a_v100_when_the_image_torch_has_no_sm70_kernels(tmp_path, monkeypatch):
    """CPU twin of the GPU start-up check: torch.cuda reports what a CUDA 13 build on ml.p3 would."""
    import torch

    from spellfix.launch.entry import check_gpus
    from spellfix.launch.sm_env import read_environment
    from spellfix.training.hardware import HardwareError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"])
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=0: (7, 0))
    env = read_environment({"SM_NUM_GPUS": "8"}, [])
    with pytest.raises(HardwareError, match=r"no kernels for the GPU's architecture sm_70.*pytorch-training:2\.8\.0"):
        check_gpus(env)
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"])
    check_gpus(env)  # the 2.8.0 image's CUDA 12.9 build: fine
