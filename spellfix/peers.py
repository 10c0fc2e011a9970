"""Classic spelling correctors as peers, behind the same ``correct(list[str]) -> list[str]``.

Why thin and "as shipped": the peers are the bar spellfix must clear (issue 8), so each is used the
way its documentation shows, with its own shipped dictionary and default-ish settings, and no
tuning on our dev data. Both packages are imported lazily: they are optional (``[peers]`` extra).

* ``symspell`` -- symspellpy ``lookup_compound`` (handles split/merged words, uses the shipped
  English unigram + bigram frequency lists), max edit distance 2.
* ``pyspellchecker`` -- Norvig's corrector over its English word list, word by word; a word it has
  no suggestion for (``correction`` returns None) is kept as typed.
"""

from __future__ import annotations

from typing import Callable


class SymSpellPeer:
    """SymSpell compound correction of whole queries."""

    name = "symspell"

    def __init__(self, max_edit_distance: int = 2, prefix_length: int = 7):
        from spellfix.lexical.candidates import BUILTIN, load_symspell

        self.max_edit_distance = max_edit_distance
        # Same shipped dictionaries lookup_compound's documentation loads; cached per process.
        self._sym = load_symspell(BUILTIN, BUILTIN, max_edit_distance, prefix_length)

    def correct(self, queries: list[str]) -> list[str]:
        out = []
        for query in queries:
            if not query.strip():
                out.append(query)
                continue
            suggestions = self._sym.lookup_compound(query, max_edit_distance=self.max_edit_distance)
            out.append(suggestions[0].term if suggestions else query)
        return out


class PySpellCheckerPeer:
    """pyspellchecker (Norvig-style edit-distance candidates ranked by word frequency), word by word."""

    name = "pyspellchecker"

    def __init__(self, language: str = "en", distance: int = 2):
        from spellchecker import SpellChecker

        self._checker = SpellChecker(language=language, distance=distance)

    def correct(self, queries: list[str]) -> list[str]:
        out = []
        for query in queries:
            words = []
            for word in query.split():
                fixed = self._checker.correction(word)
                words.append(fixed if fixed else word)
            out.append(" ".join(words))
        return out


class CandidateTop1Baseline:
    """Not a peer but our own floor: replace every word not in the dictionary by its first
    dictionary candidate (spellfix.lexical.candidates ranking, with context), keep the rest.

    It shows what the candidates alone give without a model choosing among them; a model that
    sees the same candidates must beat it."""

    name = "candidates-top1"

    def __init__(self):
        from spellfix.lexical.candidates import CandidateAnnotator, CandidatesConfig

        self._annotator = CandidateAnnotator(CandidatesConfig(enabled=True, words="unknown"))

    def correct(self, queries: list[str]) -> list[str]:
        out = []
        for query in queries:
            words = query.split()
            for item in self._annotator.word_candidates(query):
                words[item.position] = item.candidates[0]
            out.append(" ".join(words))
        return out


class GuardedSymSpellBaseline:
    """Not a peer but the corrector a careful engineer builds without a model: SymSpell word by word
    behind spellfix's own known-word guard, ranked by wordfreq.

    A word spellfix counts as known (symspellpy's dictionary plus wordfreq's words at Zipf >= 2.5,
    ``spellfix.lexical.lexicon``) is kept; any other word becomes the dictionary word closest to it
    (fewest edits, at most 2), the most frequent by wordfreq among equals; a word with none is kept.
    What the model adds over this is the accuracy benchmark's answer to "how much does BART add?"."""

    name = "symspell-guarded"

    def __init__(self, max_edit_distance: int = 2, known_word_zipf: float = 2.5):
        from symspellpy import Verbosity

        from spellfix.lexical.candidates import BUILTIN, load_symspell
        from spellfix.lexical.lexicon import lexicon, zipf_frequencies

        self.max_edit_distance = max_edit_distance
        self._closest = Verbosity.CLOSEST
        self._sym = load_symspell(BUILTIN, BUILTIN, max_edit_distance, 7)
        self._known = lexicon(known_word_zipf)
        self._zipf = zipf_frequencies()

    def correct(self, queries: list[str]) -> list[str]:
        return [" ".join(self._word(w) for w in query.split()) for query in queries]

    def _word(self, word: str) -> str:
        if word in self._known or not word.isalpha():
            return word
        suggestions = self._sym.lookup(word, self._closest, max_edit_distance=self.max_edit_distance)
        if not suggestions:
            return word
        return max(suggestions, key=lambda s: (self._zipf.get(s.term, 0.0), s.count, s.term)).term


PEERS: dict[str, Callable[[], object]] = {
    SymSpellPeer.name: SymSpellPeer,
    PySpellCheckerPeer.name: PySpellCheckerPeer,
    CandidateTop1Baseline.name: CandidateTop1Baseline,
    GuardedSymSpellBaseline.name: GuardedSymSpellBaseline,
}


def make_peer(name: str):
    """A peer corrector by name (``symspell``, ``pyspellchecker``, or the ``candidates-top1`` and
    ``symspell-guarded`` baselines)."""
    try:
        factory = PEERS[name]
    except KeyError:
        raise ValueError(f"unknown peer {name!r}; choose from {', '.join(PEERS)}") from None
    return factory()
