"""Helpers (no tests) shared by test_inference_*.py, test_export_*.py and test_copy_margin.py: a tiny
trained model, and the module fixtures that provide it (import them into a test module to use them).

Output-equality tests need a model whose greedy outputs are not trivial (different lengths,
eos at different steps): a 1+1-layer d_model-32 MBart trained a few dozen steps on dev pairs does
that in ~2 s on one thread. Torch runs on one thread in these tests: on a shared 2-core machine,
two OpenMP threads on tiny matmuls slow down by orders of magnitude (STACK.md).
"""

from __future__ import annotations

import json
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEV = REPO / "data" / "dev.jsonl"


def dev_pairs(n: int, offset: int = 0) -> list[tuple[str, str]]:
    rows = [json.loads(line) for line in DEV.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [(r["query"], r["correction"]) for r in rows[offset : offset + n]]


def train_tiny_model(out_dir: Path, *, architecture: str = "mbart", steps: int = 60, max_source_length: int = 32, seed: int = 0) -> Path:
    """Train a tiny seq2seq corrector on 48 dev pairs and save it as a spellfix model dir."""
    import torch

    from spellfix.modeling import build_model, encode_sources, encode_targets, input_settings, save_model_dir, train_byte_bpe_tokenizer

    torch.manual_seed(seed)
    pairs = dev_pairs(48)
    tokenizer = train_byte_bpe_tokenizer([t for p in pairs for t in p], vocab_size=400, min_frequency=1)
    cfg = types.SimpleNamespace(
        config={
            "d_model": 32,
            "encoder_layers": 1,
            "decoder_layers": 1,
            "encoder_attention_heads": 4,
            "decoder_attention_heads": 4,
            "encoder_ffn_dim": 64,
            "decoder_ffn_dim": 64,
            "max_position_embeddings": 64,
        },
        architecture=architecture,
        dropout=0.0,
    )
    model = build_model(cfg, len(tokenizer))
    sources = encode_sources(tokenizer, [q for q, _ in pairs], max_source_length)
    targets = encode_targets(tokenizer, [c for _, c in pairs], max_source_length)
    width_s, width_t = max(map(len, sources)), max(map(len, targets))
    ids = torch.tensor([s + [1] * (width_s - len(s)) for s in sources])
    labels = torch.tensor([t + [-100] * (width_t - len(t)) for t in targets])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=ids, attention_mask=(ids != 1).long(), labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    return save_model_dir(model, tokenizer, out_dir, settings=input_settings(max_source_length, None))


def random_tiny_model(architecture: str, vocab_size: int = 300, seed: int = 0):
    """Random weights with non-trivial LayerNorm parameters and logits bias (to exercise every term)."""
    import torch

    from spellfix.modeling import build_model

    torch.manual_seed(seed)
    cfg = types.SimpleNamespace(
        config={
            "d_model": 32,
            "encoder_layers": 2,
            "decoder_layers": 2,
            "encoder_attention_heads": 4,
            "decoder_attention_heads": 4,
            "encoder_ffn_dim": 64,
            "decoder_ffn_dim": 64,
            "max_position_embeddings": 64,
            "scale_embedding": architecture == "bart",
        },
        architecture=architecture,
        dropout=0.0,
    )
    model = build_model(cfg, vocab_size).eval()
    with torch.no_grad():
        model.final_logits_bias.normal_()
        for name, param in model.named_parameters():
            if "norm" in name:
                param.normal_()
    return model


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Torch on one thread for the importing module (restored after it)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """One tiny trained model per importing module."""
    return train_tiny_model(tmp_path_factory.mktemp("tiny") / "model")
