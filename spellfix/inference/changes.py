"""What kind of change a correction makes: does it replace only real dictionary words?

Why: a misspelled non-word ("accomodation") is wrong on its face, so the model's answer needs
little extra evidence; a query made only of dictionary words that the model wants to change into
other dictionary words ("thin lizzy" -> "this lizzy") is far more often fine as typed. Classic
correctors treat the two apart for the same reason (real-word errors need context). The copy margin
can therefore be set separately for real-word changes (``decoding.real_word_margin``).
"""

from __future__ import annotations

import difflib
from collections.abc import Collection


def changed_query_words(query: str, decoded: str) -> list[str]:
    """The words of ``query`` that ``decoded`` replaces or drops (word-level alignment)."""
    query_words, decoded_words = query.split(), decoded.split()
    matcher = difflib.SequenceMatcher(a=query_words, b=decoded_words, autojunk=False)
    return [w for tag, i1, i2, _, _ in matcher.get_opcodes() if tag != "equal" for w in query_words[i1:i2]]


def is_real_word_change(query: str, decoded: str, lexicon: Collection[str]) -> bool:
    """True when ``decoded`` differs from ``query`` and every query word it touches is in ``lexicon``
    (an answer that only inserts words counts too: no misspelled word asked for it)."""
    if query.split() == decoded.split():
        return False
    return all(word in lexicon for word in changed_query_words(query, decoded))


def default_lexicon() -> frozenset[str]:
    """The English word list the candidates and the noise synthesizer use (symspellpy's dictionary)."""
    from spellfix.data.noise import dictionary_words

    return dictionary_words()
