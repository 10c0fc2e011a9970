"""Which words count as known English words, and how frequent a word is (wordfreq's Zipf scale).

Why: a change that only replaces known words ("tv stands" -> "the stands") needs the larger
real-word margin (``spellfix.inference.changes``). symspellpy's 82,765-word dictionary — the one
the candidates use — lacks everyday search words such as "tv", "dvd", "usb", "oh" and "chili", so
such changes were judged with the small non-word margin and broke correct queries. The lexicon can
therefore add English words from ``wordfreq`` (web, subtitles, books, Wikipedia) down to a Zipf
frequency (``decoding.known_word_zipf`` in ``spellfix.json``, chosen by ``spellfix calibrate``;
Zipf 3 = once per million words). The frequencies themselves feed the acceptance model
(``spellfix.inference.acceptance``): a rare name ("klipsch", Zipf 2.0) is seldom a typo, a word wordfreq
has never seen ("hurple") usually is. The table ships with the package (``resources/``), so a
serving environment needs neither wordfreq nor a download; rebuild it with
``python -m spellfix.lexical.lexicon`` (needs ``pip install wordfreq``).
"""

from __future__ import annotations

import functools
import gzip
import importlib.resources
import math
from pathlib import Path

from spellfix.lexical.dictionary import dictionary_words

#: wordfreq's English words (no whitespace) with their Zipf frequency, most frequent first, gzipped
FREQUENCY_RESOURCE = "wordfreq_en.tsv.gz"
#: the lowest Zipf frequency the shipped table holds: rarer words read as 0.0 (never seen)
RESOURCE_MIN_ZIPF = 1.0


@functools.lru_cache(maxsize=4)
def lexicon(known_word_zipf: float | None = None) -> frozenset[str]:
    """symspellpy's dictionary, plus (``known_word_zipf`` set) every wordfreq English word at least
    that frequent. ``None``: symspellpy's dictionary alone (models calibrated before the option)."""
    words = dictionary_words()
    if known_word_zipf is None:
        return words
    check_known_word_zipf(known_word_zipf)
    return words | {word for word, zipf in zipf_frequencies().items() if zipf >= known_word_zipf}


def zipf(word: str) -> float:
    """wordfreq's Zipf frequency of ``word`` (lower-case), 0.0 below ``RESOURCE_MIN_ZIPF`` or unseen."""
    return zipf_frequencies().get(word, 0.0)


def check_known_word_zipf(known_word_zipf: float) -> None:
    """Reject a Zipf threshold the shipped table cannot serve (it stops at ``RESOURCE_MIN_ZIPF``)."""
    if not known_word_zipf >= RESOURCE_MIN_ZIPF:
        raise ValueError(
            f"known_word_zipf: {known_word_zipf} is below {RESOURCE_MIN_ZIPF}, the rarest words spellfix "
            f"ships (spellfix/resources/{FREQUENCY_RESOURCE})"
        )


@functools.lru_cache(maxsize=1)
def zipf_frequencies() -> dict[str, float]:
    """The shipped table, word -> Zipf frequency (read once)."""
    raw = (importlib.resources.files("spellfix") / "resources" / FREQUENCY_RESOURCE).read_bytes()
    table: dict[str, float] = {}
    for number, line in enumerate(gzip.decompress(raw).decode("utf-8").splitlines(), 1):
        if not line or line.startswith("#"):
            continue
        word, sep, value = line.partition("\t")
        if not sep:
            raise ValueError(f"spellfix/resources/{FREQUENCY_RESOURCE}:{number}: expected 'word<TAB>zipf', got {line!r}")
        table[word] = float(value)
    return table


def write_frequency_resource(path: Path, min_zipf: float = RESOURCE_MIN_ZIPF) -> int:
    """Write wordfreq's English words of at least ``min_zipf``, most frequent first, gzipped, to
    ``path`` (atomically). Returns the number of words."""
    from importlib.metadata import version

    import wordfreq

    from spellfix.fsutil import write_bytes_atomic

    frequencies = wordfreq.get_frequency_dict("en", wordlist="best")
    rows = sorted(
        ((word, math.log10(freq) + 9) for word, freq in frequencies.items() if not any(c.isspace() for c in word)),
        key=lambda row: (-row[1], row[0]),
    )
    rows = [(word, zipf) for word, zipf in rows if zipf >= min_zipf]
    header = (
        f"# English words with a Zipf frequency >= {min_zipf} in wordfreq {version('wordfreq')} (wordlist 'best');\n"
        "# word<TAB>zipf, most frequent first.\n"
        "# Data: wordfreq by Robyn Speer et al., CC BY-SA 4.0 (https://github.com/rspeer/wordfreq);\n"
        "# rebuild with `python -m spellfix.lexical.lexicon`.\n"
    )
    text = header + "".join(f"{word}\t{zipf:.2f}\n" for word, zipf in rows)
    write_bytes_atomic(path, gzip.compress(text.encode("utf-8"), compresslevel=9, mtime=0))
    return len(rows)


if __name__ == "__main__":
    target = Path(__file__).resolve().parent.parent / "resources" / FREQUENCY_RESOURCE
    count = write_frequency_resource(target)
    print(f"wrote {count} words to {target}")
