"""Do the neighbouring words fit a replacement better than the word it replaces?

Why: the acceptance model (``spellfix.inference.acceptance``) judged an answer by the model's scores
and by each word on its own (how common the new and the old word are). On dev its misses were often
answers whose new word is common but does not go with its neighbours ("getting recent copies" for
"getting receit copies") or a right answer refused because the typed word is common too ("mdot best
collage" for "college"). A word bigram list knows which words go together, independently of the
model: ``edit_gain`` is that evidence as one feature.

The measure is pointwise mutual information over each word pair that touches the edit:
``link(a, b) = log P(a b) - log P(a) - log P(b)`` from symspellpy's bigram and unigram counts, or
``backoff`` nats when the pair is not in the bigram list (stupid backoff; the list holds only pairs
seen often, so an absent pair is mild evidence against it, never a veto). ``edit_gain`` is the sum
of the links of the query with the edit applied minus those of the query as typed, over the edited
words and one word either side: frequency alone cancels out (that is a feature of its own), only
how well the words fit together remains. A one-word query has no links on either side: no
evidence either way, so the gain is NaN (the acceptance model then scores that feature as average,
instead of as "fits no better", which would hold single-word fixes back).

Pure Python over the dictionaries the candidate annotator already loads (``load_symspell``, cached
per process), so every backend and the serving runtime compute it alike.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence

from spellfix.lexical.candidates import BUILTIN, load_symspell

#: links for a pair absent from the bigram list (the candidate annotator's ``backoff`` default)
DEFAULT_BACKOFF = -3.0


class BigramContext:
    """Word-pair association from unigram and bigram counts (``"w1 w2" -> count``)."""

    def __init__(self, unigrams: Mapping[str, int], bigrams: Mapping[str, int], *, backoff: float = DEFAULT_BACKOFF):
        if not unigrams or not bigrams:
            raise ValueError("BigramContext needs non-empty unigram and bigram counts")
        self._unigrams = unigrams
        self._bigrams = bigrams
        self._log_unigram_total = math.log(sum(unigrams.values()))
        self._log_bigram_total = math.log(sum(bigrams.values()))
        self.backoff = backoff

    @classmethod
    def builtin(cls) -> BigramContext:
        """From symspellpy's shipped English lists (the ones the candidate annotator uses)."""
        return _builtin()

    def link(self, left: str, right: str) -> float:
        """log P(left right) - log P(left) - log P(right), or ``backoff`` when the pair is unlisted."""
        count = self._bigrams.get(f"{left} {right}")
        if not count:
            return self.backoff
        return math.log(count) - self._log_bigram_total - self._log_unigram(left) - self._log_unigram(right)

    def edit_gain(self, words: Sequence[str], start: int, end: int, replacement: Sequence[str]) -> float:
        """How much better ``words[start:end]`` replaced by ``replacement`` fits its neighbours than
        the words as typed (nats; see the module docstring); NaN when neither side has a word pair.
        An insertion has ``start == end``."""
        left, right = words[max(0, start - 1) : start], words[end : end + 1]
        edited, typed = [*left, *replacement, *right], [*left, *words[start:end], *right]
        if len(edited) < 2 and len(typed) < 2:
            return math.nan
        return self._links(edited) - self._links(typed)

    def _links(self, window: Sequence[str]) -> float:
        return sum(self.link(a, b) for a, b in zip(window, window[1:]))

    def _log_unigram(self, word: str) -> float:
        return math.log(self._unigrams.get(word, 0) + 1) - self._log_unigram_total


@functools.lru_cache(maxsize=1)
def _builtin() -> BigramContext:
    sym = load_symspell(BUILTIN, BUILTIN)
    return BigramContext(sym.words, sym.bigrams)
