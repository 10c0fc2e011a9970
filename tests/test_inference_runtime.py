"""The runtime over the torch backend: same outputs as transformers ``generate``, and bad inputs.

The ONNX Runtime backend is checked against the same references in test_export_roundtrip.py (it
needs an export, which is the slow part).
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from spellfix.export.parity import reference_greedy  # noqa: E402
from spellfix.inference import DecodingOptions, OverlongQueryError, SpellCorrector, generate  # noqa: E402
from spellfix.inference.backends.torch_backend import TorchBackend  # noqa: E402
from spellfix.inference.torch_graphs import DecoderGraph, DecoderWithPastGraph, EncoderGraph  # noqa: E402
from test_inference_fixtures import dev_pairs, random_tiny_model  # noqa: E402
from test_inference_fixtures import model_dir, one_torch_thread  # noqa: E402,F401 (module fixtures)


@pytest.fixture(scope="module")
def corrector(model_dir):
    return SpellCorrector(model_dir, "torch", max_new_tokens=24)


@pytest.fixture(scope="module")
def queries():
    return [q for q, _ in dev_pairs(64, offset=40)]


def _options(corrector: SpellCorrector, **overrides) -> DecodingOptions:
    fields = {**corrector.options.__dict__, **overrides}
    return DecodingOptions(**fields)


def _hf_model(corrector: SpellCorrector):
    from spellfix.modeling import load_pretrained

    model, _ = load_pretrained(corrector.model_dir)
    return model.eval()


@pytest.mark.parametrize("architecture", ["mbart", "bart"])
def test_graph_modules_reproduce_transformers_logits_for_pre_and_post_layernorm(architecture):
    model = random_tiny_model(architecture)
    ids = torch.randint(3, 300, (3, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[2, 3:] = 0
    dec = torch.randint(3, 300, (3, 6))
    dec[:, 0] = 2
    with torch.no_grad():
        reference = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
        hidden = EncoderGraph(model)(ids, mask)
        first = DecoderGraph(model)(dec, hidden, mask)
        assert (first[0] - reference).abs().max() < 1e-4
        layers = model.config.decoder_layers
        step_out = DecoderGraph(model)(dec[:, :2], hidden, mask)
        past, cross = list(step_out[1 : 1 + 2 * layers]), list(step_out[1 + 2 * layers :])
        for t in range(2, 6):
            out = DecoderWithPastGraph(model)(dec[:, t : t + 1], mask, *past, *cross)
            assert (out[0][:, 0] - reference[:, t]).abs().max() < 1e-4
            past = list(out[1:])


def test_trained_model_outputs_are_not_trivial(corrector, queries):
    ids = corrector.generate_ids(queries)
    assert len({len(x) for x in ids}) >= 3, "outputs should end at different steps"
    assert sum(bool(x) and x[-1] == corrector.options.eos_token_id for x in ids) >= len(ids) // 2


@pytest.mark.parametrize("batch_size", [1, 32])
def test_greedy_matches_generate_on_dev_queries_in_batches_of_mixed_lengths(corrector, queries, batch_size):
    model = _hf_model(corrector)
    encoded = corrector.tokenizer.encode_ids(corrector.encoder_texts(queries))
    assert len({len(e) for e in encoded}) > 3  # mixed lengths
    for start in range(0, len(encoded), batch_size):
        batch = corrector.tokenizer.pad(encoded[start : start + batch_size])
        ours = generate(corrector.backend, batch.input_ids, batch.attention_mask, corrector.options)
        theirs = reference_greedy(model, batch.input_ids, batch.attention_mask, corrector.options)
        assert ours == theirs


def test_beam_search_matches_generate_with_four_beams(corrector, queries):
    model = _hf_model(corrector)
    options = _options(corrector, num_beams=4, max_new_tokens=16)
    encoded = corrector.tokenizer.encode_ids(corrector.encoder_texts(queries[:24]))
    for start in (0, 12):
        batch = corrector.tokenizer.pad(encoded[start : start + 12])
        ours = generate(corrector.backend, batch.input_ids, batch.attention_mask, options)
        assert ours == reference_greedy(model, batch.input_ids, batch.attention_mask, options)


def test_min_new_tokens_suppresses_eos_like_generate(corrector, queries):
    model = _hf_model(corrector)
    options = _options(corrector, min_new_tokens=6, max_new_tokens=6)
    batch = corrector.tokenizer.pad(corrector.tokenizer.encode_ids(queries[:5]))
    ours = generate(corrector.backend, batch.input_ids, batch.attention_mask, options)
    assert [len(x) for x in ours] == [6] * 5
    assert ours == reference_greedy(model, batch.input_ids, batch.attention_mask, options)


class CountingBackend:
    """The real torch backend, recording how many rows each decoder step ran on."""

    name = "counting"

    def __init__(self, inner):
        self.inner = inner
        self.rows_per_step: list[int] = []

    def encode(self, ids, mask):
        return self.inner.encode(ids, mask)

    def decode_step(self, state, ids, full_logits=True, suppress_token=None):
        self.rows_per_step.append(ids.shape[0])
        return self.inner.decode_step(state, ids, full_logits, suppress_token)

    def select_rows(self, state, rows):
        return self.inner.select_rows(state, rows)


def test_decoding_stops_when_every_row_finished_and_drops_finished_rows(corrector, queries):
    eos = corrector.options.eos_token_id
    finishing = [q for q, ids in zip(queries, corrector.generate_ids(queries)) if ids and ids[-1] == eos][:16]
    assert len(finishing) == 16
    counting = CountingBackend(corrector.backend)
    batch = corrector.tokenizer.pad(corrector.tokenizer.encode_ids(finishing))
    out = generate(counting, batch.input_ids, batch.attention_mask, _options(corrector, max_new_tokens=40))
    longest = max(len(x) for x in out)
    assert len(counting.rows_per_step) == longest < 40  # early exit, not max_new_tokens steps
    assert counting.rows_per_step[0] == 16 and counting.rows_per_step[-1] < 16  # finished rows left the batch
    assert out == generate(corrector.backend, batch.input_ids, batch.attention_mask, _options(corrector, max_new_tokens=40))


def test_batch_composition_does_not_change_a_query_correction(corrector, queries):
    alone = [corrector.correct([q])[0] for q in queries[:8]]
    assert corrector.correct(queries[:8]) == alone


def test_queries_are_normalised_like_the_scorer(corrector):
    assert corrector.encoder_texts(["  Thin   LIZZY \t"]) == ["thin lizzy"]
    assert corrector.correct(["  Thin   LIZZY \t"]) == corrector.correct(["thin lizzy"])


def test_empty_query_gives_empty_output_without_running_the_model(corrector):
    counting = CountingBackend(corrector.backend)
    original, corrector.backend = corrector.backend, counting
    try:
        assert corrector.correct(["", "   ", "\t\n"]) == ["", "", ""]
        assert counting.rows_per_step == []
        assert corrector.correct([]) == []
    finally:
        corrector.backend = original


def test_overlong_query_is_truncated_with_a_warning_by_default(corrector):
    long_query = " ".join(["metallica"] * 40)
    with pytest.warns(UserWarning, match="max_source_length=32.*truncated"):
        out = corrector.correct([long_query])
    assert isinstance(out[0], str)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        encoded = corrector.tokenizer.encode_ids([long_query])
    assert len(encoded[0]) == 32 and encoded[0][0] == 0 and encoded[0][-1] == 2


def test_overlong_query_is_rejected_when_asked(model_dir):
    strict = SpellCorrector(model_dir, "torch", on_overlong="error")
    with pytest.raises(OverlongQueryError, match=r"query 1 has \d+ tokens, more than max_source_length=32"):
        strict.correct(["ok", " ".join(["metallica"] * 40)])


def test_invalid_utf8_is_a_clear_error_naming_the_query(corrector):
    with pytest.raises(ValueError, match=r"query 1 is not valid UTF-8: byte 0xff at position 3"):
        corrector.correct(["fine", b"abc\xff"])
    with pytest.raises(ValueError, match=r"query 0 is not valid UTF-8: .*surrogate"):
        corrector.correct([b"caf\xe9".decode("utf-8", "surrogateescape")])
    assert corrector.correct([b"thin lizzy"]) == corrector.correct(["thin lizzy"])


def test_wrong_query_types_are_rejected(corrector):
    with pytest.raises(TypeError, match="not a single string"):
        corrector.correct("thin lizzy")
    with pytest.raises(TypeError, match="query 1 must be str or UTF-8 bytes, got int"):
        corrector.correct(["ok", 3])


def test_constructor_rejects_bad_options(model_dir):
    with pytest.raises(ValueError, match="backend must be one of"):
        SpellCorrector(model_dir, "tensorflow")
    with pytest.raises(ValueError, match="on_overlong must be one of"):
        SpellCorrector(model_dir, "torch", on_overlong="ignore")
    with pytest.raises(ValueError, match="num_beams must be >= 1"):
        SpellCorrector(model_dir, "torch", num_beams=0)


def test_onnxruntime_backend_asks_for_an_export_dir(model_dir):
    with pytest.raises(FileNotFoundError, match="needs an export dir.*spellfix export --model"):
        SpellCorrector(model_dir, "onnxruntime")


def test_candidate_annotation_is_applied_when_the_model_was_trained_with_it(model_dir, tmp_path):
    from spellfix.lexical.candidates import CandidateAnnotator, CandidatesConfig

    dictionary = tmp_path / "words.txt"
    dictionary.write_text("lizzy 500\nthin 900\nmetallica 300\n", encoding="utf-8")
    candidates = {"enabled": True, "dictionary": str(dictionary), "bigram_dictionary": "", "words": "unknown", "context": False}
    annotated_dir = tmp_path / "model"
    import shutil

    shutil.copytree(model_dir, annotated_dir)
    card = json.loads((annotated_dir / "spellfix.json").read_text())
    (annotated_dir / "spellfix.json").write_text(json.dumps({**card, "candidates": candidates}))
    fixer = SpellCorrector(annotated_dir, "torch")
    expected = CandidateAnnotator(CandidatesConfig(**candidates)).annotate("thin lizy")
    assert expected != "thin lizy"
    assert fixer.encoder_texts(["Thin  Lizy"]) == [expected]
    assert isinstance(fixer.correct(["thin lizy"])[0], str)


def test_inference_package_imports_without_torch_transformers_or_accelerate():
    code = (
        "import sys, spellfix.inference, spellfix.inference.backends.onnxruntime_backend, "
        "spellfix.inference.backends.tensorrt_backend\n"
        "print([m for m in ('torch', 'transformers', 'accelerate') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_log_softmax_and_top_k_helpers_match_numpy_references():
    from spellfix.inference.decoding import _log_softmax, _top_k

    x = np.array([[1.0, 3.0, 2.0, 3.0], [0.0, -1.0, 5.0, 4.0]], dtype=np.float32)
    assert np.allclose(np.exp(_log_softmax(x)).sum(-1), 1.0)
    assert _top_k(x, 2).tolist() == [[1, 3], [2, 3]]  # ties: lower index first


def test_torch_backend_uses_cast_weights_when_asked(model_dir):
    from spellfix.modeling import load_pretrained

    model, _ = load_pretrained(model_dir)
    backend = TorchBackend(model, dtype=torch.bfloat16)
    state = backend.encode(np.array([[0, 50, 51, 2]]), np.ones((1, 4), dtype=np.int64))
    logits, _ = backend.decode_step(state, np.array([[2]]))
    assert logits.dtype == np.float32 and logits.shape[0] == 1


def test_generation_settings_the_runtime_ignores_are_warned_about(model_dir, tmp_path, caplog):
    import logging
    import shutil

    from spellfix.inference.layout import read_input_settings

    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    gen = json.loads((copy / "generation_config.json").read_text())
    (copy / "generation_config.json").write_text(json.dumps({**gen, "forced_bos_token_id": 0, "no_repeat_ngram_size": 3}))
    with caplog.at_level(logging.WARNING, logger="spellfix.inference.layout"):
        read_input_settings(copy)
    assert "forced_bos_token_id=0, no_repeat_ngram_size=3" in caplog.text
