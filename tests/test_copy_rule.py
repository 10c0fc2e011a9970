"""Judging a correction edit by edit, the known-word lexicon, and the exact joint margin sweep."""

from __future__ import annotations

import itertools
import math

import pytest

from spellfix import calibration
from spellfix.inference.changes import apply_edits, is_real_word_change, word_edits
from spellfix.inference.copy_rule import Answer, CopyDecision, edit_subsets, judged_edits, partial_answers
from spellfix.lexical.lexicon import check_known_word_zipf, lexicon

LEXICON = {"the", "clash", "class", "train", "in", "vain", "a", "b", "c", "d"}


def test_word_edits_split_same_length_runs_and_apply_back():
    edits = word_edits("train in vain teh clash", "train in vain the class", LEXICON)
    assert [(e.start, e.end, e.words, e.real_word) for e in edits] == [(3, 4, ("the",), False), (4, 5, ("class",), True)]
    merged = word_edits("to gether now", "together now", LEXICON)  # 2 words -> 1: one edit
    assert [(e.start, e.end, e.words) for e in merged] == [(0, 2, ("together",))]
    for query, decoded in [("a b c", "a c d"), ("teh clash", "the class"), ("x y z", "x"), ("a", "b c d")]:
        edits = word_edits(query, decoded, LEXICON)
        assert apply_edits(query, edits, [True] * len(edits)) == decoded
        assert apply_edits(query, edits, [False] * len(edits)) == query
    edits = word_edits("a b c", "a c d", LEXICON)  # drop "b", insert "d"
    assert apply_edits("a b c", edits, [True, False]) == "a c" and apply_edits("a b c", edits, [False, True]) == "a b c d"


def test_partial_answers_carry_the_slack_of_their_weakest_edit():
    edits = word_edits("teh clash", "the class", LEXICON)
    assert edit_subsets(2) == [(False, True), (True, False), (True, True)]
    # logP: query -10, "teh class" -9.5, "the clash" -4, "the class" -3.5
    answers = {a.text: a for a in partial_answers("teh clash", edits, [-9.5, -4.0, -3.5], -10.0)}
    assert answers["the clash"] == Answer("the clash", 6.0, word_slack=6.0)
    assert answers["teh class"] == Answer("teh class", 0.5, real_word_slack=0.5)
    # "the class": without the fix it loses 6.0, without the real-word change only 0.5
    assert answers["the class"] == Answer("the class", 6.5, word_slack=6.0, real_word_slack=0.5)
    decision = CopyDecision("teh clash", "the class", 6.5, False, tuple(answers.values()))
    assert decision.choose(1.0, 2.0) == "the clash"  # the real-word change does not pay for itself
    assert decision.choose(1.0, 0.4) == "the class"
    assert decision.choose(7.0, 0.6) == "teh clash"  # nothing pays: keep the query
    assert decision.choose(None) == "the class"  # no rule: the decoder's answer
    with pytest.raises(ValueError, match="3 scores for 1 subsets"):
        partial_answers("a", word_edits("a", "b", LEXICON), [1.0, 2.0, 3.0], 0.0)


def test_an_answer_judged_whole_is_the_plain_margin_rule():
    fix, real = CopyDecision("helo", "hello", 3.0), CopyDecision("form", "from", 3.0, real_word=True)
    assert [fix.choose(2.9), fix.choose(3.0), fix.choose(2.9, 5.0)] == ["hello", "helo", "hello"]
    assert [real.choose(2.9), real.choose(2.9, 5.0), real.choose(5.0, 2.9)] == ["from", "form", "from"]
    assert CopyDecision("queen", "queen", 0.0).answers() == ()


def test_only_a_few_edits_are_judged_one_by_one():
    assert judged_edits(word_edits("a b", "c b", LEXICON)) == []  # one edit: judged whole
    assert len(judged_edits(word_edits("a b c", "b c d", LEXICON))) == 2
    four = word_edits("a b c d", "w x y z", LEXICON)
    assert len(four) == 4 and judged_edits(four) == []


def _decisions_with_partials() -> tuple[list[CopyDecision], list[str]]:
    def judged(query: str, decoded: str, scores: list[float], query_score: float) -> CopyDecision:
        edits = word_edits(query, decoded, LEXICON)
        partials = partial_answers(query, edits, scores, query_score)
        return CopyDecision(query, decoded, scores[-1] - query_score, is_real_word_change(query, decoded, LEXICON), partials)

    rows = [
        (CopyDecision("helo", "hello", 3.0), "hello"),
        (CopyDecision("wrld", "world", 1.0), "world"),
        (CopyDecision("halen", "helen", 0.5), "halen"),
        (CopyDecision("form me", "from me", 1.5, real_word=True), "from me"),
        (CopyDecision("thin lizzy", "this lizzy", 2.0, real_word=True), "thin lizzy"),
        (judged("teh clash", "the class", [-9.5, -4.0, -3.5], -10.0), "the clash"),  # the fix alone is right
        (judged("teh clash", "the class", [-8.0, -7.0, -2.0], -10.0), "the clash"),
        (judged("the clash", "a class", [-6.0, -5.0, -3.0], -7.0), "the clash"),  # a correct query
        (CopyDecision("queen", "queen", 0.0), "queen"),
    ]
    return [d for d, _ in rows], [r for _, r in rows]


def test_joint_sweep_is_exact_with_answers_judged_edit_by_edit():
    decisions, refs = _decisions_with_partials()
    points = calibration.sweep(decisions, refs, separate_real_word=True)
    for p in points:  # each point's figures are what the two margins really give
        assert p == calibration._score(decisions, refs, p.margin, p.real_word_margin)
    word, real_word = calibration.critical_values(decisions)
    grid = [calibration._score(decisions, refs, a, b) for a in calibration._thresholds(word) for b in calibration._thresholds(real_word)]
    for budget in (0.0, 0.5, 1.0):
        best = max(g.fixed for g in grid if g.false_positive_rate <= budget)
        assert calibration.choose(points, objective="fixed", max_fpr=budget).fixed == best
    assert max(g.exact_match for g in grid) == calibration.choose(points).exact_match
    # one margin: every critical value of either kind is tried
    single = calibration.sweep(decisions, refs)
    brute = [calibration._score(decisions, refs, m) for m in calibration._thresholds(word + real_word)]
    assert max(p.exact_match for p in single) == max(g.exact_match for g in brute)


def test_joint_sweep_is_exact_with_candidate_alternatives():
    decisions, refs = _decisions_with_partials()
    alternatives = [
        (CopyDecision("wand like hell", "wand like hell", 0.0, alternatives=(Answer("want like hell", 2.5, real_word_slack=2.5, candidate_rank=1),)), "run like hell"),
        (CopyDecision("shakedown sreet", "shakedown sreet", 0.0, alternatives=(Answer("shakedown street", 1.2, word_slack=1.2, candidate_rank=1),)), "shakedown street"),
        (CopyDecision("mdot deals", "mot deals", 0.8, alternatives=(Answer("dot deals", 1.6, word_slack=1.6, candidate_rank=2),)), "mdot deals"),
    ]
    decisions += [d for d, _ in alternatives]
    refs += [r for _, r in alternatives]
    assert [a.text for a in decisions[-1].answers()] == ["dot deals", "mot deals"]  # highest gain first
    assert not decisions[-2].judged_whole and decisions[-2].choose(1.0, 5.0) == "shakedown street"
    points = calibration.sweep(decisions, refs, separate_real_word=True)
    for p in points:
        assert p == calibration._score(decisions, refs, p.margin, p.real_word_margin)
    word, real_word = calibration.critical_values(decisions)
    grid = [calibration._score(decisions, refs, a, b) for a in calibration._thresholds(word) for b in calibration._thresholds(real_word)]
    assert max(g.exact_match for g in grid) == calibration.choose(points).exact_match


def test_lexicon_adds_frequent_wordfreq_words_to_symspells_dictionary():
    plain, frequent, common = lexicon(None), lexicon(2.5), lexicon(4.0)
    assert {"tv", "dvd", "chili"} <= frequent and not {"tv", "dvd", "chili"} & plain
    assert plain < common < frequent
    assert "xqzv" not in frequent
    assert is_real_word_change("tv stands", "the stands", frequent) and not is_real_word_change("tv stands", "the stands", plain)
    with pytest.raises(ValueError, match="below 1.0"):
        check_known_word_zipf(0.5)
    assert math.isinf(Answer("x", 1.0).word_slack)


def test_every_subset_of_edits_is_scored_once():
    for count in (1, 2, 3):
        subsets = edit_subsets(count)
        assert len(subsets) == 2**count - 1 == len(set(subsets)) and subsets[-1] == (True,) * count
        assert set(subsets) == {k for k in itertools.product((False, True), repeat=count) if any(k)}
