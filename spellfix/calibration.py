"""Choose a model's copy margin on a dev set and save it with the model (``spellfix calibrate``).

Why: a search-query corrector must not "fix" queries that were fine (artist names, rare words). A
small model decodes *something* for every query; the copy margin keeps the query unless the model
prefers its correction by more than ``margin`` nats (``logP(decoded) - logP(query)``). Answers that
only replace dictionary words by other words (real-word changes, "thin lizzy" -> "this lizzy") are
wrong far more often than fixes of non-words, so they get their own, usually larger, margin. Both
are picked on the dev set by decoding it once: every margin's figures follow from the recorded
gains, so the sweep is exact and costs no further decoding. The margins are written to the model's
``spellfix.json`` (``decoding.copy_margin``, ``decoding.real_word_margin``), so export, ONNX
Runtime, TensorRT and Triton all use them.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Mapping, Sequence

import numpy as np

from spellfix.evaluation import normalize
from spellfix.fsutil import write_json_atomic
from spellfix.inference.acceptance import AcceptanceModel, answer_features, fit_logistic
from spellfix.inference.copy_rule import Answer, CopyDecision
from spellfix.inference.corrector import SpellCorrector
from spellfix.lexical.context import BigramContext

#: exact_match: share of all dev rows right (fixes and broken queries weigh the same);
#: fixed: the fix rate alone, for use with a false-positive budget (``max_fpr``)
OBJECTIVES = ("exact_match", "fixed")


def record_decisions(corrector: SpellCorrector, queries: Sequence[str], *, chunk_size: int = 256, progress: bool = False) -> list[CopyDecision]:
    """Decode ``queries`` once with the margin off and keep each row's answer and gain."""
    from tqdm.auto import tqdm

    decisions: list[CopyDecision] = []
    for start in tqdm(range(0, len(queries), chunk_size), desc="decode dev", unit="chunk", disable=not progress):
        decisions += corrector.copy_decisions(list(queries[start : start + chunk_size]))
    return decisions


@dataclass(frozen=True)
class MarginPoint:
    """Dev figures at one copy margin (``None``: no margin, the raw decoder output)."""

    margin: float | None
    fixed: float  # share of misspelled rows corrected exactly
    false_positive_rate: float  # share of correct rows changed
    exact_match: float  # share of all rows right
    real_word_margin: float | None = None  # for answers that only replace dictionary words (None: ``margin``)


def sweep(decisions: Sequence[CopyDecision], references: Sequence[str], *, separate_real_word: bool = False) -> list[MarginPoint]:
    """Figures at every margin that changes an outcome: no margin (every decoded answer), one
    threshold between each pair of neighbouring critical values (midpoints, so a margin never sits
    on a measured value), and one above them all (always keep the query). The critical values are
    the gains of answers judged whole and the slacks of partial answers (``copy_rule``).

    ``separate_real_word``: sweep the copy margin and the real-word margin jointly. A row judged
    whole depends on one of them only, so fixed rows and changed rows add up over the two kinds of
    change; rows judged edit by edit or with candidate answers are scored on the whole grid of
    margin pairs (at most ``MAX_GRID`` values per margin: each point's figures stay exact, the
    grid between them is thinned). Of all pairs,
    only those no other pair beats on both counts (more fixed, fewer changed) are returned: both
    objectives pick among them. Falls back to one margin when the dev set has no change of one kind."""
    if len(decisions) != len(references):
        raise ValueError(f"{len(decisions)} decisions for {len(references)} references")
    if not decisions:
        raise ValueError("calibration needs at least one dev row")
    refs = [normalize(r) for r in references]
    word_values, real_word_values = critical_values(decisions)
    if separate_real_word and word_values and real_word_values:
        return _joint_sweep(decisions, refs, word_values, real_word_values)
    either = [min(a.word_slack, a.real_word_slack) for d in decisions for a in d.answers()]
    margins: list[float | None] = [None, *_thresholds(either)]
    return [_score(decisions, refs, m) for m in margins]


def critical_values(decisions: Sequence[CopyDecision]) -> tuple[list[float], list[float]]:
    """The values where an outcome can flip: for the copy margin and for the real-word margin."""
    answers = [a for d in decisions for a in d.answers()]
    word = [a.word_slack for a in answers if math.isfinite(a.word_slack)]
    real_word = [a.real_word_slack for a in answers if math.isfinite(a.real_word_slack)]
    return word, real_word


def _thresholds(gains: Sequence[float]) -> list[float]:
    """Below every gain, between neighbouring gains, and above every gain (ascending)."""
    distinct = sorted(set(gains))
    if not distinct:
        return [0.0]
    return [distinct[0] - 1.0, *((a + b) / 2 for a, b in zip(distinct, distinct[1:])), distinct[-1] + 1.0]


#: the joint sweep tries at most this many values per margin (evenly spread over the critical
#: values, the lowest and highest kept): rows with several answers are scored on the whole grid,
#: and dev with candidate answers has thousands of critical values per axis
MAX_GRID = 512


def _grid(thresholds: Sequence[float]) -> np.ndarray:
    values = np.asarray(thresholds)
    if values.size <= MAX_GRID:
        return values
    return values[np.unique(np.linspace(0, values.size - 1, MAX_GRID).round().astype(int))]


def _joint_sweep(
    decisions: Sequence[CopyDecision], refs: Sequence[str], word_values: Sequence[float], real_word_values: Sequence[float]
) -> list[MarginPoint]:
    misspelled = sum(d.query != r for d, r in zip(decisions, refs))
    correct = len(refs) - misspelled
    m_nw, m_rw = _grid(_thresholds(word_values)), _grid(_thresholds(real_word_values))
    fixed = np.zeros((m_nw.size, m_rw.size), dtype=np.int64)
    changed = np.zeros_like(fixed)
    # rows judged whole: one margin each, so their counts are a curve along one axis
    for real_word, margins, axis in ((False, m_nw, 0), (True, m_rw, 1)):
        rows = [(d.gain, d.query != r and d.decoded == r, d.query == r) for d, r in zip(decisions, refs)
                if d.judged_whole and d.decoded != d.query and d.real_word == real_word]
        if not rows:
            continue
        gains, fixes, breaks = (np.array(column) for column in zip(*rows))
        taken = gains[None, :] > margins[:, None]  # which answers replace the query, per margin
        fixed += np.expand_dims(taken @ fixes.astype(np.int64), 1 - axis)
        changed += np.expand_dims(taken @ breaks.astype(np.int64), 1 - axis)
    # rows judged edit by edit or with alternatives: the best answer that pays, on every pair of margins
    for d, r in zip(decisions, refs):
        if d.judged_whole:
            continue
        undecided = np.ones_like(fixed, dtype=bool)
        for answer in d.answers():
            pays = undecided & (answer.word_slack > m_nw)[:, None] & (answer.real_word_slack > m_rw)[None, :]
            if d.query == r:
                changed += pays
            elif answer.text == r:
                fixed += pays
            undecided &= ~pays
    fixed, changed = fixed.ravel(), changed.ravel()
    nw_index, rw_index = np.divmod(np.arange(fixed.size), m_rw.size)
    # fewest changed first; then most fixed; then the larger (more conservative) margins
    order = np.lexsort((-m_nw[nw_index], -m_rw[rw_index], -fixed, changed))
    points: list[MarginPoint] = []
    best_fixed = -1
    for k in order:
        if fixed[k] > best_fixed:
            best_fixed = int(fixed[k])
            points.append(MarginPoint(
                margin=float(m_nw[nw_index[k]]),
                real_word_margin=float(m_rw[rw_index[k]]),
                fixed=fixed[k] / misspelled if misspelled else math.nan,
                false_positive_rate=changed[k] / correct if correct else math.nan,
                exact_match=(fixed[k] + correct - changed[k]) / len(refs),
            ))
    return points[::-1]  # like the one-margin sweep: from the most permissive to the most conservative


def _score(decisions: Sequence[CopyDecision], refs: Sequence[str], margin: float | None, real_word_margin: float | None = None) -> MarginPoint:
    outputs = [decision.choose(margin, real_word_margin) for decision in decisions]
    return _figures([d.query for d in decisions], outputs, refs, margin=margin, real_word_margin=real_word_margin)


def _figures(queries: Sequence[str], outputs: Sequence[str], refs: Sequence[str], *, margin: float | None, real_word_margin: float | None = None) -> MarginPoint:
    misspelled = fixed = correct = changed = right = 0
    for query, output, ref in zip(queries, outputs, refs):
        right += output == ref
        if query == ref:
            correct += 1
            changed += output != ref
        else:
            misspelled += 1
            fixed += output == ref
    return MarginPoint(
        margin=margin,
        real_word_margin=real_word_margin,
        fixed=fixed / misspelled if misspelled else math.nan,
        false_positive_rate=changed / correct if correct else math.nan,
        exact_match=right / len(refs),
    )


def choose(points: Sequence[MarginPoint], *, objective: str = "exact_match", max_fpr: float | None = None) -> MarginPoint:
    """The best point: highest ``objective`` among points whose false-positive rate is at most
    ``max_fpr`` (when given); ties go to fewer false positives, then the larger margin (the more
    conservative corrector)."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    allowed = [p for p in points if max_fpr is None or not p.false_positive_rate > max_fpr]
    if not allowed:
        raise ValueError(f"no margin keeps the false-positive rate at or below {max_fpr}")

    def key(p: MarginPoint) -> tuple[float, float, float, float]:
        value = p.exact_match if objective == "exact_match" else p.fixed
        return (
            value,
            -p.false_positive_rate,
            -math.inf if p.margin is None else p.margin,
            -math.inf if p.real_word_margin is None else p.real_word_margin,
        )

    return max(allowed, key=key)


def split_by_word(queries: Sequence[str], references: Sequence[str]) -> tuple[list[int], list[int]]:
    """Rows to fit on and rows held out, about half each, so that no corrected word and no query
    text is on both sides: every misspelled row goes with the words its correction changes, a
    correct row with its misspelled twin (the same correction), and whatever shares a word or a
    text is one group (union-find). A group's side comes from a hash of its name: stable across
    runs and machines. Why: dev pairs each misspelled query with the same phrase spelled right, and
    a rule fitted on "wireles hedphones" must not be scored on "wireless headphones".
    """
    parent: dict[str, str] = {}

    def find(key: str) -> str:
        parent.setdefault(key, key)
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    def union(a: str, b: str) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    names = []
    for query, reference in zip(queries, references):
        query, reference = normalize(query), normalize(reference)
        name = "text:" + reference
        find(name)
        union(name, "text:" + query)
        for word in set(reference.split()) - set(query.split()):
            union(name, "word:" + word)
        names.append(name)
    fit, held_out = [], []
    for row, name in enumerate(names):
        digest = hashlib.sha256(find(name).encode("utf-8")).digest()
        (held_out if digest[0] & 1 else fit).append(row)
    return fit, held_out


def even_odd(count: int) -> tuple[list[int], list[int]]:
    """The carry-over check's default split: even rows to fit, odd rows held out."""
    return list(range(0, count, 2)), list(range(1, count, 2))


def split_check(
    decisions: Sequence[CopyDecision],
    references: Sequence[str],
    *,
    objective: str = "exact_match",
    max_fpr: float | None = None,
    separate_real_word: bool = False,
    split: tuple[Sequence[int], Sequence[int]] | None = None,
) -> tuple[MarginPoint, MarginPoint]:
    """How well a margin chosen on dev carries over: choose on one part of the rows (``split``:
    (fit rows, held-out rows); default even / odd), score on the other.

    Returns (the point chosen on the fit rows, the same margin's figures on the held-out rows)."""
    even, odd = split if split is not None else even_odd(len(decisions))
    if len(odd) == 0 or len(even) == 0:
        raise ValueError("the split check needs rows on both sides")
    points = sweep([decisions[i] for i in even], [references[i] for i in even], separate_real_word=separate_real_word)
    chosen = choose(points, objective=objective, max_fpr=max_fpr)
    held_out = _score([decisions[i] for i in odd], [normalize(references[i]) for i in odd], chosen.margin, chosen.real_word_margin)
    return chosen, held_out


#: per dev row, its answers (highest gain first) with their acceptance features
AnswerExamples = Sequence[Sequence[tuple[Answer, list[float]]]]


def acceptance_examples(
    decisions: Sequence[CopyDecision], lexicon: Collection[str], zipf: Mapping[str, float], context: BigramContext
) -> list[list[tuple[Answer, list[float]]]]:
    """Per row, its answers (highest gain first) with their acceptance features."""
    return [[(a, answer_features(d.query, a, lexicon, zipf, context)) for a in d.answers()] for d in decisions]


def fit_acceptance(
    decisions: Sequence[CopyDecision], references: Sequence[str], examples: AnswerExamples, *, l2: float = 1.0
) -> AcceptanceModel:
    """Fit the acceptance model on dev answers: an answer that is the reference of a misspelled
    query should be given (1), any answer to a correct query should not (0). A wrong answer to a
    misspelled query is left out: giving it or the query scores the same."""
    refs = [normalize(r) for r in references]
    features, labels = [], []
    for decision, ref, row in zip(decisions, refs, examples):
        for answer, answer_features_ in row:
            if decision.query == ref or answer.text == ref:
                features.append(answer_features_)
                labels.append(float(answer.text == ref))
    if not features:
        raise ValueError("the dev set gives the acceptance model nothing to learn from: the decoder changed no query")
    return fit_logistic(np.asarray(features), np.asarray(labels), l2=l2)


def acceptance_sweep(
    model: AcceptanceModel, decisions: Sequence[CopyDecision], references: Sequence[str], examples: AnswerExamples
) -> list[MarginPoint]:
    """Dev figures at every threshold of ``model`` that changes an outcome (``MarginPoint.margin``
    holds the threshold), exactly: a row gives its j-th answer for thresholds in
    [max(scores of answers 1..j-1), score j), so each answer adds one interval to the counts."""
    refs = [normalize(r) for r in references]
    misspelled = sum(d.query != r for d, r in zip(decisions, refs))
    correct = len(refs) - misspelled
    intervals = []  # (low, high, fixes, breaks)
    for decision, ref, row in zip(decisions, refs, examples):
        earlier = -math.inf
        for answer, features in row:
            score = model.score(features)
            if score > earlier:
                intervals.append((earlier, score, decision.query != ref and answer.text == ref, decision.query == ref))
            earlier = max(earlier, score)
    scores = [high for _, high, _, _ in intervals]
    thresholds = np.array(_thresholds(scores))
    fixed = np.zeros(thresholds.size + 1, dtype=np.int64)
    changed = np.zeros_like(fixed)
    for low, high, fixes, breaks in intervals:  # lo <= t < hi, as +1/-1 at the interval's ends
        start, end = np.searchsorted(thresholds, [low, high], side="left")
        fixed[start] += fixes
        fixed[end] -= fixes
        changed[start] += breaks
        changed[end] -= breaks
    fixed, changed = np.cumsum(fixed)[:-1], np.cumsum(changed)[:-1]
    return [
        MarginPoint(
            margin=float(t),
            fixed=f / misspelled if misspelled else math.nan,
            false_positive_rate=c / correct if correct else math.nan,
            exact_match=(f + correct - c) / len(refs),
        )
        for t, f, c in zip(thresholds, fixed, changed)
    ]


def calibrate_acceptance(
    decisions: Sequence[CopyDecision],
    references: Sequence[str],
    examples: AnswerExamples,
    *,
    objective: str = "exact_match",
    max_fpr: float | None = None,
) -> tuple[AcceptanceModel, list[MarginPoint], MarginPoint]:
    """Fit the acceptance model, sweep its threshold and choose one: (model with that threshold,
    the sweep, the chosen point)."""
    model = fit_acceptance(decisions, references, examples)
    points = acceptance_sweep(model, decisions, references, examples)
    chosen = choose(points, objective=objective, max_fpr=max_fpr)
    return model.with_threshold(chosen.margin), points, chosen


def acceptance_split_check(
    decisions: Sequence[CopyDecision],
    references: Sequence[str],
    examples: AnswerExamples,
    *,
    objective: str = "exact_match",
    max_fpr: float | None = None,
    split: tuple[Sequence[int], Sequence[int]] | None = None,
) -> tuple[MarginPoint, MarginPoint]:
    """The carry-over check of the acceptance rule: fit and choose the threshold on the fit rows
    (``split``: (fit rows, held-out rows); default even / odd), score the held-out rows. Returns
    (the point chosen on the fit rows, its figures on the held-out rows)."""
    even, odd = split if split is not None else even_odd(len(decisions))
    if len(odd) == 0 or len(even) == 0:
        raise ValueError("the split check needs rows on both sides")
    model, _, chosen = calibrate_acceptance(
        [decisions[i] for i in even], [references[i] for i in even], [examples[i] for i in even], objective=objective, max_fpr=max_fpr
    )
    outputs = [next((a.text for a, f in examples[i] if model.accepts(f)), decisions[i].query) for i in odd]
    held_out = _figures([decisions[i].query for i in odd], outputs, [normalize(references[i]) for i in odd], margin=model.threshold)
    return chosen, held_out


def save_copy_margin(
    model_dir: str | os.PathLike[str],
    margin: float | None,
    *,
    real_word_margin: float | None = None,
    known_word_zipf: float | None = None,
    acceptance: AcceptanceModel | None = None,
    candidate_answers: int = 0,
    provenance: dict[str, Any] | None = None,
) -> Path:
    """Write ``decoding.copy_margin``, ``decoding.real_word_margin``, the lexicon they were chosen
    with (``decoding.known_word_zipf``) and the acceptance model, which decides instead of the
    margins when given (``decoding.acceptance``; None removes an old one) and how many dictionary
    candidates per word were judged as answers (``decoding.candidate_answers``), into the model
    dir's ``spellfix.json`` (atomically)."""
    from spellfix.inference import layout

    path = Path(model_dir) / layout.SETTINGS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; calibrate a spellfix model dir (training output, best/, final/ or an export dir)")
    card = json.loads(path.read_text(encoding="utf-8"))
    decoding = dict(card.get("decoding") or {})
    decoding["copy_margin"] = margin
    decoding["real_word_margin"] = real_word_margin
    decoding["known_word_zipf"] = known_word_zipf
    decoding["acceptance"] = acceptance.to_dict() if acceptance is not None else None
    decoding["candidate_answers"] = candidate_answers
    if provenance:
        decoding["copy_margin_chosen_on"] = provenance
    card["decoding"] = decoding
    write_json_atomic(path, card)
    return path


def format_sweep(points: Sequence[MarginPoint], chosen: MarginPoint, *, rows: int = 9, label: str = "copy margin") -> str:
    """A short table: no margin, the chosen one, and evenly spread points in between."""
    picks = {0, len(points) - 1, points.index(chosen)}
    if len(points) > 2:
        step = max(1, (len(points) - 1) // max(1, rows - 3))
        picks.update(range(0, len(points), step))
    joint = any(p.real_word_margin is not None for p in points)
    head = f"| {label} | real-word margin " if joint else f"| {label} "
    lines = [head + "| fixed | false positives | exact match |", "|---|" + ("---|" if joint else "") + "---:|---:|---:|"]
    for i in sorted(picks):
        p = points[i]
        label = "off" if p.margin is None else f"{p.margin:.3f}"
        if joint:
            label += " | " + ("same" if p.real_word_margin is None else f"{p.real_word_margin:.3f}")
        mark = " **chosen**" if p is chosen else ""
        lines.append(f"| {label}{mark} | {p.fixed:.1%} | {p.false_positive_rate:.1%} | {p.exact_match:.1%} |")
    return "\n".join(lines)
