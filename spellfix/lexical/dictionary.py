"""symspellpy's English frequency dictionary as a word set and a frequency-ordered list.

Shared by training (one-word clean queries, noise) and serving (the known-word lexicon), so it
lives here and imports nothing but the standard library and the symspellpy package's data file.
"""

from __future__ import annotations

import functools
import importlib.resources

#: symspellpy's shipped English frequency dictionary (82,765 words)
SYMSPELL_DICTIONARY = "frequency_dictionary_en_82_765.txt"


@functools.lru_cache(maxsize=1)
def _dictionary_counts() -> tuple[tuple[str, int], ...]:
    """(word, count) of the alphabetic words of symspellpy's English frequency dictionary, most
    frequent first (ties by spelling)."""
    text = (importlib.resources.files("symspellpy") / SYMSPELL_DICTIONARY).read_text(encoding="utf-8")
    entries = [(word, int(count)) for word, _, count in (line.partition(" ") for line in text.splitlines()) if is_word(word)]
    return tuple(sorted(entries, key=lambda e: (-e[1], e[0])))


@functools.lru_cache(maxsize=1)
def dictionary_words() -> frozenset[str]:
    """Lower-case alphabetic words of symspellpy's English frequency dictionary (82,765 entries)."""
    return frozenset(word for word, _ in _dictionary_counts())


def top_dictionary_words(n: int, min_chars: int = 3) -> list[str]:
    """The ``n`` most frequent words of at least ``min_chars`` letters in symspellpy's English
    frequency dictionary, most frequent first.

    Used as one-word clean queries: song titles and product names rarely hold words such as
    "accommodation", so a model trained on them alone corrects isolated common words poorly.
    """
    if n <= 0:
        return []
    return [word for word, _ in _dictionary_counts() if len(word) >= min_chars][:n]


def is_word(token: str) -> bool:
    """Letters, optionally with inner apostrophes (don't)."""
    return token.replace("'", "").isalpha() and not token.startswith("'") and not token.endswith("'")
