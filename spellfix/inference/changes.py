"""What kind of change a correction makes: which words it edits, and are they real dictionary words?

Why: a misspelled non-word ("accomodation") is wrong on its face, so the model's answer needs
little extra evidence; a query made only of dictionary words that the model wants to change into
other dictionary words ("thin lizzy" -> "this lizzy") is far more often fine as typed. Classic
correctors treat the two apart for the same reason (real-word errors need context). The copy margin
can therefore be set separately for real-word changes (``decoding.real_word_margin``), and an
answer with several edits is judged edit by edit (``spellfix.inference.copy_rule``). Which words
are "dictionary words" is ``spellfix.lexical.lexicon``'s job.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class WordEdit:
    """One word-level edit of a query: its words ``start:end`` become ``words`` (an empty span: an
    insertion). ``real_word``: every query word it replaces is a dictionary word (true for an
    insertion too: no misspelled word asked for it)."""

    start: int
    end: int
    words: tuple[str, ...]
    real_word: bool


def word_edits(query: str, decoded: str, lexicon: Collection[str]) -> list[WordEdit]:
    """The word-level edits that turn ``query`` into ``decoded`` (difflib alignment of the words; a
    run of replaced words that keeps its length is one edit per word, else one edit for the run)."""
    query_words, decoded_words = query.split(), decoded.split()
    matcher = difflib.SequenceMatcher(a=query_words, b=decoded_words, autojunk=False)
    spans = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "replace" and i2 - i1 == j2 - j1:
            spans += [(i, i + 1, j, j + 1) for i, j in zip(range(i1, i2), range(j1, j2))]
        elif tag != "equal":
            spans.append((i1, i2, j1, j2))
    return [WordEdit(i1, i2, tuple(decoded_words[j1:j2]), all(w in lexicon for w in query_words[i1:i2])) for i1, i2, j1, j2 in spans]


def apply_edits(query: str, edits: Sequence[WordEdit], keep: Sequence[bool]) -> str:
    """``query`` with the edits flagged in ``keep`` applied (edits as returned by :func:`word_edits`)."""
    words = query.split()
    out: list[str] = []
    position = 0
    for edit, kept in zip(edits, keep):
        out += words[position : edit.start]
        out += edit.words if kept else words[edit.start : edit.end]
        position = edit.end
    return " ".join(out + words[position:])


def is_real_word_change(query: str, decoded: str, lexicon: Collection[str]) -> bool:
    """True when ``decoded`` differs from ``query`` and every query word it touches is in ``lexicon``
    (an answer that only inserts words counts too)."""
    return only_real_words(word_edits(query, decoded, lexicon))


def only_real_words(edits: Sequence[WordEdit]) -> bool:
    """At least one edit, and every edit replaces dictionary words only (a real-word change)."""
    return bool(edits) and all(edit.real_word for edit in edits)
