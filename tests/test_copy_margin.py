"""The copy margin: teacher-forced scoring, the keep-the-query rule, calibration and its CLI."""

from __future__ import annotations

import json
import pytest

torch = pytest.importorskip("torch")

from spellfix import calibration  # noqa: E402
from spellfix.cli import main  # noqa: E402
from spellfix.inference import CopyDecision, SpellCorrector  # noqa: E402
from spellfix.inference.decoding import score_sequences  # noqa: E402
from test_inference_fixtures import dev_pairs  # noqa: E402
from test_inference_fixtures import model_dir, one_torch_thread  # noqa: E402,F401 (module fixtures)


@pytest.fixture(scope="module")
def raw(model_dir):
    return SpellCorrector(model_dir, "torch", max_new_tokens=24, copy_margin=None)


@pytest.fixture(scope="module")
def pairs():
    """Misspelled queries and their corrections as correct queries: both kinds of dev rows."""
    misspelled = dev_pairs(24, offset=30)
    return misspelled + [(c, c) for _, c in misspelled[:12]]


def _hf_log_likelihood(model_dir, source_ids: list[int], target_ids: list[int]) -> float:
    from spellfix.modeling import load_pretrained

    model, _ = load_pretrained(model_dir)
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([source_ids]), labels=torch.tensor([target_ids])).logits[0]
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    return float(log_probs[torch.arange(len(target_ids)), torch.tensor(target_ids)].sum())


def test_scored_sequences_equal_the_models_teacher_forced_log_likelihood(raw, model_dir, pairs):
    texts = [q for q, _ in pairs[:6]]
    sources = raw.tokenizer.encode_ids(raw.encoder_texts(texts))
    targets = raw.tokenizer.encode_targets([c for _, c in pairs[:6]], raw.options.max_new_tokens)
    batch = raw.tokenizer.pad(sources)
    state = raw.backend.encode(batch.input_ids, batch.attention_mask)
    ours = score_sequences(raw.backend, state, targets, raw.options.decoder_start_token_id, raw.options.pad_token_id)
    assert len({len(t) for t in targets}) > 1  # rows of different lengths share the padded block
    for row in range(len(texts)):
        assert ours[row] == pytest.approx(_hf_log_likelihood(model_dir, sources[row], targets[row]), abs=1e-3)


def test_gain_is_decoded_minus_copy_score_and_zero_when_the_decoder_copies(raw, model_dir, pairs):
    decisions = raw.copy_decisions([q for q, _ in pairs])
    differing = [d for d in decisions if d.decoded != d.query]
    assert differing, "the tiny model should change some queries"
    # A row whose answer is the query itself is not rescored: gain 0 (the other row is scored).
    batch = raw.tokenizer.pad(raw.tokenizer.encode_ids(raw.encoder_texts([pairs[0][0], pairs[1][0]])))
    copies = raw.tokenizer.encode_targets([pairs[0][0], pairs[1][0]], raw.options.max_new_tokens)
    judged = raw._judge(batch, None, [pairs[0][0], pairs[1][0]], [copies[0], copies[0]], copies, [[], []], None)
    assert (judged[0].decoded, judged[0].gain) == (pairs[0][0], 0.0) and judged[1].gain != 0.0
    d = differing[0]
    source = raw.tokenizer.encode_ids(raw.encoder_texts([d.query]))[0]
    decoded_ids = raw.generate_ids([d.query])[0]
    copy_ids = raw.tokenizer.encode_targets([d.query], raw.options.max_new_tokens)[0]
    expected = _hf_log_likelihood(model_dir, source, decoded_ids) - _hf_log_likelihood(model_dir, source, copy_ids)
    assert d.gain == pytest.approx(expected, abs=1e-3)


def test_margin_decides_between_decoded_and_query(model_dir, raw, pairs):
    queries = [q for q, _ in pairs]
    decisions = raw.copy_decisions(queries)
    gains = sorted(d.gain for d in decisions if d.decoded != d.query)
    assert raw.correct(queries) == [d.decoded for d in decisions]
    keep_all = SpellCorrector(model_dir, "torch", max_new_tokens=24, copy_margin=gains[-1] + 1.0)
    assert keep_all.correct(queries) == [d.query for d in decisions]
    middle = gains[len(gains) // 2] - 1e-6
    partial = SpellCorrector(model_dir, "torch", max_new_tokens=24, copy_margin=middle)
    expected = [d.choose(middle) for d in decisions]
    assert partial.correct(queries) == expected
    # an answer judged whole stands or falls by its gain
    assert all(out == (d.decoded if d.gain > middle else d.query) for out, d in zip(expected, decisions) if not d.partials)
    assert expected != [d.decoded for d in decisions] and expected != [d.query for d in decisions]


def test_sweep_figures_follow_from_the_gains():
    decisions = [
        CopyDecision("helo", "hello", 3.0),  # misspelled, fixed if margin < 3
        CopyDecision("wrld", "word", 1.0),  # misspelled, wrong fix either way
        CopyDecision("abba", "abbey", 0.5),  # correct query, broken if margin < 0.5
        CopyDecision("queen", "queen", 0.0),  # correct query, decoder copied
    ]
    refs = ["hello", "world", "abba", "queen"]
    points = calibration.sweep(decisions, refs)
    assert [p.margin for p in points] == [None, -0.5, 0.75, 2.0, 4.0]  # -0.5: below every gain
    assert [(p.fixed, p.false_positive_rate, p.exact_match) for p in points] == [
        (0.5, 0.5, 0.5),
        (0.5, 0.5, 0.5),
        (0.5, 0.0, 0.75),
        (0.5, 0.0, 0.75),
        (0.0, 0.0, 0.5),
    ]
    assert calibration.choose(points).margin == 2.0  # ties go to the more conservative margin
    assert calibration.choose(points, objective="fixed").margin == 2.0  # same fix rate: the larger margin
    assert calibration.choose(points, objective="fixed", max_fpr=0.0).margin == 2.0
    with pytest.raises(ValueError, match="objective"):
        calibration.choose(points, objective="f1")


def test_split_check_chooses_on_even_rows_and_scores_odd_rows():
    decisions = [
        CopyDecision("helo", "hello", 3.0), CopyDecision("helo", "hello", 0.5),  # even: fix needs margin < 3
        CopyDecision("abba", "abbey", 1.0), CopyDecision("abba", "abbey", 2.0),  # even: keep needs margin >= 1
    ]
    refs = ["hello", "hello", "abba", "abba"]
    on_even, on_odd = calibration.split_check(decisions, refs)
    assert on_even.margin == 2.0 and (on_even.fixed, on_even.false_positive_rate) == (1.0, 0.0)
    assert (on_odd.fixed, on_odd.false_positive_rate) == (0.0, 0.0)  # odd gains 0.5 and 2.0: both kept at 2.0


def test_no_margin_meets_an_impossible_fpr_bound():
    points = calibration.sweep([CopyDecision("a", "b", 1.0)], ["a"])
    assert calibration.choose(points, max_fpr=0.0).margin == 2.0  # keeping the query is always allowed
    with pytest.raises(ValueError, match="false-positive"):
        calibration.choose(points[:1], max_fpr=0.0)


def test_calibrate_cli_saves_the_margin_that_correct_and_evaluate_then_use(model_dir, tmp_path, pairs, capsys):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(model_dir, model)
    dev = tmp_path / "dev.jsonl"
    dev.write_text("".join(json.dumps({"query": q, "correction": c}) + "\n" for q, c in pairs), encoding="utf-8")
    assert main(["calibrate", "--model", str(model), "--data", str(dev), "--no-progress", "--rule", "margins"]) == 0
    out = capsys.readouterr().out
    assert "**chosen**" in out and "saved decoding.copy_margin=" in out and "carry-over check" in out
    card = json.loads((model / "spellfix.json").read_text())
    margin = card["decoding"]["copy_margin"]
    assert card["decoding"]["copy_margin_chosen_on"]["rows"] == len(pairs)
    assert card["decoding"]["known_word_zipf"] == 2.5  # the lexicon the margins were chosen with travels with them
    fixer = SpellCorrector(model, "torch")
    assert fixer.copy_margin == margin
    result = tmp_path / "eval.json"
    assert main(["evaluate", "--model", str(model), "--data", str(dev), "--json", str(result)]) == 0
    metrics = json.loads(result.read_text())
    assert metrics["copy_margin"] == margin
    decisions = SpellCorrector(model, "torch", copy_margin=None).copy_decisions([q for q, _ in pairs])
    best = calibration.choose(calibration.sweep(decisions, [c for _, c in pairs], separate_real_word=True))
    assert (margin, card["decoding"]["real_word_margin"]) == (best.margin, best.real_word_margin)
    assert best.real_word_margin is not None  # the tiny model makes both kinds of change here
    assert metrics["exact_match"] == pytest.approx(best.exact_match) and metrics["real_word_margin"] == best.real_word_margin
    assert main(["calibrate", "--model", str(model), "--data", str(dev), "--no-progress", "--rule", "margins", "--single-margin", "--known-word-zipf", "off"]) == 0
    decoding = json.loads((model / "spellfix.json").read_text())["decoding"]
    assert decoding["real_word_margin"] is None and decoding["known_word_zipf"] is None


def test_a_bad_margin_in_spellfix_json_names_the_file(model_dir, tmp_path):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(model_dir, model)
    card = json.loads((model / "spellfix.json").read_text())
    card["decoding"] = {"copy_margin": "high"}
    (model / "spellfix.json").write_text(json.dumps(card))
    with pytest.raises(ValueError, match=r"spellfix\.json: decoding\.copy_margin"):
        SpellCorrector(model, "torch")
    with pytest.raises(ValueError, match="copy_margin must be"):
        SpellCorrector(model_dir, "torch", copy_margin="high")


def test_cli_copy_margin_flag_overrides_the_saved_one(model_dir, capsys):
    queries = [q for q, _ in dev_pairs(6, offset=30)]
    assert main(["correct", "--model", str(model_dir), "--copy-margin", "1e9", *queries]) == 0
    kept = capsys.readouterr().out.split("\n")[:-1]
    assert kept == [" ".join(q.lower().split()) for q in queries]
    assert main(["correct", "--model", str(model_dir), "--copy-margin", "soon", queries[0]]) == 2
    assert "--copy-margin" in capsys.readouterr().err


def test_calibrate_limit_spreads_rows_over_the_file(model_dir, tmp_path, pairs, capsys):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(model_dir, model)
    dev = tmp_path / "dev.jsonl"
    dev.write_text("".join(json.dumps({"query": q, "correction": c}) + "\n" for q, c in pairs), encoding="utf-8")
    assert main(["calibrate", "--model", str(model), "--data", str(dev), "--limit", "12", "--no-progress"]) == 0
    assert json.loads((model / "spellfix.json").read_text())["decoding"]["copy_margin_chosen_on"]["rows"] == 12
    assert main(["calibrate", "--model", str(model), "--data", str(dev), "--limit", "0", "--no-progress"]) == 2
    assert "--limit" in capsys.readouterr().err


def test_a_shipped_model_name_resolves_to_models_dir(model_dir, tmp_path, monkeypatch):
    import shutil

    from spellfix import modeling

    shutil.copytree(model_dir, tmp_path / "models" / "spell-small-cpu")
    monkeypatch.setattr(modeling, "SHIPPED_MODELS_DIR", tmp_path / "models")
    monkeypatch.chdir(tmp_path)  # "spell-small-cpu" is not a path from here
    assert modeling.resolve_model_dir("spell-small-cpu") == tmp_path / "models" / "spell-small-cpu"
    assert modeling.resolve_model_dir("facebook/bart-base") == "facebook/bart-base"
    assert SpellCorrector("spell-small-cpu", "torch").correct(["beatles"]) == SpellCorrector(model_dir, "torch").correct(["beatles"])


def test_real_word_changes_are_those_that_only_touch_dictionary_words():
    from spellfix.inference.changes import is_real_word_change, word_edits
    from spellfix.lexical.lexicon import lexicon as known_words

    lexicon = known_words(None)
    assert [(e.start, e.end, e.words) for e in word_edits("thin lizzy", "this lizzy", lexicon)] == [(0, 1, ("this",))]
    assert is_real_word_change("thin lizzy", "this lizzy", lexicon)  # "lizzy" is untouched
    assert not is_real_word_change("accomodation", "accommodation", lexicon)  # a non-word fixed
    assert not is_real_word_change("to gether", "together", lexicon)  # "gether" is no word
    assert is_real_word_change("hello world", "hello big world", lexicon)  # nothing misspelled asked for it
    assert not is_real_word_change("abba", "abba", lexicon)


def test_each_kind_of_change_beats_its_own_margin(model_dir, raw, pairs):
    queries = [q for q, _ in pairs]
    decisions = raw.copy_decisions(queries)
    kinds = {d.real_word for d in decisions if d.decoded != d.query}
    assert kinds == {False, True}, "the tiny model should make both kinds of change on these rows"
    assert any(d.partials for d in decisions), "and answers with several edits, judged edit by edit"
    whole = [d for d in decisions if not d.partials]
    only_non_word = SpellCorrector(model_dir, "torch", max_new_tokens=24, copy_margin=-1e9, real_word_margin=1e9)
    outputs = only_non_word.correct(queries)
    assert outputs == [d.choose(-1e9, 1e9) for d in decisions]
    assert [outputs[decisions.index(d)] for d in whole] == [d.query if d.real_word else d.decoded for d in whole]
    only_real_word = SpellCorrector(model_dir, "torch", max_new_tokens=24, copy_margin=1e9, real_word_margin=-1e9)
    outputs = only_real_word.correct(queries)
    assert outputs == [d.choose(1e9, -1e9) for d in decisions]
    assert [outputs[decisions.index(d)] for d in whole] == [d.decoded if d.real_word else d.query for d in whole]
    # the margin off means the raw decoder output, whatever the real-word margin says
    off = SpellCorrector(model_dir, "torch", max_new_tokens=24, copy_margin=None, real_word_margin=1e9)
    assert off.correct(queries) == [d.decoded for d in decisions] and off.real_word_margin is None


def _decisions_of_both_kinds() -> tuple[list[CopyDecision], list[str]]:
    rows = [
        (CopyDecision("helo", "hello", 3.0), "hello"),  # non-word fixed
        (CopyDecision("wrld", "world", 1.0), "world"),  # non-word fixed, with little to spare
        (CopyDecision("halen", "helen", 0.5), "halen"),  # a name broken (non-word change)
        (CopyDecision("thw", "the", 2.5, real_word=False), "the"),
        (CopyDecision("form me", "from me", 1.5, real_word=True), "from me"),  # real-word fixed
        (CopyDecision("thin lizzy", "this lizzy", 2.0, real_word=True), "thin lizzy"),  # broken
        (CopyDecision("big star", "big stars", 4.0, real_word=True), "big star"),  # broken, confident
        (CopyDecision("queen", "queen", 0.0), "queen"),
    ]
    return [d for d, _ in rows], [r for _, r in rows]


def test_joint_sweep_keeps_the_pairs_no_other_pair_beats():
    decisions, refs = _decisions_of_both_kinds()
    points = calibration.sweep(decisions, refs, separate_real_word=True)
    assert all(p.real_word_margin is not None for p in points)
    for p in points:  # each point's figures are what the two margins really give
        assert p == calibration._score(decisions, refs, p.margin, p.real_word_margin)
    # brute force over every pair of thresholds: the best fix rate within each false-positive budget
    non_word = calibration._thresholds([d.gain for d in decisions if d.decoded != d.query and not d.real_word])
    real_word = calibration._thresholds([d.gain for d in decisions if d.decoded != d.query and d.real_word])
    grid = [calibration._score(decisions, refs, a, b) for a in non_word for b in real_word]
    for budget in (0.0, 0.25, 0.5, 0.75, 1.0):
        best = max(g.fixed for g in grid if g.false_positive_rate <= budget)
        assert calibration.choose(points, objective="fixed", max_fpr=budget).fixed == best
    assert max(g.exact_match for g in grid) == calibration.choose(points).exact_match
    chosen = calibration.choose(points, objective="fixed", max_fpr=0.25)
    # helo, wrld, thw fixed; "form me" would cost both confident real-word breaks; nothing broken
    assert (chosen.fixed, chosen.false_positive_rate) == (0.75, 0.0)
    assert (chosen.margin, chosen.real_word_margin) == (0.75, 5.0)
    single = calibration.sweep(decisions, refs)  # one margin cannot do as well
    assert max(p.fixed for p in single if p.false_positive_rate <= 0.25) == 0.5


def test_joint_sweep_falls_back_to_one_margin_without_both_kinds():
    decisions = [CopyDecision("helo", "hello", 3.0), CopyDecision("abba", "abbey", 0.5)]
    points = calibration.sweep(decisions, ["hello", "abba"], separate_real_word=True)
    assert points == calibration.sweep(decisions, ["hello", "abba"])
    assert all(p.real_word_margin is None for p in points)


def test_saved_real_word_margin_is_used_and_a_bad_one_names_the_file(model_dir, tmp_path):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(model_dir, model)
    calibration.save_copy_margin(model, 1.25, real_word_margin=3.5, known_word_zipf=3.0, provenance={"rows": 2})
    fixer = SpellCorrector(model, "torch")
    assert (fixer.copy_margin, fixer.real_word_margin, fixer.known_word_zipf) == (1.25, 3.5, 3.0)
    with pytest.raises(ValueError, match="known_word_zipf: 0.5 is below 1.0"):
        SpellCorrector(model, "torch", known_word_zipf=0.5)
    assert SpellCorrector(model, "torch", real_word_margin=None).real_word_margin is None
    card = json.loads((model / "spellfix.json").read_text())
    card["decoding"]["real_word_margin"] = [3]
    (model / "spellfix.json").write_text(json.dumps(card))
    with pytest.raises(ValueError, match=r"spellfix\.json: decoding\.real_word_margin"):
        SpellCorrector(model, "torch")
    card["decoding"].update(real_word_margin=3.0, known_word_zipf=0.5)
    (model / "spellfix.json").write_text(json.dumps(card))
    with pytest.raises(ValueError, match=r"spellfix\.json: decoding\.known_word_zipf: 0.5 is below 1.0"):
        SpellCorrector(model, "torch")


@pytest.mark.filterwarnings("ignore:query .* tokens, more than max_source_length")  # the tiny model's 32: the annotation is cut, alike on both sides
def test_candidate_answers_are_scored_in_the_same_pass(model_dir, tmp_path):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(model_dir, model)
    card = json.loads((model / "spellfix.json").read_text())
    card["candidates"] = {"enabled": True}  # annotated input: the tiny model was not trained on it, the scoring still holds
    (model / "spellfix.json").write_text(json.dumps(card))
    fixer = SpellCorrector(model, "torch", max_new_tokens=24, copy_margin=None, candidate_answers=2)
    queries = ["the beatles yesterdy", "wireles hedphones", "queen"]
    decisions = fixer.copy_decisions(queries)
    for query, decision in zip(queries, decisions):
        words = query.split()
        expected = {
            " ".join([*words[: item.position], candidate, *words[item.position + 1 :]]): rank
            for item in fixer._annotator.word_candidates(query)
            for rank, candidate in enumerate(item.candidates[:2], 1)
        }
        taken = {query, decision.decoded, *(a.text for a in decision.partials)}
        assert {a.text: a.candidate_rank for a in decision.alternatives} == {t: r for t, r in expected.items() if t not in taken}
        source = fixer.tokenizer.encode_ids(fixer.encoder_texts([query]))[0]
        copy_ids = fixer.tokenizer.encode_targets([query], fixer.options.max_new_tokens)[0]
        for answer in decision.alternatives:  # gain = teacher-forced logP(alternative) - logP(query)
            ids = fixer.tokenizer.encode_targets([answer.text], fixer.options.max_new_tokens)[0]
            expected_gain = _hf_log_likelihood(model, source, ids) - _hf_log_likelihood(model, source, copy_ids)
            assert answer.gain == pytest.approx(expected_gain, abs=1e-3)
            assert min(answer.word_slack, answer.real_word_slack) == answer.gain
    assert decisions[0].alternatives and decisions[1].alternatives and not decisions[2].alternatives
    assert not decisions[0].judged_whole
    # the margins choose among all answers, highest gain first
    best = max(decisions[0].answers(), key=lambda a: a.gain)
    assert decisions[0].choose(-1e9, -1e9) == best.text
    plain = SpellCorrector(model, "torch", max_new_tokens=24, copy_margin=None).copy_decisions(queries)
    assert all(not d.alternatives for d in plain)  # candidate_answers defaults to the saved setting: 0 here
