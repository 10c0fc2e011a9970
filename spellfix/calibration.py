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

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from spellfix.evaluation import normalize
from spellfix.fsutil import write_json_atomic
from spellfix.inference.copy_rule import CopyDecision
from spellfix.inference.corrector import SpellCorrector

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
    change; rows judged edit by edit are scored on the whole grid of margin pairs. Of all pairs,
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


def _joint_sweep(
    decisions: Sequence[CopyDecision], refs: Sequence[str], word_values: Sequence[float], real_word_values: Sequence[float]
) -> list[MarginPoint]:
    misspelled = sum(d.query != r for d, r in zip(decisions, refs))
    correct = len(refs) - misspelled
    m_nw, m_rw = np.array(_thresholds(word_values)), np.array(_thresholds(real_word_values))
    fixed = np.zeros((m_nw.size, m_rw.size), dtype=np.int64)
    changed = np.zeros_like(fixed)
    # rows judged whole: one margin each, so their counts are a curve along one axis
    for real_word, margins, axis in ((False, m_nw, 0), (True, m_rw, 1)):
        rows = [(d.gain, d.query != r and d.decoded == r, d.query == r) for d, r in zip(decisions, refs)
                if not d.partials and d.decoded != d.query and d.real_word == real_word]
        if not rows:
            continue
        gains, fixes, breaks = (np.array(column) for column in zip(*rows))
        taken = gains[None, :] > margins[:, None]  # which answers replace the query, per margin
        fixed += np.expand_dims(taken @ fixes.astype(np.int64), 1 - axis)
        changed += np.expand_dims(taken @ breaks.astype(np.int64), 1 - axis)
    # rows judged edit by edit: the best answer that pays, on every pair of margins
    for d, r in zip(decisions, refs):
        if not d.partials:
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
    misspelled = fixed = correct = changed = right = 0
    for decision, ref in zip(decisions, refs):
        output = decision.choose(margin, real_word_margin)
        right += output == ref
        if decision.query == ref:
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


def split_check(
    decisions: Sequence[CopyDecision],
    references: Sequence[str],
    *,
    objective: str = "exact_match",
    max_fpr: float | None = None,
    separate_real_word: bool = False,
) -> tuple[MarginPoint, MarginPoint]:
    """How well a margin chosen on dev carries over: choose on the even rows, score on the odd ones.

    Returns (the point chosen on the even rows, the same margin's figures on the odd rows)."""
    even, odd = range(0, len(decisions), 2), range(1, len(decisions), 2)
    if len(odd) == 0:
        raise ValueError("the split check needs at least two dev rows")
    points = sweep([decisions[i] for i in even], [references[i] for i in even], separate_real_word=separate_real_word)
    chosen = choose(points, objective=objective, max_fpr=max_fpr)
    held_out = _score([decisions[i] for i in odd], [normalize(references[i]) for i in odd], chosen.margin, chosen.real_word_margin)
    return chosen, held_out


def save_copy_margin(
    model_dir: str | os.PathLike[str],
    margin: float | None,
    *,
    real_word_margin: float | None = None,
    known_word_zipf: float | None = None,
    provenance: dict[str, Any] | None = None,
) -> Path:
    """Write ``decoding.copy_margin``, ``decoding.real_word_margin`` and the lexicon they were chosen
    with (``decoding.known_word_zipf``) into the model dir's ``spellfix.json`` (atomically)."""
    from spellfix.inference import layout

    path = Path(model_dir) / layout.SETTINGS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; calibrate a spellfix model dir (training output, best/, final/ or an export dir)")
    card = json.loads(path.read_text(encoding="utf-8"))
    decoding = dict(card.get("decoding") or {})
    decoding["copy_margin"] = margin
    decoding["real_word_margin"] = real_word_margin
    decoding["known_word_zipf"] = known_word_zipf
    if provenance:
        decoding["copy_margin_chosen_on"] = provenance
    card["decoding"] = decoding
    write_json_atomic(path, card)
    return path


def format_sweep(points: Sequence[MarginPoint], chosen: MarginPoint, *, rows: int = 9) -> str:
    """A short table: no margin, the chosen one, and evenly spread points in between."""
    picks = {0, len(points) - 1, points.index(chosen)}
    if len(points) > 2:
        step = max(1, (len(points) - 1) // max(1, rows - 3))
        picks.update(range(0, len(points), step))
    joint = any(p.real_word_margin is not None for p in points)
    head = "| copy margin | real-word margin " if joint else "| copy margin "
    lines = [head + "| fixed | false positives | exact match |", "|---|" + ("---|" if joint else "") + "---:|---:|---:|"]
    for i in sorted(picks):
        p = points[i]
        label = "off" if p.margin is None else f"{p.margin:.3f}"
        if joint:
            label += " | " + ("same" if p.real_word_margin is None else f"{p.real_word_margin:.3f}")
        mark = " **chosen**" if p is chosen else ""
        lines.append(f"| {label}{mark} | {p.fixed:.1%} | {p.false_positive_rate:.1%} | {p.exact_match:.1%} |")
    return "\n".join(lines)
