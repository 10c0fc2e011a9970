"""Noise synthesizer: turn clean queries into (noisy, clean) training pairs.

Why synthetic noise: real misspelled queries are scarce, clean queries are plentiful. The noise
imitates how people actually misspell: the mix of edit types (deletions, insertions, vowel and
keyboard substitutions, transpositions, doubled and dropped double letters), how many edits a
misspelled word gets, and where in the word they fall (the first letter is rarely wrong) were
measured on real human errors by ``data/calibrate_noise.py`` (findings in ``data/README.md``) and
are the defaults of :class:`NoiseConfig`. On top of that, words with known real misspellings
(``data/real_errors_train.tsv`` plus codespell's dictionary) are often replaced by one of them, a
few errors split or merge words, and a share of queries is left untouched (identity pairs) so the
model learns to leave correct queries alone.

Mostly one word per query is misspelled, sometimes two -- like the dev set. By default only words of
a dictionary (symspellpy's English frequency list plus the confusion list's words) are misspelled:
names and made-up tokens stay as they are, so the model learns to copy what it does not know rather
than to "correct" it into something it invented.

Deterministic: the same (clean queries, seed, config, confusions) give the same pairs in every
process (one ``random.Random(seed)`` stream; no iteration over sets or hash-ordered dicts).
"""

from __future__ import annotations

import bisect
import functools
import importlib.resources
import logging
import random
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from string import ascii_lowercase
from typing import Any

from spellfix.data.readers import DataError, read_pairs
from spellfix.lexical.dictionary import dictionary_words, is_word, top_dictionary_words
from spellfix.shipped import shipped_root

logger = logging.getLogger(__name__)

#: the checkout, $SPELLFIX_HOME or the wheel's spellfix/_shipped/ (spellfix.shipped)
REPO_ROOT = shipped_root()
DEFAULT_CONFUSION_FILES = ("data/real_errors_train.tsv",)
# codespell's main list (misspelling->fix) and its list of rare real words used by mistake for common
# ones (real-word errors). Not the en-GB->en-US or code-specific lists: those are not misspellings.
CODESPELL_DICTIONARIES = ("dictionary.txt", "dictionary_rare.txt")

# QWERTY rows with their horizontal stagger (in key widths): two keys are neighbours when they sit
# on the same row one key apart, or on adjacent rows less than one key width apart.
KEYBOARD_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
_ROW_OFFSETS = (0.0, 0.25, 0.75)


def _keyboard_neighbors() -> dict[str, str]:
    where = {ch: (r, c + _ROW_OFFSETS[r]) for r, row in enumerate(KEYBOARD_ROWS) for c, ch in enumerate(row)}
    out: dict[str, str] = {}
    for ch, (r, x) in where.items():
        out[ch] = "".join(
            other
            for other, (r2, x2) in where.items()
            if other != ch and ((r2 == r and abs(x2 - x) == 1) or (abs(r2 - r) == 1 and abs(x2 - x) < 1))
        )
    return out


KEYBOARD_NEIGHBORS: dict[str, str] = _keyboard_neighbors()
VOWELS = "aeiou"
LETTERS = ascii_lowercase
EDIT_TYPES = (
    "delete",
    "insert",
    "substitute_vowel",
    "substitute_keyboard",
    "substitute_other",
    "transpose",
    "double",
    "undouble",
)
POSITION_BINS = 5
#: synthetic misspellings drawn per word, at most, looking for a real-word error (``real_word_rate``)
REAL_WORD_TRIES = 30


def _help(text: str, **kwargs: Any) -> Any:
    return field(metadata={"help": text}, **kwargs)


@dataclass
class NoiseConfig:
    """How clean queries are corrupted. Edit-type weights, edits per word and positions are
    calibrated on real human misspellings (``data/calibrate_noise.py``); the query-level rates
    (identity, second error, split/merge, confusion) are design choices documented in data/README.md."""

    identity_rate: float = _help("Share of pairs left unchanged (noisy == clean).", default=0.2)
    two_errors_rate: float = _help("Share of noisy queries with a second misspelled word.", default=0.1)
    split_rate: float = _help("Share of word errors that split a word with a space ('to gether').", default=0.03)
    merge_rate: float = _help("Share of word errors that merge two words ('cellphone').", default=0.03)
    confusion_rate: float = _help(
        "Chance a word with known real misspellings gets one of them instead of synthetic edits.", default=0.5
    )
    real_word_rate: float = _help(
        "Chance a synthetic misspelling in a query of 2+ words is redrawn until it is another dictionary word "
        "(a real-word error, 'heart' -> 'hart'), so the model learns to fix words that are spelled right but "
        "wrong in context. 0: only the real-word errors random edits happen to make.",
        default=0.0,
    )
    edits_per_word: list[float] = _help(
        "Relative weights of 1, 2, 3 character edits in a misspelled word (calibrated).",
        default_factory=lambda: [0.67, 0.217, 0.113],
    )
    weight_delete: float = _help("Weight of deleting a letter (calibrated).", default=0.301)
    weight_insert: float = _help("Weight of inserting a letter (calibrated).", default=0.177)
    weight_substitute_vowel: float = _help("Weight of a vowel replaced by another vowel (calibrated).", default=0.133)
    weight_substitute_keyboard: float = _help("Weight of a letter replaced by a QWERTY neighbour (calibrated).", default=0.063)
    weight_substitute_other: float = _help("Weight of a letter replaced by any other letter (calibrated).", default=0.136)
    weight_transpose: float = _help("Weight of swapping two adjacent letters (calibrated).", default=0.082)
    weight_double: float = _help("Weight of doubling a letter ('untill') (calibrated).", default=0.06)
    weight_undouble: float = _help("Weight of dropping one of a double letter ('ofice') (calibrated).", default=0.047)
    insert_keyboard_share: float = _help(
        "Share of inserted letters that are QWERTY neighbours of the letters around them (calibrated).", default=0.3
    )
    insert_vowel_share: float = _help("Share of inserted letters that are vowels (calibrated).", default=0.39)
    first_char_rate: float = _help("Chance an edit hits the first letter (calibrated; real errors rarely do).", default=0.021)
    position_weights: list[float] = _help(
        "Per-letter edit weights by relative position in the word, in 5 bins from start to end, first letter "
        "excluded (calibrated).",
        default_factory=lambda: [0.62, 1.21, 1.42, 1.07, 0.68],
    )
    min_word_chars: int = _help("Words shorter than this are never misspelled (nor split).", default=3)
    only_known_words: bool = _help(
        "Misspell only dictionary words (symspellpy's English list + confusion-list words); names and "
        "unknown tokens are left as they are so the model learns to copy them.",
        default=True,
    )
    confusion_files: list[str] = _help(
        "Pair files of real misspellings (misspelling, correct); relative paths: from the cwd, else the repo root.",
        default_factory=lambda: list(DEFAULT_CONFUSION_FILES),
    )
    use_codespell: bool = _help("Add codespell's dictionary of real misspellings to the confusion list.", default=True)

    def __post_init__(self) -> None:
        rates = ("identity_rate", "two_errors_rate", "split_rate", "merge_rate", "confusion_rate", "real_word_rate", "first_char_rate")
        for name in rates + ("insert_keyboard_share", "insert_vowel_share"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"NoiseConfig.{name} must be between 0 and 1, got {value!r}")
        if self.split_rate + self.merge_rate > 1.0:
            raise ValueError("NoiseConfig.split_rate + merge_rate must be at most 1")
        if self.insert_keyboard_share + self.insert_vowel_share > 1.0:
            raise ValueError("NoiseConfig.insert_keyboard_share + insert_vowel_share must be at most 1")
        weights = [getattr(self, f"weight_{t}") for t in EDIT_TYPES]
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"NoiseConfig.weight_*: need non-negative weights with a positive sum, got {weights}")
        for name, n in (("edits_per_word", None), ("position_weights", POSITION_BINS)):
            values = list(getattr(self, name))
            if (n is not None and len(values) != n) or not values or any(v < 0 for v in values) or sum(values) <= 0:
                size = f"{n} " if n else ""
                raise ValueError(f"NoiseConfig.{name} must be {size}non-negative weights with a positive sum, got {values}")
        if self.min_word_chars < 1:
            raise ValueError(f"NoiseConfig.min_word_chars must be >= 1, got {self.min_word_chars}")

    def edit_weights(self) -> dict[str, float]:
        """The character-edit mix as ``{edit type: weight}`` in :data:`EDIT_TYPES` order."""
        return {t: float(getattr(self, f"weight_{t}")) for t in EDIT_TYPES}


# --------------------------------------------------------------------------------------------
# Confusion list: real misspellings per correct word


@dataclass(frozen=True)
class ConfusionList:
    """Real misspellings per correct word (``by_word[correct] -> sorted misspellings``)."""

    by_word: Mapping[str, tuple[str, ...]]

    def __len__(self) -> int:
        return len(self.by_word)

    def __contains__(self, word: object) -> bool:
        return word in self.by_word

    def __getitem__(self, word: str) -> tuple[str, ...]:
        return self.by_word[word]

    @property
    def n_pairs(self) -> int:
        return sum(len(v) for v in self.by_word.values())

    def pairs(self) -> list[tuple[str, str]]:
        """All (misspelling, correct) pairs, sorted by correct word then misspelling."""
        return [(m, c) for c in sorted(self.by_word) for m in self.by_word[c]]

    @classmethod
    def from_pairs(
        cls,
        pairs: Iterable[tuple[str, str]],
        *,
        max_edit_distance: int = 3,
        max_edit_ratio: float = 0.5,
        exclude_words: Collection[str] = (),
    ) -> ConfusionList:
        """Build from (misspelling, correct) pairs, keeping single words at typo distance.

        Pairs further apart than ``max_edit_distance`` (optimal string alignment) or than
        ``max_edit_ratio`` x the word's length are dropped: the Birkbeck corpus has very poor
        spellers ("a" for "above"), which teach guessing, not correcting. ``exclude_words`` drops
        correct words (e.g. those an evaluation set corrects, to keep it honest).
        """
        from rapidfuzz.distance import OSA

        excluded = set(exclude_words)
        grouped: dict[str, set[str]] = {}
        for misspelling, correct in pairs:
            misspelling, correct = misspelling.strip().lower(), correct.strip().lower()
            if not misspelling or misspelling == correct or correct in excluded:
                continue
            if " " in correct or " " in misspelling or not is_word(correct):
                continue
            distance = OSA.distance(misspelling, correct)
            if distance > max_edit_distance or distance > max_edit_ratio * len(correct):
                continue
            grouped.setdefault(correct, set()).add(misspelling)
        return cls({c: tuple(sorted(grouped[c])) for c in sorted(grouped)})

    @classmethod
    def empty(cls) -> ConfusionList:
        return cls({})


def codespell_pairs(dictionaries: Sequence[str] = CODESPELL_DICTIONARIES) -> list[tuple[str, str]]:
    """(misspelling, correct) pairs from the dictionaries inside the installed ``codespell_lib``.

    Only unambiguous entries (``typo->fix`` with a single fix and no reason) of lower-case words.
    """
    try:
        root = importlib.resources.files("codespell_lib") / "data"
    except ModuleNotFoundError as exc:
        raise DataError("codespell is not installed: `pip install codespell`, or set data.noise.use_codespell=false") from exc
    pairs: list[tuple[str, str]] = []
    for name in dictionaries:
        for line in (root / name).read_text(encoding="utf-8").splitlines():
            typo, sep, fix = line.partition("->")
            if not sep or "," in fix:
                continue
            typo, fix = typo.strip(), fix.strip()
            if typo.islower() and fix.islower() and is_word(typo) and is_word(fix):
                pairs.append((typo, fix))
    return pairs


def resolve_shipped_path(path: str | Path) -> Path:
    """Relative paths: from the cwd when they exist there, else from the repository root."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    candidate = REPO_ROOT / p
    return candidate if candidate.exists() else p


def load_confusions(
    paths: Sequence[str | Path] | None = None,
    use_codespell: bool = True,
    *,
    max_edit_distance: int = 3,
    max_edit_ratio: float = 0.5,
    exclude_words: Collection[str] = (),
) -> ConfusionList:
    """Real misspellings from pair files (query = misspelling, correction = correct word; any
    format :func:`~spellfix.data.readers.read_pairs` reads, e.g. the headerless
    ``data/real_errors_train.tsv``) plus, with ``use_codespell``, codespell's dictionaries.

    ``paths=None`` means :data:`DEFAULT_CONFUSION_FILES`; a default file that is missing (library
    installed without the repo's data/) is skipped with a warning, an explicit one is an error.
    """
    explicit = paths is not None
    pairs: list[tuple[str, str]] = []
    for raw in paths if explicit else DEFAULT_CONFUSION_FILES:
        path = resolve_shipped_path(raw)
        if not explicit and not path.exists():
            logger.warning("confusion list %s not found; using the other sources only", raw)
            continue
        rows, _ = read_pairs(path)
        pairs.extend((r["query"], r["correction"]) for r in rows)
    if use_codespell:
        pairs.extend(codespell_pairs())
    confusions = ConfusionList.from_pairs(
        pairs, max_edit_distance=max_edit_distance, max_edit_ratio=max_edit_ratio, exclude_words=exclude_words
    )
    logger.info("confusion list: %d words, %d real misspellings", len(confusions), confusions.n_pairs)
    return confusions


@functools.lru_cache(maxsize=4)
def _cached_confusions(paths: tuple[str, ...], use_codespell: bool) -> ConfusionList:
    return load_confusions(paths if paths != DEFAULT_CONFUSION_FILES else None, use_codespell)


# --------------------------------------------------------------------------------------------
# The synthesizer


def make_noisy_pairs(
    clean_queries: Sequence[str],
    seed: int = 0,
    config: NoiseConfig | None = None,
    *,
    confusions: ConfusionList | None = None,
    vocabulary: Collection[str] | None = None,
) -> list[tuple[str, str]]:
    """One (noisy, clean) pair per clean query, in input order.

    ``confusions=None`` loads the lists named by ``config.confusion_files`` / ``use_codespell``
    (cached per process); pass ``ConfusionList.empty()`` for synthetic edits only.
    ``vocabulary`` overrides the dictionary used by ``config.only_known_words``. A query without
    any word that may be misspelled (e.g. only names or digits) comes back unchanged. Call with a
    different seed (e.g. per epoch) for fresh noise. Raises ValueError on an empty query.
    """
    config = config or NoiseConfig()
    if confusions is None:
        confusions = (
            _cached_confusions(tuple(config.confusion_files), config.use_codespell)
            if config.confusion_rate > 0
            else ConfusionList.empty()
        )
    if vocabulary is None and config.only_known_words:
        vocabulary = dictionary_words() | frozenset(confusions.by_word)
    synthesizer = _Synthesizer(config, confusions, vocabulary, random.Random(seed))
    pairs: list[tuple[str, str]] = []
    for index, query in enumerate(clean_queries):
        clean = " ".join(query.split())
        if not clean:
            raise ValueError(f"clean_queries[{index}] is empty; clean queries must contain text")
        if synthesizer.rng.random() < config.identity_rate:
            pairs.append((clean, clean))
        else:
            pairs.append((synthesizer.corrupt(clean), clean))
    return pairs


class _Synthesizer:
    """Applies word-level errors to one query at a time; all randomness comes from ``rng``."""

    def __init__(
        self,
        config: NoiseConfig,
        confusions: ConfusionList,
        vocabulary: Collection[str] | None,
        rng: random.Random,
    ):
        self.config = config
        self.confusions = confusions.by_word
        self.vocabulary = vocabulary
        self.rng = rng
        weights = config.edit_weights()
        self._edit_types = [t for t in EDIT_TYPES if weights[t] > 0]
        self._edit_cum = _cumulative([weights[t] for t in self._edit_types])
        self._count_cum = _cumulative(config.edits_per_word)
        self._position_cache: dict[tuple[int, int], list[float]] = {}
        self._eligible_cache: dict[str, bool] = {}

    # ---- query level

    def corrupt(self, clean: str) -> str:
        rng, config = self.rng, self.config
        words = clean.split(" ")
        eligible = [i for i, w in enumerate(words) if self._eligible(w)]
        if not eligible:
            return clean
        n_errors = 2 if len(words) >= 2 and rng.random() < config.two_errors_rate else 1
        touched: set[int] = set()
        for _ in range(n_errors):
            self._one_error(words, eligible, touched)
        noisy = " ".join(w for w in words if w)
        return noisy if noisy and noisy != clean else clean

    def _one_error(self, words: list[str], eligible: list[int], touched: set[int]) -> None:
        rng, config = self.rng, self.config
        free = [i for i in eligible if i not in touched]
        r = rng.random()
        if r < config.split_rate:
            long_words = [i for i in free if len(words[i]) >= 4]
            if long_words:
                i = rng.choice(long_words)
                cut = rng.randint(2, len(words[i]) - 2)
                words[i] = words[i][:cut] + " " + words[i][cut:]
                touched.add(i)
                return
        elif r < config.split_rate + config.merge_rate:
            joinable = [
                i
                for i in range(len(words) - 1)
                if i not in touched and i + 1 not in touched and self._known(words[i]) and self._known(words[i + 1])
            ]
            if joinable:
                i = rng.choice(joinable)
                words[i], words[i + 1] = words[i] + words[i + 1], ""
                touched.update((i, i + 1))
                return
        if free:
            i = rng.choice(free)
            words[i] = self.misspell(words[i], in_context=len(words) > 1)
            touched.add(i)

    def _eligible(self, word: str) -> bool:
        cached = self._eligible_cache.get(word)
        if cached is None:
            cached = len(word) >= self.config.min_word_chars and is_word(word) and self._known(word)
            if len(self._eligible_cache) < 1_000_000:
                self._eligible_cache[word] = cached
        return cached

    def _known(self, word: str) -> bool:
        return is_word(word) and (self.vocabulary is None or word in self.vocabulary)

    # ---- word level

    def misspell(self, word: str, in_context: bool = True) -> str:
        """A misspelling of ``word`` (different from it whenever the word has 2+ letters).
        ``in_context``: the word has neighbours; a one-word query never gets a real-word error (nothing
        could tell it from a correct query, so the model would learn to change correct words)."""
        rng = self.rng
        real = self.confusions.get(word)
        if real and rng.random() < self.config.confusion_rate:
            return real[int(rng.random() * len(real))]
        if in_context and self.config.real_word_rate and rng.random() < self.config.real_word_rate:
            # the same calibrated edits, kept only when they land on another dictionary word
            # ("heart" -> "hart"); words with no such neighbour get an ordinary misspelling
            for _ in range(REAL_WORD_TRIES):
                out = self._synthetic(word)
                if out != word and self._known(out):
                    return out
        return self._synthetic(word)

    def _synthetic(self, word: str) -> str:
        """Calibrated character edits of ``word`` (the word itself when none changes it)."""
        rng = self.rng
        # At most one edit per two letters, the same bound the calibration data was filtered with:
        # three edits turn "vol" into noise no one would type.
        max_edits = max(1, len(word) // 2)
        for _ in range(8):
            n_edits = 1 + bisect.bisect_right(self._count_cum, rng.random() * self._count_cum[-1])
            n_edits = min(n_edits, max_edits)
            out = word
            for _ in range(n_edits):
                out = self._edit(out)
            if out and out != word:
                return out
        return word

    def _edit(self, word: str) -> str:
        rng, n = self.rng, len(word)
        kind = self._edit_types[bisect.bisect_right(self._edit_cum, rng.random() * self._edit_cum[-1])]
        if kind == "undouble":
            doubles = [i for i in range(n - 1) if word[i] == word[i + 1]]
            if doubles:
                i = doubles[int(rng.random() * len(doubles))]
                return word[:i] + word[i + 1 :]
            kind = "delete"
        if kind == "delete":
            if n < 2:
                return word
            i = self._position(n, n)
            return word[:i] + word[i + 1 :]
        if kind == "insert":
            i = self._position(n, n + 1)
            return word[:i] + self._inserted_letter(word, i) + word[i:]
        if kind == "double":
            i = self._position(n, n)
            return word[: i + 1] + word[i] + word[i + 1 :]
        if kind == "transpose":
            if n < 2:
                return word
            i = self._position(n, n - 1)
            return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
        if kind == "substitute_vowel":
            vowels = [i for i in range(n) if word[i] in VOWELS]
            if vowels:
                weights = self._weights(n, n)
                i = rng.choices(vowels, weights=[weights[j] for j in vowels])[0]
                return word[:i] + _other(rng, VOWELS, word[i]) + word[i + 1 :]
            kind = "substitute_other"
        i = self._position(n, n)
        pool = KEYBOARD_NEIGHBORS.get(word[i], "") if kind == "substitute_keyboard" else ""
        return word[:i] + _other(rng, pool or LETTERS, word[i]) + word[i + 1 :]

    def _inserted_letter(self, word: str, i: int) -> str:
        rng, config = self.rng, self.config
        r = rng.random()
        if r < config.insert_keyboard_share:
            around = word[max(i - 1, 0) : i + 1]
            pool = "".join(KEYBOARD_NEIGHBORS.get(ch, "") for ch in around)
            if pool:
                return pool[int(rng.random() * len(pool))]
        elif r < config.insert_keyboard_share + config.insert_vowel_share:
            return VOWELS[int(rng.random() * len(VOWELS))]
        return LETTERS[int(rng.random() * len(LETTERS))]

    # ---- positions

    def _position(self, length: int, n_slots: int) -> int:
        """An index in [0, n_slots) drawn from the calibrated position profile of a word of ``length``."""
        cum = self._position_cache.get((length, n_slots))
        if cum is None:
            cum = self._position_cache[(length, n_slots)] = _cumulative(self._weights(length, n_slots))
        return bisect.bisect_right(cum, self.rng.random() * cum[-1])

    def _weights(self, length: int, n_slots: int) -> list[float]:
        bins = self.config.position_weights
        rest = [bins[min(POSITION_BINS * i // length, POSITION_BINS - 1)] for i in range(1, n_slots)]
        total = sum(rest)
        p_first = self.config.first_char_rate
        if total <= 0 or p_first >= 1:
            return [1.0] + [0.0] * len(rest)
        return [total * p_first / (1 - p_first)] + rest


def _cumulative(weights: Sequence[float]) -> list[float]:
    out, total = [], 0.0
    for w in weights:
        total += float(w)
        out.append(total)
    return out


def _other(rng: random.Random, pool: str, current: str) -> str:
    """A letter of ``pool`` different from ``current`` (``current`` itself if the pool has no other)."""
    choices = pool.replace(current, "")
    return choices[int(rng.random() * len(choices))] if choices else current

