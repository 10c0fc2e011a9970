"""Metric definitions of spellfix.evaluation, on hand-made cases whose figures are known."""

from __future__ import annotations

import json
from pathlib import Path
import subprocess
import sys

import pytest

from spellfix.evaluation import (
    compute_metrics,
    evaluate,
    format_metrics,
    measure_latency,
    normalize,
    row_groups,
    run_corrector,
    write_json_atomic,
)


def test_normalize_lowercases_collapses_spaces_and_strips():
    assert normalize("  Beyonce \t  HALO \n") == "beyonce halo"


def test_fix_rate_counts_only_misspelled_rows_and_false_positives_only_correct_rows():
    queries = ["helo world", "blue sky", "red hous", "green tree"]
    refs = ["hello world", "blue sky", "red house", "green tree"]
    preds = ["hello world", "blue ski", "red hous", "green tree"]
    m = compute_metrics(queries, preds, refs)
    assert (m["n"], m["n_misspelled"], m["n_correct"]) == (4, 2, 2)
    assert m["exact_match"] == pytest.approx(2 / 4)
    assert m["exact_match_misspelled"] == pytest.approx(1 / 2)
    assert m["false_positive_rate"] == pytest.approx(1 / 2)


def test_scoring_ignores_case_and_extra_whitespace():
    m = compute_metrics(["Helo  World"], [" HELLO world "], ["hello world"])
    assert m["exact_match"] == 1.0 and m["cer"] == 0.0


def test_shares_over_empty_subsets_are_none_not_zero():
    m = compute_metrics(["a b"], ["a b"], ["a b"])
    assert m["exact_match_misspelled"] is None
    assert m["word_correction_rate"] is None
    assert m["false_positive_rate"] == 0.0


def test_word_correction_rate_credits_the_fixed_word_even_if_another_word_broke():
    # the misspelled word is fixed, but the model also changed "party": not an exact match
    m = compute_metrics(["dance pary night"], ["dance party nite"], ["dance party night"])
    assert m["exact_match"] == 0.0
    assert m["word_correction_rate"] == 1.0
    m = compute_metrics(["dance pary night"], ["dance pry night"], ["dance party night"])
    assert m["word_correction_rate"] == 0.0


def test_word_correction_rate_treats_a_split_word_as_one_error():
    m = compute_metrics(["newyork city", "newyork city"], ["new york city", "newyork city"], ["new york city"] * 2)
    assert m["n_misspelled_words"] == 2
    assert m["word_correction_rate"] == pytest.approx(0.5)


def test_word_correction_rate_for_a_duplicated_word():
    m = compute_metrics(["the the beatles", "the the beatles"], ["the beatles", "the the beatles"], ["the beatles"] * 2)
    assert m["word_correction_rate"] == pytest.approx(0.5)


def test_cer_and_wer_are_corpus_level_edit_distance_over_reference_length():
    # "abcd" vs "abxd": 1 char of 4; "hello world" exact: 0 of 11  -> 1/15 chars
    m = compute_metrics(["abcd", "hello world"], ["abxd", "hello world"], ["abcd", "hello world"])
    assert m["cer"] == pytest.approx(1 / 15)
    assert m["wer"] == pytest.approx(1 / 3)


def test_breakdown_scores_each_group_value_separately():
    queries = ["helo", "ok", "wrld", "fine"]
    refs = ["hello", "ok", "world", "fine"]
    preds = ["hello", "okay", "wrld", "fine"]
    m = compute_metrics(queries, preds, refs, groups={"domain": ["music", "music", "product", "product"]})
    music, product = m["breakdown"]["domain"]["music"], m["breakdown"]["domain"]["product"]
    assert (music["n"], music["exact_match_misspelled"], music["false_positive_rate"]) == (2, 1.0, 1.0)
    assert (product["n"], product["exact_match_misspelled"], product["false_positive_rate"]) == (2, 0.0, 0.0)
    assert m["exact_match"] == pytest.approx(2 / 4)


def test_empty_input_is_an_error():
    with pytest.raises(ValueError, match="no rows"):
        compute_metrics([], [], [])


def test_length_mismatch_names_the_counts():
    with pytest.raises(ValueError, match=r"predictions \(1\)"):
        compute_metrics(["a", "b"], ["a"], ["a", "b"])
    with pytest.raises(ValueError, match="group 'domain'"):
        compute_metrics(["a"], ["a"], ["a"], groups={"domain": ["x", "y"]})


def test_row_groups_derive_error_type_from_the_real_word_column():
    rows = [
        {"query": "hart", "correction": "heart", "real_word": "1", "domain": "music"},
        {"query": "hert", "correction": "heart", "real_word": "0", "domain": "music"},
        {"query": "heart", "correction": "heart", "real_word": "", "domain": "product"},
    ]
    groups = row_groups(rows)
    assert groups["error_type"] == ["real-word", "non-word", "none"]
    assert groups["domain"] == ["music", "music", "product"]


class Upper:
    """A trivial corrector: fixes nothing, changes nothing but case (which scoring ignores)."""

    def __init__(self):
        self.calls = []

    def correct(self, queries):
        self.calls.append(len(queries))
        return [q.upper() for q in queries]


def test_run_corrector_batches_and_latency_runs_one_query_at_a_time():
    fixer = Upper()
    preds, qps = run_corrector(fixer, [f"q{i}" for i in range(10)], batch_size=4)
    assert fixer.calls == [4, 4, 2] and preds[9] == "Q9" and qps > 0
    fixer.calls.clear()
    lat = measure_latency(fixer, [f"q{i}" for i in range(10)], sample=5, warmup=2)
    assert set(fixer.calls) == {1} and len(fixer.calls) == 7
    assert lat["n"] == 5 and 0 <= lat["p50"] <= lat["p99"]


def test_evaluate_scores_a_pair_file_and_writes_the_design_json(tmp_path):
    data = tmp_path / "dev.jsonl"
    rows = [
        {"query": "helo world", "correction": "hello world", "domain": "music", "real_word": "0"},
        {"query": "hello world", "correction": "hello world", "domain": "music", "real_word": ""},
        {"query": "blue sky", "correction": "blue sky", "domain": "product", "real_word": ""},
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "out" / "metrics.json"
    metrics = evaluate(Upper(), data, json_out=out, batch_size=2, latency_sample=2)
    written = json.loads(out.read_text())
    for key in ("n", "exact_match", "exact_match_misspelled", "false_positive_rate", "word_correction_rate", "cer", "queries_per_second"):
        assert isinstance(written[key], (int, float)), key
    assert set(written["latency_ms"]) == {"p50", "p99"}
    assert written["exact_match_misspelled"] == 0.0 and written["false_positive_rate"] == 0.0
    assert written["breakdown"]["error_type"]["non-word"]["n"] == 1
    assert metrics["n"] == 3
    assert [p.name for p in out.parent.iterdir()] == ["metrics.json"]  # no temp file left behind
    assert "false-positive rate" in format_metrics(metrics)


def test_evaluate_limit_and_corrector_options_are_checked(tmp_path):
    data = tmp_path / "dev.tsv"
    data.write_text("helo\thello\nworld\tworld\n", encoding="utf-8")
    assert evaluate(Upper(), data, limit=1)["n"] == 1
    with pytest.raises(TypeError, match="num_beams"):
        evaluate(Upper(), data, num_beams=4)


def test_write_json_atomic_replaces_the_file_whole(tmp_path):
    path = write_json_atomic(tmp_path / "a.json", {"x": 1})
    write_json_atomic(path, {"x": 2})
    assert json.loads(path.read_text()) == {"x": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temp file left behind


def test_atomic_writes_get_the_umask_mode_not_mkstemps_0600(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        path = write_json_atomic(tmp_path / "a.json", {"x": 1})
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def test_replaced_dirs_get_umask_modes(tmp_path):
    import os
    import tempfile

    from spellfix.fsutil import replace_dir

    tmp = Path(tempfile.mkdtemp(dir=tmp_path))
    (tmp / "sub").mkdir()
    (tmp / "sub" / "w.bin").write_bytes(b"x")
    os.chmod(tmp / "sub" / "w.bin", 0o600)
    old = os.umask(0o022)
    try:
        replace_dir(tmp, tmp_path / "model")
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in [tmp_path / "model", *(tmp_path / "model").rglob("*")]}
    assert modes == {"model": 0o755, "sub": 0o755, "w.bin": 0o644}


def test_evaluation_imports_without_torch():
    code = "import sys, spellfix.evaluation; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.slow
def test_evaluate_scores_a_trained_model_dir_through_spell_corrector(tiny_recipe_dict, tmp_path):
    from spellfix.config import load_recipe
    from spellfix.training.loop import train

    recipe = load_recipe(
        tiny_recipe_dict,
        overrides={"train.max_steps": 2, "train.save_every": 0, "data.candidates.enabled": True},
    )
    result = train(recipe, tmp_path / "run", progress=False)
    out = tmp_path / "eval.json"
    metrics = evaluate(result.final_dir, tiny_recipe_dict["data"]["dev"], backend="torch", batch_size=4,
                       json_out=out, latency_sample=3, max_new_tokens=8)
    assert metrics["n"] == 16 and metrics["model"] == str(result.final_dir)
    assert metrics["latency_ms"]["p50"] > 0 and metrics["queries_per_second"] > 0
    assert json.loads(out.read_text())["n"] == 16
