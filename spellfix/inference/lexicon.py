"""Which words count as known English words when the corrector classifies a change.

Why: a change that only replaces known words ("tv stands" -> "the stands") needs the larger
real-word margin (``spellfix.inference.changes``). symspellpy's 82,765-word dictionary — the one
the candidates use — lacks everyday search words such as "tv", "dvd", "usb", "oh" and "chili", so
such changes were judged with the small non-word margin and broke correct queries. The lexicon can
therefore add English words from ``wordfreq`` (web, subtitles, books, Wikipedia) down to a Zipf
frequency (``decoding.known_word_zipf`` in ``spellfix.json``, chosen by ``spellfix calibrate``;
Zipf 3 = once per million words). The words ship with the package (``resources/``), so a serving
environment needs neither wordfreq nor a download; rebuild them with
``python -m spellfix.inference.lexicon`` (needs ``pip install wordfreq``).
"""

from __future__ import annotations

import functools
import importlib.resources
import math
from pathlib import Path

#: English words (with their Zipf frequency) that wordfreq knows and symspellpy's dictionary lacks
KNOWN_WORDS_RESOURCE = "wordfreq_en_extra.tsv"
#: the lowest Zipf frequency the shipped resource holds (a lower ``known_word_zipf`` cannot be served)
RESOURCE_MIN_ZIPF = 2.0


@functools.lru_cache(maxsize=4)
def lexicon(known_word_zipf: float | None = None) -> frozenset[str]:
    """symspellpy's dictionary, plus (``known_word_zipf`` set) every wordfreq English word at least
    that frequent. ``None``: symspellpy's dictionary alone (models calibrated before the option)."""
    from spellfix.data.noise import dictionary_words  # symspellpy's; lazy: the serving env imports little

    words = dictionary_words()
    if known_word_zipf is None:
        return words
    check_known_word_zipf(known_word_zipf)
    return words | {word for word, zipf in _extra_words() if zipf >= known_word_zipf}


def check_known_word_zipf(known_word_zipf: float) -> None:
    """Reject a Zipf threshold the shipped resource cannot serve (it stops at ``RESOURCE_MIN_ZIPF``)."""
    if not known_word_zipf >= RESOURCE_MIN_ZIPF:
        raise ValueError(
            f"known_word_zipf: {known_word_zipf} is below {RESOURCE_MIN_ZIPF}, the rarest words spellfix "
            f"ships (spellfix/resources/{KNOWN_WORDS_RESOURCE})"
        )


@functools.lru_cache(maxsize=1)
def _extra_words() -> tuple[tuple[str, float], ...]:
    text = (importlib.resources.files("spellfix") / "resources" / KNOWN_WORDS_RESOURCE).read_text(encoding="utf-8")
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line or line.startswith("#"):
            continue
        word, sep, zipf = line.partition("\t")
        if not sep:
            raise ValueError(f"spellfix/resources/{KNOWN_WORDS_RESOURCE}:{number}: expected 'word<TAB>zipf', got {line!r}")
        rows.append((word, float(zipf)))
    return tuple(rows)


def write_known_words_resource(path: Path, min_zipf: float = RESOURCE_MIN_ZIPF) -> int:
    """Write wordfreq's English words of at least ``min_zipf`` that symspellpy lacks, most frequent
    first, to ``path`` (atomically). Returns the number of words."""
    from importlib.metadata import version

    import wordfreq

    from spellfix.fsutil import write_text_atomic

    from spellfix.data.noise import dictionary_words

    known = dictionary_words()
    frequencies = wordfreq.get_frequency_dict("en", wordlist="best")
    rows = sorted(
        ((word, math.log10(freq) + 9) for word, freq in frequencies.items() if word not in known and not any(c.isspace() for c in word)),
        key=lambda row: (-row[1], row[0]),
    )
    rows = [(word, zipf) for word, zipf in rows if zipf >= min_zipf]
    header = (
        f"# English words with a Zipf frequency >= {min_zipf} in wordfreq {version('wordfreq')} (wordlist 'best')\n"
        "# that symspellpy's frequency_dictionary_en_82_765.txt lacks; word<TAB>zipf, most frequent first.\n"
        "# Data: wordfreq by Robyn Speer et al., CC BY-SA 4.0 (https://github.com/rspeer/wordfreq);\n"
        "# rebuild with `python -m spellfix.inference.lexicon`.\n"
    )
    write_text_atomic(path, header + "".join(f"{word}\t{zipf:.2f}\n" for word, zipf in rows))
    return len(rows)


if __name__ == "__main__":
    target = Path(__file__).resolve().parent.parent / "resources" / KNOWN_WORDS_RESOURCE
    count = write_known_words_resource(target)
    print(f"wrote {count} words to {target}")
