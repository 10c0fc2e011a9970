"""SymSpell's ``lookup(word, Verbosity.ALL, max_distance)`` over symspellpy's own index, at C speed.

Why: the dictionary candidates (``spellfix.lexical.candidates``) look up every word of every query —
unknown words and, for real-word errors, known ones — and symspellpy's pure-Python lookup spends
~2-6 ms a word (one Python OSA call per candidate word, filters per index entry, a sort of
``SuggestItem`` objects). Here the pool is the same (the index entries of every delete of the
word's prefix, up to ``max_distance`` deletes), gathered with set unions, and the Damerau OSA
distances of the whole pool come from one ``rapidfuzz`` call. symspellpy's per-entry filters only
drop words out of range, so the words returned are the same (checked on 78,000 dictionary words
and typos of them, ``tests/test_candidates.py``). Words of at most ``max_distance`` letters go
to symspellpy itself: its shortcut for the empty delete reports some one-letter words twice, with
two distances, and the candidates were trained with that quirk.
"""

from __future__ import annotations

from typing import Any

from rapidfuzz import process
from rapidfuzz.distance import OSA


def deletes(word: str, max_deletes: int) -> set[str]:
    """``word`` and every string made from it by deleting up to ``max_deletes`` characters."""
    out, frontier = {word}, {word}
    for _ in range(max_deletes):
        frontier = {w[:i] + w[i + 1 :] for w in frontier for i in range(len(w))}
        out |= frontier
    return out


def lookup_all(sym: Any, phrase: str, max_distance: int) -> list[tuple[str, int]]:
    """(term, distance) of every dictionary word within ``max_distance`` (Damerau OSA) of ``phrase``,
    the phrase itself included when known, in no particular order — the suggestions of
    ``sym.lookup(phrase, Verbosity.ALL, max_distance)``. ``sym``: a loaded ``symspellpy.SymSpell``."""
    if len(phrase) <= max_distance:
        from symspellpy import Verbosity

        return [(s.term, s.distance) for s in sym.lookup(phrase, Verbosity.ALL, max_distance)]
    if max_distance > sym._max_dictionary_edit_distance:
        raise ValueError(f"max_distance {max_distance} exceeds the index's {sym._max_dictionary_edit_distance}")
    index: dict[str, list[str]] = sym._deletes
    pool: set[str] = set()
    for delete in deletes(phrase[: sym._prefix_length], max_distance):
        entries = index.get(delete)
        if entries:
            pool.update(entries)
    pool.discard(phrase)
    length = len(phrase)
    near = [word for word in pool if abs(len(word) - length) <= max_distance]
    found = [(phrase, 0)] if phrase in sym._words else []
    if near:
        distances = process.cdist([phrase], near, scorer=OSA.distance, score_cutoff=max_distance, workers=1)[0].tolist()
        found += [(word, int(d)) for word, d in zip(near, distances) if d <= max_distance]
    return found
