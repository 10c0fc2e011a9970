"""The keep-the-query rule: when does the decoder's answer replace the query?

Why: a small model decodes *something* for every query, and a wrong "fix" of a correct search
query costs more than a missed fix. So an answer replaces the query only when the model prefers it
by a margin (nats of logP(answer) - logP(query)): ``copy_margin``, or the larger ``real_word_margin``
when the change only replaces dictionary words (``spellfix.inference.changes``).

An answer with several word edits is judged edit by edit: "train in vain teh clash" decoded as
"train in vain the class" fixes a misspelling and breaks an artist name in one go. Each edit must
pay for itself — the answer must beat the same answer without that edit by the margin of the
edit's kind — so the corrector also scores every answer made of a subset of the edits (up to
``MAX_JUDGED_EDITS`` edits: 2**k - 2 extra teacher-forced sequences) and outputs the highest-scoring
one whose edits all pay ("train in vain the clash"). With one edit this is the plain rule above.
A learned rule can stand in for the margins (``CopyDecision.choose_by``; ``spellfix.inference.acceptance``).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

from spellfix.inference.changes import WordEdit, apply_edits

#: answers with more word edits than this are judged as a whole (2**k sequences scored per row)
MAX_JUDGED_EDITS = 3


@dataclass(frozen=True)
class Answer:
    """An answer the corrector may give instead of the query: the decoder's, a part of its edits,
    or the query with one word replaced by a dictionary candidate.

    ``gain``: logP(text) - logP(query). ``word_slack``: how much the weakest of its non-real-word
    edits adds (logP(text) - logP(text without that edit)); ``real_word_slack``: the same over its
    real-word edits. ``math.inf`` when it has no edit of that kind. ``candidate_rank``: 0 for the
    decoder's answer and its parts; k for the k-th dictionary candidate of one word.
    """

    text: str
    gain: float
    word_slack: float = math.inf
    real_word_slack: float = math.inf
    candidate_rank: int = 0

    def pays(self, copy_margin: float, real_word_margin: float | None) -> bool:
        """Every edit beats the margin of its kind (``real_word_margin`` None: ``copy_margin``)."""
        real_word = copy_margin if real_word_margin is None else real_word_margin
        return self.word_slack > copy_margin and self.real_word_slack > real_word


@dataclass(frozen=True)
class CopyDecision:
    """The decoder's answer next to "leave the query alone", for one query.

    ``gain`` is logP(decoded) - logP(query) under the model (nats); 0.0 when the decoder already
    returned the query. ``real_word``: the answer only replaces dictionary words. ``partials``:
    for an answer with 2..``MAX_JUDGED_EDITS`` word edits, every answer made of a non-empty subset of
    them (the full one included), judged edit by edit; empty: the answer is judged whole.
    ``alternatives``: the query with one word replaced by one of its dictionary candidates
    (``SpellCorrector(candidate_answers=k)``), scored in the same pass: answers the decoder missed.
    """

    query: str
    decoded: str
    gain: float
    real_word: bool = False
    partials: tuple[Answer, ...] = field(default=(), compare=False)
    alternatives: tuple[Answer, ...] = field(default=(), compare=False)

    def answers(self) -> tuple[Answer, ...]:
        """The answers that may replace the query, highest gain first."""
        if self.partials:
            own: tuple[Answer, ...] = self.partials
        elif self.decoded == self.query:
            own = ()
        else:
            own = (Answer(self.decoded, self.gain, **{"real_word_slack" if self.real_word else "word_slack": self.gain}),)
        return tuple(sorted(own + self.alternatives, key=lambda a: -a.gain))

    @property
    def judged_whole(self) -> bool:
        """One answer, judged by its gain alone (no partial answers, no alternatives)."""
        return not self.partials and not self.alternatives

    def choose(self, copy_margin: float | None, real_word_margin: float | None = None) -> str:
        """The output: the best answer whose edits all beat their margins, else the query
        (``copy_margin`` None: the decoder's answer, no rule)."""
        if copy_margin is None:
            return self.decoded
        return self.choose_by(lambda answer: answer.pays(copy_margin, real_word_margin))

    def choose_by(self, accept: Callable[[Answer], bool]) -> str:
        """The output under any acceptance rule: the highest-gain answer ``accept`` takes, else the
        query (the margins above, or ``spellfix.inference.acceptance``)."""
        return next((a.text for a in self.answers() if accept(a)), self.query)


def edit_subsets(count: int) -> list[tuple[bool, ...]]:
    """Which edits each partial answer keeps: every non-empty subset of ``count`` edits, the full one last."""
    return [keep for keep in itertools.product((False, True), repeat=count) if any(keep)]


def partial_answers(query: str, edits: Sequence[WordEdit], scores: Sequence[float], query_score: float) -> tuple[Answer, ...]:
    """Answers for every subset of ``edits`` given their scores (logP, in ``edit_subsets`` order)
    and the query's, each with the slack of its weakest edit of either kind."""
    subsets = edit_subsets(len(edits))
    if len(scores) != len(subsets):
        raise ValueError(f"{len(scores)} scores for {len(subsets)} subsets of {len(edits)} edits")
    score_of = {keep: s for keep, s in zip(subsets, scores)}
    score_of[(False,) * len(edits)] = query_score
    answers = []
    for keep in subsets:
        slack = {"word_slack": math.inf, "real_word_slack": math.inf}
        for i, edit in enumerate(edits):
            if keep[i]:
                without = keep[:i] + (False,) + keep[i + 1 :]
                kind = "real_word_slack" if edit.real_word else "word_slack"
                slack[kind] = min(slack[kind], score_of[keep] - score_of[without])
        answers.append(Answer(apply_edits(query, edits, keep), score_of[keep] - query_score, **slack))
    return tuple(answers)


def judged_edits(edits: Sequence[WordEdit]) -> list[WordEdit]:
    """The edits to judge one by one: all of them when there are 2..``MAX_JUDGED_EDITS``, else []
    (one edit, or too many to score every subset: the answer is judged whole)."""
    return list(edits) if 2 <= len(edits) <= MAX_JUDGED_EDITS else []
