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
from spellfix.inference.corrector import CopyDecision, SpellCorrector

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
    threshold between each pair of neighbouring gains (midpoints, so a margin never sits on a
    measured gain), and one above them all (always keep the query).

    ``separate_real_word``: sweep the copy margin and the real-word margin jointly. Each row's
    outcome depends on one of them only, so fixed rows and changed rows add up over the two kinds
    of change; of all pairs, only those no other pair beats on both counts (more fixed, fewer
    changed) are returned: both objectives pick among them. Falls back to one margin when the dev
    set has no change of one kind."""
    if len(decisions) != len(references):
        raise ValueError(f"{len(decisions)} decisions for {len(references)} references")
    if not decisions:
        raise ValueError("calibration needs at least one dev row")
    refs = [normalize(r) for r in references]
    changes = [d for d in decisions if d.decoded != d.query]
    if separate_real_word and {d.real_word for d in changes} == {False, True}:
        return _joint_sweep(decisions, refs)
    margins: list[float | None] = [None, *_thresholds([d.gain for d in changes])[1:]]
    return [_score(decisions, refs, m) for m in margins]


def _thresholds(gains: Sequence[float]) -> list[float]:
    """Below every gain, between neighbouring gains, and above every gain (ascending)."""
    distinct = sorted(set(gains))
    if not distinct:
        return [0.0]
    return [distinct[0] - 1.0, *((a + b) / 2 for a, b in zip(distinct, distinct[1:])), distinct[-1] + 1.0]


def _joint_sweep(decisions: Sequence[CopyDecision], refs: Sequence[str]) -> list[MarginPoint]:
    misspelled = sum(d.query != r for d, r in zip(decisions, refs))
    correct = len(refs) - misspelled
    curves = []
    for real_word in (False, True):
        rows = [(d.gain, d.query != r and d.decoded == r, d.query == r) for d, r in zip(decisions, refs)
                if d.decoded != d.query and d.real_word == real_word]
        gains = np.array([g for g, _, _ in rows])
        margins = np.array(_thresholds(gains.tolist()))
        taken = gains[None, :] > margins[:, None]  # which answers replace the query, per margin
        fixed = taken @ np.array([f for _, f, _ in rows], dtype=np.int64)
        changed = taken @ np.array([c for _, _, c in rows], dtype=np.int64)
        curves.append((margins, fixed, changed))
    (m_nw, f_nw, c_nw), (m_rw, f_rw, c_rw) = curves
    fixed = (f_nw[:, None] + f_rw[None, :]).ravel()
    changed = (c_nw[:, None] + c_rw[None, :]).ravel()
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
    provenance: dict[str, Any] | None = None,
) -> Path:
    """Write ``decoding.copy_margin`` and ``decoding.real_word_margin`` into the model dir's
    ``spellfix.json`` (atomically)."""
    from spellfix.inference import layout

    path = Path(model_dir) / layout.SETTINGS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; calibrate a spellfix model dir (training output, best/, final/ or an export dir)")
    card = json.loads(path.read_text(encoding="utf-8"))
    decoding = dict(card.get("decoding") or {})
    decoding["copy_margin"] = margin
    decoding["real_word_margin"] = real_word_margin
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
