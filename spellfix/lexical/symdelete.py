"""SymSpell's ``lookup(word, Verbosity.ALL, max_distance)`` over symspellpy's own index, at C speed.

Why: the dictionary candidates (``spellfix.lexical.candidates``) look up every word of every query —
unknown words and, for real-word errors, known ones — and symspellpy's pure-Python lookup spends
~2-6 ms a word (one Python OSA call per candidate word, filters per index entry, a sort of
``SuggestItem`` objects). Here the pool is the same (the index entries of every delete of the
word's prefix, up to ``max_distance`` deletes), gathered with set unions, and the Damerau OSA
distances of the whole pool come from one ``rapidfuzz`` call. For words longer than
``max_distance`` symspellpy's per-entry filters only drop words out of range, so the words
returned are the same (checked on 78,000 dictionary words and typos of them;
``tests/test_candidates.py`` checks a sample). Shorter words walk symspellpy's own way
(``_lookup_short``): there its shortcuts decide, e.g. the empty delete reports some one-letter
words twice, with two distances — and the candidates were trained with that.
"""

from __future__ import annotations

from typing import Any

import numpy as np
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
    if max_distance > sym._max_dictionary_edit_distance:
        raise ValueError(f"max_distance {max_distance} exceeds the index's {sym._max_dictionary_edit_distance}")
    if len(phrase) <= max_distance:
        return _lookup_short(sym, phrase, max_distance)
    index: dict[str, list[str]] = sym._deletes
    pool: set[str] = set()
    for delete in deletes(phrase[: sym._prefix_length], max_distance):
        entries = index.get(delete)
        if entries:
            pool.update(entries)
    pool.discard(phrase)
    found = [(phrase, 0)] if phrase in sym._words else []
    if pool:
        words = list(pool)
        distances = process.cdist([phrase], words, scorer=OSA.distance, score_cutoff=max_distance, workers=1, dtype=np.int32)[0]
        found += [(words[i], int(distances[i])) for i in np.flatnonzero(distances <= max_distance).tolist()]
    return found


def _lookup_short(sym: Any, phrase: str, max_distance: int) -> list[tuple[str, int]]:
    """symspellpy's own walk for a phrase of at most ``max_distance`` letters, where its filters
    and shortcuts decide what is returned: the deletes breadth first; a one-letter word is one
    letter kept of the phrase; every word reached from the empty delete that was not compared
    before gets the longer of the two lengths as its distance (so "a" comes back twice for "ac")."""
    words: dict[str, int] = sym._words
    index: dict[str, list[str]] = sym._deletes
    length = len(phrase)
    found = [(phrase, 0)] if phrase in words else []
    if max_distance == 0:
        return found
    compared: set[str] = {phrase}
    to_compare: list[str] = []
    seen_deletes: set[str] = set()
    candidates, pointer = [phrase], 0
    while pointer < len(candidates):
        candidate = candidates[pointer]
        pointer += 1
        size = len(candidate)
        for suggestion in index.get(candidate, ()):
            if suggestion == phrase:
                continue
            suggestion_len = len(suggestion)
            if abs(suggestion_len - length) > max_distance or suggestion_len < size or (suggestion_len == size and suggestion != candidate):
                continue
            if min(suggestion_len, sym._prefix_length) > length and min(suggestion_len, sym._prefix_length) - size > max_distance:
                continue
            if size == 0 or suggestion_len == 1:
                distance = max(length, suggestion_len) if size == 0 else length - 1
                if distance <= max_distance and suggestion not in compared:
                    found.append((suggestion, distance))
                continue
            if suggestion not in compared:
                compared.add(suggestion)
                to_compare.append(suggestion)
        if size == 0:  # the empty delete comes last: compare what the walk collected first
            break
        if length - size < max_distance:
            for i in range(size):
                delete = candidate[:i] + candidate[i + 1 :]
                if delete not in seen_deletes:
                    seen_deletes.add(delete)
                    candidates.append(delete)
    if to_compare:
        distances = process.cdist([phrase], to_compare, scorer=OSA.distance, score_cutoff=max_distance, workers=1, dtype=np.int32)[0]
        found += [(to_compare[i], int(distances[i])) for i in np.flatnonzero(distances <= max_distance).tolist()]
    return found
