"""Copy-verify decoding is greedy decoding: token for token, on the shipped model and a tiny one.

The full matrix (all 3234 dev queries x torch and ONNX Runtime x batch 1 and 32) is
``python benchmarks/copy_verify_exactness.py``; here the parts that fit the suite's budget.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from spellfix.inference import SpellCorrector
from test_inference_fixtures import model_dir, one_torch_thread  # noqa: F401 (module fixtures)
from spellfix.inference.decoding import DecodingOptions, copy_verify

REPO = Path(__file__).resolve().parents[1]


def dev_queries(limit: int | None = None) -> list[str]:
    rows = [json.loads(line) for line in (REPO / "data" / "dev.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r["query"] for r in rows][:limit]


def raw_pair(model: Path, backend: str) -> tuple[SpellCorrector, SpellCorrector]:
    options = {"intra_op_num_threads": 2} if backend == "onnxruntime" else {}
    common = dict(backend=backend, backend_options=options, copy_margin=None, acceptance=None)
    return SpellCorrector(model, copy_verify=True, **common), SpellCorrector(model, copy_verify=False, **common)


@pytest.mark.slow
def test_copy_verify_equals_the_step_loop_on_all_of_dev_in_mixed_length_batches(shipped_export):
    fast, step_loop = raw_pair(shipped_export, "onnxruntime")
    queries = dev_queries()
    got, expected = fast.generate_ids(queries), step_loop.generate_ids(queries)
    assert sum(a != b for a, b in zip(got, expected)) == 0
    assert fast.last_decoder_calls < len(queries) / 32 * 6  # a handful of block calls per batch
    changed = sum(ids != t for ids, t in zip(got, fast.tokenizer.encode_targets([q.lower() for q in queries], 1 << 20)))
    assert changed > 500, "the decoder rewrites many dev queries: the drafts diverge and are re-drafted"


@pytest.mark.slow
def test_copy_verify_at_batch_1_equals_the_step_loop_and_takes_one_call_per_kept_query(shipped_export):
    fast, step_loop = raw_pair(shipped_export, "onnxruntime")
    fast.batch_size = step_loop.batch_size = 1
    calls_of_kept = []
    for query in dev_queries(240):
        got = fast.generate_ids([query])
        assert got == step_loop.generate_ids([query]), query
        if got[0] == fast.tokenizer.encode_targets([query.lower()], 1 << 20)[0]:
            calls_of_kept.append(fast.last_decoder_calls)
    assert calls_of_kept and set(calls_of_kept) == {1}


def test_copy_verify_equals_the_step_loop_on_torch_with_a_tiny_model(model_dir):
    fast, step_loop = raw_pair(model_dir, "torch")
    queries = dev_queries(200)
    for batch_size in (1, 7, 32):
        fast.batch_size = step_loop.batch_size = batch_size
        assert fast.generate_ids(queries) == step_loop.generate_ids(queries)


def test_copy_verify_honours_max_and_min_new_tokens(model_dir):
    for overrides in ({"max_new_tokens": 4}, {"min_new_tokens": 6}):
        fast = SpellCorrector(model_dir, "torch", copy_margin=None, acceptance=None, **overrides)
        step_loop = SpellCorrector(model_dir, "torch", copy_margin=None, acceptance=None, copy_verify=False, **overrides)
        queries = dev_queries(60)
        got = fast.generate_ids(queries)
        assert got == step_loop.generate_ids(queries)
        if "max_new_tokens" in overrides:
            assert max(len(ids) for ids in got) == 4
        else:
            assert min(len(ids) for ids in got) >= 6


def test_any_draft_gives_the_greedy_answer(model_dir):
    """Drafts only decide how fast: a wrong, empty or random draft gives the same tokens."""
    fixer = SpellCorrector(model_dir, "torch", copy_margin=None, acceptance=None, copy_verify=False)
    queries = dev_queries(12)
    batch = fixer.tokenizer.pad(fixer.tokenizer.encode_ids(fixer.encoder_texts(queries)))
    expected = fixer.generate_ids(queries)
    rng = np.random.default_rng(0)
    vocab = fixer.tokenizer.tokenizer.get_vocab_size()
    for drafts in ([[] for _ in queries], [list(rng.integers(3, vocab, 9)) for _ in queries], [e[::-1] for e in expected]):
        state = fixer.backend.encode(batch.input_ids, batch.attention_mask)
        assert copy_verify(fixer.backend, state, drafts, fixer.options).ids == expected
    with pytest.raises(ValueError, match="num_beams=1"):
        copy_verify(fixer.backend, state, [[]], DecodingOptions(2, 2, 1, 8, num_beams=2))


def test_verify_scores_equal_teacher_forced_scores(model_dir):
    from spellfix.inference.decoding import score_sequences

    fixer = SpellCorrector(model_dir, "torch", copy_margin=None, acceptance=None)
    queries = dev_queries(10)
    batch = fixer.tokenizer.pad(fixer.tokenizer.encode_ids(fixer.encoder_texts(queries)))
    drafts = fixer.tokenizer.encode_targets([q.lower() for q in queries], fixer.options.max_new_tokens)
    state = fixer.backend.encode(batch.input_ids, batch.attention_mask)
    out = copy_verify(fixer.backend, state, drafts, fixer.options)
    start, pad = fixer.options.decoder_start_token_id, fixer.options.pad_token_id
    assert np.allclose(out.scores, score_sequences(fixer.backend, state, out.ids, start, pad), atol=1e-4)
    assert np.allclose(out.draft_scores, score_sequences(fixer.backend, state, drafts, start, pad), atol=1e-4)


def test_serving_runtime_loads_neither_torch_transformers_nor_the_training_side(shipped_export):
    """SpellCorrector on ONNX Runtime over a model with candidates and an acceptance rule, followed
    through every lazy import: the lean serving environment needs none of these."""
    code = (
        "import sys\n"
        "from spellfix.inference import SpellCorrector\n"
        f"fixer = SpellCorrector({str(shipped_export)!r}, backend='onnxruntime')\n"
        "assert fixer.acceptance is not None\n"
        "print(fixer.correct(['wireles hedphones', 'the beatles']))\n"
        "banned = ('torch', 'transformers', 'accelerate', 'spellfix.data', 'spellfix.training', 'spellfix.modeling')\n"
        "print(sorted(m for m in sys.modules if m in banned or m.startswith(tuple(b + '.' for b in banned))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    answers, loaded = out.stdout.strip().splitlines()
    assert answers == "['wireless headphones', 'the beatles']"
    assert loaded == "[]"
