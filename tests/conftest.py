"""Shared fixtures: tiny recipes and data that make a full training run take seconds on CPU."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

TINY_MODEL = {
    "architecture": "mbart",
    "config": {
        "d_model": 64,
        "encoder_layers": 2,
        "decoder_layers": 2,
        "encoder_attention_heads": 4,
        "decoder_attention_heads": 4,
        "encoder_ffn_dim": 128,
        "decoder_ffn_dim": 128,
        "max_position_embeddings": 64,
        "dropout": 0.0,
    },
    "tokenizer": {"vocab_size": 300, "min_frequency": 1},
}

WORDS = "hello world music rock love song night day blue red green house party dance baby girl heart fire".split()


def make_pairs(n: int, seed: int = 0) -> list[dict[str, str]]:
    """Deterministic (misspelled, correct) pairs: one dropped letter, plus identity rows."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        correct = " ".join(rng.sample(WORDS, rng.randint(1, 2)))
        if rng.random() < 0.5:
            i = rng.randrange(1, len(correct) - 1)
            query = correct[:i] + correct[i + 1 :]
        else:
            query = correct
        rows.append({"query": query, "correction": correct})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def tiny_recipe_dict(tmp_path: Path) -> dict:
    """A complete recipe dict: 96 training pairs, 16 dev rows, 2+2-layer d_model-64 model, fp32."""
    train = write_jsonl(tmp_path / "train.jsonl", make_pairs(96, seed=1))
    dev = write_jsonl(tmp_path / "dev.jsonl", make_pairs(16, seed=2))
    return {
        "name": "tiny",
        "model": json.loads(json.dumps(TINY_MODEL)),
        "data": {"train": [str(train)], "dev": str(dev)},
        "train": {
            "precision": "fp32",
            "global_batch_size": 16,
            "lr": 3e-3,
            "warmup_steps": 5,
            "max_steps": 12,
            "log_every": 2,
            "eval_every": 0,
            "save_every": 4,
            "keep_last": 3,
            "seed": 0,
        },
        "eval": {"limit": 16, "max_new_tokens": 16},
        "telemetry": {"sample_interval_s": 0.2, "tensorboard": False},
    }


@pytest.fixture(scope="session")
def shipped_export(tmp_path_factory) -> Path:
    """The shipped, calibrated spell-small-cpu exported to ONNX (fp32), once per session: the
    artifact users serve (dictionary candidates, acceptance model, candidate answers)."""
    from spellfix.export import export

    out = tmp_path_factory.mktemp("shipped") / "exp"
    export(Path(__file__).resolve().parents[1] / "models" / "spell-small-cpu", out, formats=["onnx"])
    return out
