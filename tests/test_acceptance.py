"""The acceptance model: features, the logistic fit, the exact threshold sweep, and how a saved
model reaches every caller (CLI, SpellCorrector, spellfix.json, export)."""

from __future__ import annotations

import json
import math
import random
import shutil

import numpy as np
import pytest

from spellfix import calibration
from spellfix.inference.acceptance import FEATURES, AcceptanceModel, answer_features, edit_distance, fit_logistic
from spellfix.inference.changes import is_real_word_change, word_edits
from spellfix.inference.copy_rule import Answer, CopyDecision, partial_answers
from spellfix.lexical.context import BigramContext
from spellfix.lexical.lexicon import lexicon, zipf, zipf_frequencies

LEXICON = lexicon(2.5)
CONTEXT = BigramContext.builtin()


def test_features_read_word_frequencies_and_edit_distance():
    names = dict(zip(FEATURES, answer_features("klipsch speakers", Answer("kitsch speakers", 3.5, word_slack=3.5), LEXICON, zipf_frequencies(), CONTEXT)))
    assert names["old_word_zipf"] == zipf("klipsch") == pytest.approx(1.99)  # a brand wordfreq has seen
    assert names["new_word_zipf"] == zipf("kitsch") > 2.0
    assert names["edit_distance"] == edit_distance("klipsch", "kitsch") == 2  # drop "l", "p" -> "t"
    assert (names["gain"], names["weakest_edit"], names["real_word"], names["same_first_letter"]) == (3.5, 3.5, 0.0, 1.0)
    typo = dict(zip(FEATURES, answer_features("hurple rain", Answer("purple rain", 2.0, word_slack=2.0), LEXICON, zipf_frequencies(), CONTEXT)))
    assert typo["old_word_zipf"] == 0.0 and typo["edit_distance"] == 1 and typo["same_first_letter"] == 0.0
    two = dict(zip(FEATURES, answer_features("teh clash", Answer("the class", 4.0, word_slack=2.0, real_word_slack=-1.0), LEXICON, zipf_frequencies(), CONTEXT)))
    assert two["weakest_edit"] == -1.0 and two["old_word_zipf"] == zipf("clash")
    assert two["new_word_zipf"] == min(zipf("the"), zipf("class"))
    inserted = dict(zip(FEATURES, answer_features("was here", Answer("w was here", 1.0, real_word_slack=1.0), LEXICON, zipf_frequencies(), CONTEXT)))
    assert inserted["old_word_zipf"] == zipf("was") > 6  # the word beside the insertion, not "never seen"
    assert edit_distance("", "abc") == 3 and edit_distance("kitten", "sitting") == 3
    # the neighbours' evidence: of the weakest edit when there are several; none for a one-word query
    fits = dict(zip(FEATURES, answer_features("kickstart my hart", Answer("kickstart my heart", 1.0, word_slack=1.0), LEXICON, zipf_frequencies(), CONTEXT)))
    assert fits["context_gain"] == CONTEXT.edit_gain("kickstart my hart".split(), 2, 3, ["heart"]) > 3.0
    both = [CONTEXT.edit_gain(["teh", "clash"], 0, 1, ["the"]), CONTEXT.edit_gain(["teh", "clash"], 1, 2, ["class"])]
    assert two["context_gain"] == pytest.approx(min(both))
    assert typo["context_gain"] == CONTEXT.edit_gain(["hurple", "rain"], 0, 1, ["purple"])
    alone = dict(zip(FEATURES, answer_features("hurple", Answer("purple", 2.0), LEXICON, zipf_frequencies(), CONTEXT)))
    assert math.isnan(alone["context_gain"])  # no neighbours: no evidence either way


def test_a_feature_without_evidence_scores_as_its_mean_in_the_fit_and_after():
    """Dev holds no one-word query, so a fit over context_gain never sees one; scored as the mean,
    a one-word query's fix is neither helped nor held back by the missing neighbours."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, len(FEATURES))) + 2.0
    y = rng.random(400) < 1 / (1 + np.exp(-(x[:, 0] - 2.0)))
    model = fit_logistic(x, y)
    row = list(x[0])
    row[FEATURES.index("context_gain")] = math.nan
    at_mean = list(x[0])
    at_mean[FEATURES.index("context_gain")] = model.mean[FEATURES.index("context_gain")]
    assert model.score(row) == pytest.approx(model.score(at_mean))
    x[::3, FEATURES.index("context_gain")] = math.nan  # rows without the feature still fit
    with_missing = fit_logistic(x, y)
    assert all(math.isfinite(w) for w in with_missing.weights)
    assert with_missing.mean[FEATURES.index("context_gain")] == pytest.approx(np.nanmean(x[:, FEATURES.index("context_gain")]))
    x[:, FEATURES.index("context_gain")] = math.nan
    with pytest.raises(ValueError, match="no value in any row.*context_gain"):
        fit_logistic(x, y)


def test_logistic_fit_recovers_known_weights():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20000, 2)) * [1.0, 3.0] + [0.0, 5.0]
    true_w, true_b = np.array([2.0, -1.0]), 4.5
    y = rng.random(20000) < 1 / (1 + np.exp(-(x @ true_w + true_b)))
    names = ("gain", "context_gain")
    model = fit_logistic(x, y, names=names, l2=1e-3)
    # back from standardised features to raw ones
    w = np.array(model.weights) / np.array(model.scale)
    b = model.bias - float(np.sum(np.array(model.weights) * np.array(model.mean) / np.array(model.scale)))
    np.testing.assert_allclose(w, true_w, atol=0.1)
    assert b == pytest.approx(true_b, abs=0.3)
    full = [1.0 if name == "gain" else 5.0 if name == "context_gain" else 99.0 for name in FEATURES]  # the others are not its features
    assert model.score(full) == pytest.approx(float(w @ [1.0, 5.0] + b))
    with pytest.raises(ValueError, match="both accepted and rejected"):
        fit_logistic(x[:10], np.ones(10), names=names)
    with pytest.raises(ValueError, match="10 features"):
        fit_logistic(x, y)  # two columns, but FEATURES named


def _random_decisions(seed: int) -> tuple[list[CopyDecision], list[str]]:
    """Rows judged whole and edit by edit, misspelled and correct, with random scores."""
    rng = random.Random(seed)
    decisions, refs = [], []
    for _ in range(60):
        kind = rng.random()
        if kind < 0.35:
            query, answer = "teh clash", "the class"
            edits = word_edits(query, answer, LEXICON)
            scores = [rng.uniform(-12, -2) for _ in range(3)]
            decisions.append(CopyDecision(query, answer, scores[-1] + 10, False, partial_answers(query, edits, scores, -10.0)))
            refs.append(rng.choice(["the clash", "the class", "teh clash", "a clash"]))
        elif kind < 0.9:
            query, answer = rng.choice([("helo", "hello"), ("thin lizzy", "this lizzy"), ("klipsch", "kitsch"), ("wrld", "world")])
            decisions.append(CopyDecision(query, answer, rng.uniform(-3, 6), is_real_word_change(query, answer, LEXICON)))
            refs.append(rng.choice([query, answer]))
        else:
            decisions.append(CopyDecision("queen", "queen", 0.0))
            refs.append("queen")
    return decisions, refs


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_threshold_sweep_is_exact(seed):
    decisions, refs = _random_decisions(seed)
    examples = calibration.acceptance_examples(decisions, LEXICON, zipf_frequencies(), CONTEXT)
    rng = np.random.default_rng(seed)
    model = AcceptanceModel(tuple(rng.normal(size=len(FEATURES))), 0.3, (0.0,) * len(FEATURES), (1.0,) * len(FEATURES), 0.0)
    points = calibration.acceptance_sweep(model, decisions, refs, examples)
    assert len(points) > 5
    for point in points:  # what the rule really outputs at each threshold
        outputs = [
            d.choose_by(lambda a, d=d: model.score(answer_features(d.query, a, LEXICON, zipf_frequencies(), CONTEXT)) > point.margin)
            for d in decisions
        ]
        assert point == calibration._figures([d.query for d in decisions], outputs, refs, margin=point.margin)
    assert points[-1].false_positive_rate == 0.0 and points[-1].fixed == 0.0  # above every score: keep every query


def test_calibration_fits_then_chooses_and_the_split_check_holds_rows_out():
    decisions, refs = _random_decisions(3)
    examples = calibration.acceptance_examples(decisions, LEXICON, zipf_frequencies(), CONTEXT)
    model, points, chosen = calibration.calibrate_acceptance(decisions, refs, examples, objective="fixed", max_fpr=0.2)
    assert model.threshold == chosen.margin and chosen.false_positive_rate <= 0.2
    assert chosen.fixed == max(p.fixed for p in points if p.false_positive_rate <= 0.2)
    on_even, on_odd = calibration.acceptance_split_check(decisions, refs, examples)
    even_model, _, _ = calibration.calibrate_acceptance(decisions[::2], refs[::2], examples[::2])
    outputs = [d.choose_by(lambda a, d=d: even_model.score(answer_features(d.query, a, LEXICON, zipf_frequencies(), CONTEXT)) > even_model.threshold) for d in decisions[1::2]]
    assert on_odd == calibration._figures([d.query for d in decisions[1::2]], outputs, refs[1::2], margin=even_model.threshold)


def test_model_round_trips_through_json_and_bad_fields_name_the_file():
    model = AcceptanceModel((1.0,) * len(FEATURES), -0.5, (0.0,) * len(FEATURES), (2.0,) * len(FEATURES), 0.25)
    assert AcceptanceModel.from_dict(json.loads(json.dumps(model.to_dict())), "x") == model
    bad = model.to_dict() | {"weights": [1.0, 2.0]}
    with pytest.raises(ValueError, match=r"m/spellfix\.json: decoding\.acceptance\.weights: expected 10 numbers \(one per feature\)"):
        AcceptanceModel.from_dict(bad, "m/spellfix.json")
    with pytest.raises(ValueError, match=r"decoding\.acceptance\.features"):
        AcceptanceModel.from_dict(model.to_dict() | {"features": ["gain", "typo_probability"]}, "m/spellfix.json")
    with pytest.raises(ValueError, match=r"decoding\.acceptance\.weights: expected 1 numbers"):
        AcceptanceModel.from_dict(model.to_dict() | {"features": ["gain"]}, "m/spellfix.json")
    with pytest.raises(ValueError, match=r"decoding\.acceptance\.scale: every value must be > 0"):
        AcceptanceModel.from_dict(model.to_dict() | {"scale": [0.0] * len(FEATURES)}, "m/spellfix.json")
    with pytest.raises(ValueError, match=r"decoding\.acceptance\.threshold: expected a number"):
        AcceptanceModel.from_dict(model.to_dict() | {"threshold": math.nan}, "m/spellfix.json")


def test_a_model_saved_before_context_gain_existed_scores_with_its_own_features():
    """spellfix.json files calibrated before ``context_gain`` name nine features: they load, and
    the new feature does not move their scores."""
    old_names = [name for name in FEATURES if name != "context_gain"]
    saved = {"features": old_names, "weights": [0.5] * 9, "bias": 0.1, "mean": [1.0] * 9, "scale": [2.0] * 9, "threshold": 0.0}
    model = AcceptanceModel.from_dict(saved, "old/spellfix.json")
    assert model.features == tuple(old_names) and model.to_dict() == saved
    values = [3.0] * len(FEATURES)
    moved = [3.0 if name != "context_gain" else -30.0 for name in FEATURES]
    assert model.score(values) == model.score(moved) == pytest.approx(0.1 + 9 * 0.5 * (3.0 - 1.0) / 2.0)
    # the corrector then passes no context: the feature is NaN, the others and the score unchanged
    answer = Answer("kickstart my heart", 1.0, word_slack=1.0)
    with_context = answer_features("kickstart my hart", answer, LEXICON, zipf_frequencies(), CONTEXT)
    without = answer_features("kickstart my hart", answer, LEXICON, zipf_frequencies(), None)
    assert math.isnan(without[-1]) and without[:-1] == with_context[:-1]
    assert model.score(without) == model.score(with_context)


torch = pytest.importorskip("torch")
from spellfix.cli import main  # noqa: E402
from spellfix.inference import SpellCorrector  # noqa: E402
from test_inference_fixtures import dev_pairs  # noqa: E402
from test_inference_fixtures import model_dir, one_torch_thread  # noqa: E402,F401 (module fixtures)


def test_calibrate_saves_an_acceptance_model_that_correct_then_uses(model_dir, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(model_dir, model)
    misspelled = dev_pairs(40)  # the tiny model learned these: it fixes some and breaks some copies
    pairs = misspelled + [(c, c) for _, c in misspelled[:20]] + dev_pairs(20, offset=60)
    dev = tmp_path / "dev.jsonl"
    dev.write_text("".join(json.dumps({"query": q, "correction": c}) + "\n" for q, c in pairs), encoding="utf-8")
    assert main(["calibrate", "--model", str(model), "--data", str(dev), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "acceptance model" in out and "decides instead of the margins" in out, out
    decoding = json.loads((model / "spellfix.json").read_text())["decoding"]
    assert decoding["copy_margin_chosen_on"]["rule"] == "acceptance" and decoding["copy_margin"] is not None
    fixer = SpellCorrector(model, "torch", max_new_tokens=24)
    saved = AcceptanceModel.from_dict(decoding["acceptance"], "spellfix.json")
    assert fixer.acceptance == saved
    queries = [q for q, _ in pairs]
    decisions = fixer.copy_decisions(queries)
    expected = [d.choose_by(lambda a, d=d: saved.score(answer_features(d.query, a, fixer.known_words(), zipf_frequencies(), CONTEXT)) > saved.threshold) for d in decisions]
    assert fixer.correct(queries) == expected
    margins = SpellCorrector(model, "torch", max_new_tokens=24, acceptance=None)
    assert margins.correct(queries) == [d.choose(margins.copy_margin, margins.real_word_margin) for d in decisions]
    # the saved rule is what `spellfix correct` applies; --copy-margin margins asks for the margins
    capsys.readouterr()
    assert main(["correct", "--model", str(model), *queries[:6]]) == 0
    assert capsys.readouterr().out.splitlines() == expected[:6]
    # re-calibrating with the margins alone removes the acceptance model
    assert main(["calibrate", "--model", str(model), "--data", str(dev), "--no-progress", "--rule", "margins"]) == 0
    assert json.loads((model / "spellfix.json").read_text())["decoding"]["acceptance"] is None
    assert SpellCorrector(model, "torch").acceptance is None


def test_a_bad_acceptance_model_in_spellfix_json_names_the_file_and_field(model_dir, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(model_dir, model)
    card = json.loads((model / "spellfix.json").read_text())
    card["decoding"] = {"acceptance": {"features": list(FEATURES), "weights": "oops"}}
    (model / "spellfix.json").write_text(json.dumps(card))
    with pytest.raises(ValueError, match=r"spellfix\.json: decoding\.acceptance\.weights"):
        SpellCorrector(model, "torch")


def test_dev_split_by_corrected_word_keeps_every_word_and_text_on_one_side():
    import json
    from pathlib import Path

    from spellfix.calibration import split_by_word

    rows = [json.loads(line) for line in (Path(__file__).resolve().parents[1] / "data" / "dev.jsonl").read_text().splitlines() if line.strip()]
    queries, references = [r["query"] for r in rows], [r["correction"] for r in rows]
    fit, held = split_by_word(queries, references)
    assert sorted(fit + held) == list(range(len(rows)))
    assert 0.35 < len(held) / len(rows) < 0.65
    side = {}
    for name, part in (("fit", fit), ("held", held)):
        for i in part:
            changed = set(references[i].split()) - set(queries[i].split())
            for key in ({"text:" + queries[i], "text:" + references[i]} | {"word:" + w for w in changed}):
                assert side.setdefault(key, name) == name, f"{key} is on both sides"
    misspelled_held = sum(queries[i] != references[i] for i in held)
    assert 0 < misspelled_held < len(held)  # both kinds of rows are held out
    assert split_by_word(queries, references) == (fit, held)  # stable
