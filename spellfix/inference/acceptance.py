"""The acceptance model: should the corrector give this answer instead of the query?

Why: the copy margins (``copy_rule``) ask one question of an answer — how much more likely the model
finds it than the query. On the dev set that confidence is a weak signal on its own: a small model
trained from scratch is as sure that "klipsch" should be "kitsch" as that "hurple" should be
"purple". What separates them is what a classic corrector knows: how common the replaced word is
(wordfreq has seen "klipsch"; "hurple" never), how common the new word is, how far apart they are,
and whether the neighbouring words go with the change (``spellfix.lexical.context``).
The acceptance model is a logistic regression over those features and the model's own scores,
fitted on the dev set by ``spellfix calibrate --rule acceptance`` together with a threshold
(``decoding.acceptance`` in ``spellfix.json``). Like the margins it runs in plain Python after the
judging pass, so every backend (torch, ONNX Runtime, TensorRT, Triton) applies it the same way.

The fit is a few lines of Newton's method (numpy): ten features and a few thousand rows do not
justify scikit-learn (and SciPy) in the serving environment or the install.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spellfix.inference.changes import word_edits
from spellfix.inference.copy_rule import Answer
from spellfix.lexical.context import BigramContext

#: the features, in the order of ``AcceptanceModel.weights``
FEATURES = (
    "gain",  # logP(answer) - logP(query), nats
    "weakest_edit",  # the smallest gain one of its edits adds (the answer without it vs with it)
    "real_word",  # 1.0 when every replaced word is a known word
    "edit_distance",  # the largest character edit distance between a replaced span and its replacement
    "new_word_zipf",  # the rarest word the answer brings in (wordfreq Zipf, 0 = never seen)
    "old_word_zipf",  # the most common word it replaces (for an insertion: of the words beside it)
    "same_first_letter",  # 1.0 when every edit keeps the first letter
    "from_decoder",  # 1.0 for the decoder's answer and its parts, 0.0 for a dictionary candidate
    "candidate_rank",  # the dictionary candidate's rank (1 = first), 0 for the decoder's answers
    "context_gain",  # how much better the neighbouring words fit its weakest edit (spellfix.lexical.context)
)
# Not a feature: the number of word edits. Every dev query holds exactly one misspelling, so the fit
# learned "two edits: wrong" and refused "wireless headphones" for "wireles hedphones"; the partial
# answers already judge each edit (``weakest_edit``).
#: features clip here, so an answer the model finds absurdly likely or unlikely cannot dominate
_CLIP = 30.0


@dataclass(frozen=True)
class AcceptanceModel:
    """``score(answer) = weights · (features - mean) / scale + bias``; the answer is given when the
    score exceeds ``threshold`` (a log-odds). ``features``: the names the weights belong to, a subset
    of ``FEATURES`` (a model saved before a feature existed keeps working); ``score`` takes the full
    ``answer_features`` vector and uses those."""

    weights: tuple[float, ...]
    bias: float
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    threshold: float
    features: tuple[str, ...] = FEATURES
    #: where each of ``features`` sits in an ``answer_features`` vector
    _columns: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        unknown = [name for name in self.features if name not in FEATURES]
        if unknown or len(set(self.features)) != len(self.features):
            raise ValueError(f"acceptance features must be distinct names from {list(FEATURES)}, got {list(self.features)}")
        if not len(self.weights) == len(self.mean) == len(self.scale) == len(self.features):
            raise ValueError(f"acceptance model: {len(self.features)} features but {len(self.weights)} weights, {len(self.mean)} means, {len(self.scale)} scales")
        object.__setattr__(self, "_columns", tuple(FEATURES.index(name) for name in self.features))

    def score(self, features: Sequence[float]) -> float:
        """``features``: one answer's ``answer_features`` (all of ``FEATURES``, in that order); a NaN
        (no evidence, e.g. no neighbouring words for ``context_gain``) scores as the mean."""
        values = np.asarray(features, dtype=np.float64)[list(self._columns)]
        z = np.nan_to_num((values - np.asarray(self.mean)) / np.asarray(self.scale), nan=0.0)
        return float(z @ np.asarray(self.weights) + self.bias)

    def accepts(self, features: Sequence[float]) -> bool:
        """Give this answer instead of the query?"""
        return self.score(features) > self.threshold

    def with_threshold(self, threshold: float) -> AcceptanceModel:
        return AcceptanceModel(self.weights, self.bias, self.mean, self.scale, threshold, self.features)

    def to_dict(self) -> dict[str, Any]:
        return {
            "features": list(self.features),
            "weights": list(self.weights),
            "bias": self.bias,
            "mean": list(self.mean),
            "scale": list(self.scale),
            "threshold": self.threshold,
        }

    @classmethod
    def from_dict(cls, data: Any, where: str) -> AcceptanceModel:
        """Parse ``decoding.acceptance``; ``where`` names the file in errors."""
        if not isinstance(data, Mapping):
            raise ValueError(f"{where}: decoding.acceptance: expected an object, got {type(data).__name__}")
        names = data.get("features")
        if not isinstance(names, list) or not names or len(set(map(str, names))) != len(names) or not all(n in FEATURES for n in names):
            raise ValueError(f"{where}: decoding.acceptance.features: expected distinct names from {list(FEATURES)}, got {names!r}")
        vectors = {}
        for key in ("weights", "mean", "scale"):
            value = data.get(key)
            if not isinstance(value, list) or len(value) != len(names) or not all(_is_number(v) for v in value):
                raise ValueError(f"{where}: decoding.acceptance.{key}: expected {len(names)} numbers (one per feature), got {value!r}")
            vectors[key] = tuple(float(v) for v in value)
        if not all(s > 0 for s in vectors["scale"]):
            raise ValueError(f"{where}: decoding.acceptance.scale: every value must be > 0, got {list(vectors['scale'])}")
        scalars = {}
        for key in ("bias", "threshold"):
            if not _is_number(data.get(key)):
                raise ValueError(f"{where}: decoding.acceptance.{key}: expected a number, got {data.get(key)!r}")
            scalars[key] = float(data[key])
        return cls(vectors["weights"], scalars["bias"], vectors["mean"], vectors["scale"], scalars["threshold"], tuple(names))


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def answer_features(
    query: str, answer: Answer, lexicon: Collection[str], zipf: Mapping[str, float], context: BigramContext | None
) -> list[float]:
    """The ``FEATURES`` of one answer to ``query``. ``context``: None when the caller's model does not
    use ``context_gain`` (a model calibrated before it existed): that feature is then NaN, unread."""
    query_words = query.split()
    edits = word_edits(query, answer.text, lexicon)
    distance, new_zipf, old_zipf, same_first = 0, math.inf, 0.0, True
    context_gains = [context.edit_gain(query_words, edit.start, edit.end, edit.words) for edit in edits] if context else []
    known_gains = [gain for gain in context_gains if not math.isnan(gain)]
    for edit in edits:
        old, new = " ".join(query_words[edit.start : edit.end]), " ".join(edit.words)
        distance = max(distance, edit_distance(old, new))
        new_zipf = min([new_zipf, *(zipf.get(w, 0.0) for w in edit.words)])
        # an insertion replaces no word: judge it by the words it lands between ("was" -> "w was"
        # must not look like the fix of a word never seen)
        replaced = query_words[edit.start : edit.end] if edit.end > edit.start else query_words[max(0, edit.start - 1) : edit.start + 1]
        old_zipf = max([old_zipf, *(zipf.get(w, 0.0) for w in replaced)])
        same_first &= old[:1] == new[:1]
    return [
        _clip(answer.gain),
        _clip(min(answer.word_slack, answer.real_word_slack)),
        float(bool(edits) and all(e.real_word for e in edits)),
        float(distance),
        0.0 if math.isinf(new_zipf) else new_zipf,
        old_zipf,
        float(same_first),
        float(answer.candidate_rank == 0),
        float(answer.candidate_rank),
        _clip(min(known_gains)) if known_gains else math.nan,  # NaN: no neighbours, no evidence
    ]


def _clip(value: float) -> float:
    return max(-_CLIP, min(_CLIP, value))


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insert, delete, substitute; one each)."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def fit_logistic(
    features: np.ndarray, labels: np.ndarray, *, names: Sequence[str] = FEATURES, l2: float = 1.0, iterations: int = 50
) -> AcceptanceModel:
    """L2-regularised logistic regression by Newton's method, on standardised features; the
    returned model's threshold is 0 (even odds) until the caller picks one. ``features``: one column
    per name in ``names``."""
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[0] == 0 or x.shape[1] != len(names):
        raise ValueError(f"need a non-empty (rows, {len(names)} features) matrix and one label per row, got {x.shape} and {y.shape}")
    if not (0 < y.sum() < y.size):
        raise ValueError("the fit needs both accepted and rejected examples")
    if np.isnan(x).all(axis=0).any():
        raise ValueError(f"a feature has no value in any row: {[n for n, empty in zip(names, np.isnan(x).all(axis=0)) if empty]}")
    # a NaN (no evidence) is scored as the mean, in the fit as in AcceptanceModel.score
    mean = np.nanmean(x, axis=0)
    scale = np.nanstd(x, axis=0)
    scale[scale == 0] = 1.0
    z = np.hstack([np.nan_to_num((x - mean) / scale, nan=0.0), np.ones((x.shape[0], 1))])
    penalty = np.full(z.shape[1], l2)
    penalty[-1] = 0.0  # the bias is not shrunk
    w = np.zeros(z.shape[1])
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(z @ w)))
        gradient = z.T @ (p - y) + penalty * w
        hessian = (z * (p * (1 - p))[:, None]).T @ z + np.diag(penalty)
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.max(np.abs(step)) < 1e-9:
            break
    return AcceptanceModel(tuple(float(v) for v in w[:-1]), float(w[-1]), tuple(float(v) for v in mean), tuple(float(v) for v in scale), 0.0, tuple(names))
