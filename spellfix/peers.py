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


PEERS: dict[str, Callable[[], object]] = {
    SymSpellPeer.name: SymSpellPeer,
    PySpellCheckerPeer.name: PySpellCheckerPeer,
    CandidateTop1Baseline.name: CandidateTop1Baseline,
}


def make_peer(name: str):
    """A peer corrector by name (``symspell``, ``pyspellchecker``, or the ``candidates-top1`` floor)."""
    try:
        factory = PEERS[name]
    except KeyError:
        raise ValueError(f"unknown peer {name!r}; choose from {', '.join(PEERS)}") from None
    return factory()
