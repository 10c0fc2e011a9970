"""Dictionary candidates in the encoder input: give the model the vocabulary it cannot learn fast.

Why: a seq2seq corrector trained from scratch learns to copy long before it learns English spelling
(STACK.md, last section). A frequency dictionary already knows which real words sit near a typo, so
we look them up (SymSpell symmetric-delete lookups, ``spellfix.lexical.symdelete``: ~0.1 ms of CPU for a new word,
microseconds once it is in the LRU cache) and append them to the encoder input. The model then only has to *pick* -- a candidate, or the word as typed -- which a
small model learns quickly; bart-base takes the same text. The decoder target stays the plain
corrected query, so nothing downstream changes.

Format (plain text, so byte-level BPE and character vocabularies alike tokenize it)::

    "kickstart my hart | hart: heart hard part hat art"
    "<query>[<separator><word><word_separator><candidate> <candidate> ...]*"

Only some words get candidates (``CandidatesConfig.words``):

* ``unknown`` -- words not in the dictionary (non-word errors, but also names such as "halen");
* ``unknown+suspicious`` -- also dictionary words that look like real-word errors: a neighbour
  within ``suspicious_max_edit_distance`` that fits the neighbouring words much better (bigram
  context score higher by at least ``suspicious_threshold`` nats, after the edit penalty), e.g.
  "they" in "ballad of john and yoko they beatles";
* ``all`` -- every alphabetic word (longest inputs; for experiments).

Candidates are ranked by a small noisy-channel score: log unigram probability, plus bigram context
with the words either side (stupid backoff over symspellpy's bigram list), minus
``distance_penalty`` per edit and ``first_letter_penalty`` when the first letter differs. On
queries_dev this ranking puts the right word in the top 5 for 87% of non-word errors (SymSpell's
own order: 82%) and for 62% of real-word errors, which SymSpell's lookup never flags -- measured
by :func:`candidate_recall` (figures and sweeps in docs/quality.md).

Pure Python + symspellpy: no torch, so the serving runtime can import it. Deterministic: the
candidate pool is cut in our own total order (edits, frequency, spelling) and score ties are broken
by spelling, so the output never depends on hash seeds or symspellpy's traversal order.
"""

from __future__ import annotations

import functools
import importlib.resources
import math
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from spellfix.lexical.symdelete import lookup_all

SYMSPELL_PACKAGE_DICTIONARY = "frequency_dictionary_en_82_765.txt"
SYMSPELL_PACKAGE_BIGRAMS = "frequency_bigramdictionary_en_243_342.txt"
BUILTIN = "symspellpy"  # the dictionary files shipped inside the symspellpy wheel

# Words we look up: letters with optional inner apostrophes. Digits, hyphens, model numbers
# ("ps4", "t-shirt", "55in") are left alone: no English dictionary has them.
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)*")

WordSelection = Literal["unknown", "unknown+suspicious", "all"]


def _help(text: str, **kwargs: Any) -> Any:
    return field(metadata={"help": text}, **kwargs)


@dataclass
class CandidatesConfig:
    """Recipe section ``data.candidates``; saved with the model so the runtime annotates alike."""

    enabled: bool = _help("Append dictionary candidates to the encoder input.", default=False)
    max_per_word: int = _help("Candidates listed per annotated word, best first.", default=5)
    max_edit_distance: int = _help(
        "Edit distance (Damerau-OSA) searched for words not in the dictionary (1 or 2).", default=2
    )
    words: WordSelection = _help(
        "Which words get candidates: unknown (not in the dictionary), unknown+suspicious (also known "
        "words with a much likelier neighbour in context: real-word errors), all.",
        default="unknown+suspicious",
    )
    suspicious_max_edit_distance: int = _help(
        "Edit distance searched around known words for real-word errors (capped at max_edit_distance; "
        "0 turns suspicious words off).",
        default=2,
    )
    suspicious_threshold: float = _help(
        "A known word is annotated when its best neighbour's score (context, minus the edit penalties) "
        "reaches the word's own score plus this many nats. Lower: more recall, more noise "
        "(docs/quality.md has the sweep).",
        default=-3.0,
    )
    min_count: int = _help(
        "Dictionary words seen fewer times than this are treated as unknown.", default=0
    )
    context: bool = _help(
        "Rank candidates with the bigram context of the neighbouring words (false also turns off "
        "suspicious words, which are found by context).",
        default=True,
    )
    distance_penalty: float = _help("Score penalty (nats) per edit when ranking candidates.", default=8.0)
    first_letter_penalty: float = _help(
        "Extra penalty (nats) for a candidate whose first letter differs from the typed word's: "
        "people rarely get the first letter wrong (3% of edits in data/real_errors_train.tsv, "
        "against ~14% of letters).",
        default=3.0,
    )
    backoff: float = _help("Log-penalty for a bigram absent from the bigram list (stupid backoff).", default=-3.0)
    rerank_pool: int = _help(
        "Neighbours (in SymSpell's order: fewest edits, then most frequent) re-ranked with context; "
        "bounds the cost for short words, which have hundreds of neighbours.",
        default=30,
    )
    separator: str = _help("Text between the query and each annotated word.", default=" | ")
    word_separator: str = _help("Text between an annotated word and its candidates.", default=": ")
    dictionary: str = _help(
        "Word-frequency file (word<space>count per line), or 'symspellpy' for its shipped 82,765-word list.",
        default=BUILTIN,
    )
    bigram_dictionary: str = _help(
        "Bigram-frequency file (w1 w2<space>count), 'symspellpy' for the shipped list, or '' for none "
        "(then context ranking and suspicious words are off).",
        default=BUILTIN,
    )
    cache_size: int = _help("Words whose dictionary lookups are kept in an LRU cache.", default=65536)

    def __post_init__(self) -> None:
        problems = []
        if self.rerank_pool < self.max_per_word:
            problems.append(f"rerank_pool ({self.rerank_pool}) must be >= max_per_word ({self.max_per_word})")
        if self.max_per_word < 1:
            problems.append(f"max_per_word must be >= 1, got {self.max_per_word}")
        if self.max_edit_distance not in (1, 2, 3):
            problems.append(f"max_edit_distance must be 1, 2 or 3, got {self.max_edit_distance}")
        if self.suspicious_max_edit_distance < 0:
            problems.append(f"suspicious_max_edit_distance must be >= 0, got {self.suspicious_max_edit_distance}")
        if self.words not in ("unknown", "unknown+suspicious", "all"):
            problems.append(f"words must be one of 'unknown', 'unknown+suspicious', 'all', got {self.words!r}")
        if not self.separator.strip() or not self.word_separator.strip():
            problems.append("separator and word_separator must contain a visible character")
        if problems:
            raise ValueError("data.candidates: " + "; ".join(problems))


# --------------------------------------------------------------------------------------------
# Dictionaries


def resolve_dictionary(source: str, builtin_name: str) -> Path:
    """'symspellpy' -> the file inside the installed symspellpy package; otherwise a path."""
    if source == BUILTIN:
        return Path(str(importlib.resources.files("symspellpy") / builtin_name))
    path = Path(source).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"candidates dictionary not found: {path} (give a file or {BUILTIN!r})")
    return path


def load_symspell(
    dictionary: str = BUILTIN, bigram_dictionary: str = BUILTIN, max_edit_distance: int = 2, prefix_length: int = 7
):
    """A loaded ``symspellpy.SymSpell`` (cached per process: building the delete index takes ~3 s)."""
    return _load_symspell(dictionary, bigram_dictionary, max_edit_distance, prefix_length)


@functools.lru_cache(maxsize=4)
def _load_symspell(dictionary: str, bigram_dictionary: str, max_edit_distance: int, prefix_length: int):
    from symspellpy import SymSpell

    sym = SymSpell(max_dictionary_edit_distance=max_edit_distance, prefix_length=prefix_length)
    path = resolve_dictionary(dictionary, SYMSPELL_PACKAGE_DICTIONARY)
    if not sym.load_dictionary(str(path), term_index=0, count_index=1, encoding="utf-8"):
        raise ValueError(f"{path}: could not load as a 'word count' frequency dictionary")
    if not sym.words:
        raise ValueError(f"{path}: no 'word count' lines found")
    if bigram_dictionary:
        bpath = resolve_dictionary(bigram_dictionary, SYMSPELL_PACKAGE_BIGRAMS)
        if not sym.load_bigram_dictionary(str(bpath), term_index=0, count_index=2, encoding="utf-8"):
            raise ValueError(f"{bpath}: could not load as a 'word1 word2 count' bigram dictionary")
    return sym


# --------------------------------------------------------------------------------------------
# Annotation


@dataclass(frozen=True)
class WordCandidates:
    """Candidates for the word at ``position`` (0-based, whitespace split) of a query."""

    position: int
    word: str
    candidates: tuple[str, ...]
    reason: Literal["unknown", "suspicious", "all"]


class CandidateAnnotator:
    """Turns a query into the encoder input: the query plus dictionary candidates for some words.

    >>> CandidateAnnotator(CandidatesConfig(enabled=True)).annotate("kickstart my hart")  # doctest: +SKIP
    'kickstart my hart | hart: heart hard part hat art'
    """

    def __init__(self, config: CandidatesConfig | None = None):
        self.config = config or CandidatesConfig()
        cfg = self.config
        self._sym = load_symspell(cfg.dictionary, cfg.bigram_dictionary if cfg.context or cfg.words != "unknown" else "", max(cfg.max_edit_distance, 1))
        self._words: dict[str, int] = self._sym.words
        self._bigrams: dict[str, int] = self._sym.bigrams if cfg.bigram_dictionary else {}
        self._use_context = cfg.context and bool(self._bigrams)
        self._log_n_uni = math.log(sum(self._words.values()))
        self._log_n_bi = math.log(sum(self._bigrams.values())) if self._bigrams else 0.0
        self._word_order: dict[str, int] | None = None
        self._lookup = functools.lru_cache(maxsize=cfg.cache_size)(self._lookup_uncached)

    # -- public --------------------------------------------------------------------------

    def annotate(self, query: str, items: Sequence[WordCandidates] | None = None) -> str:
        """Encoder input text for ``query`` (unchanged when no word gets candidates); ``items``:
        its ``word_candidates`` when the caller already has them."""
        cfg = self.config
        parts = [query]
        for item in self.word_candidates(query) if items is None else items:
            parts.append(f"{cfg.separator}{item.word}{cfg.word_separator}{' '.join(item.candidates)}")
        return "".join(parts)

    def annotate_many(self, queries: Iterable[str]) -> list[str]:
        return [self.annotate(q) for q in queries]

    def word_candidates(self, query: str) -> list[WordCandidates]:
        """Which words of ``query`` get candidates, and which (best first)."""
        cfg = self.config
        words = query.lower().split()
        out: list[WordCandidates] = []
        for i, word in enumerate(words):
            if not _WORD.fullmatch(word):
                continue
            if not self.is_known(word):
                reason, max_distance = "unknown", cfg.max_edit_distance
            elif cfg.words == "all":
                reason, max_distance = "all", cfg.max_edit_distance
            elif cfg.words == "unknown+suspicious" and self._use_context and cfg.suspicious_max_edit_distance > 0:
                reason, max_distance = "suspicious", min(cfg.suspicious_max_edit_distance, cfg.max_edit_distance)
            else:
                continue
            neighbours = self._lookup(word, max_distance)
            if not neighbours:
                continue
            prev = words[i - 1] if i > 0 else None
            nxt = words[i + 1] if i + 1 < len(words) else None
            scored = sorted(
                ((static + self._context_score(prev, term, log_uni, nxt), term) for term, static, log_uni in neighbours),
                key=lambda pair: (-pair[0], pair[1]),
            )
            if reason == "suspicious":
                own = self._context_score(prev, word, self._log_unigram(word), nxt)
                if scored[0][0] - own < cfg.suspicious_threshold:
                    continue
            out.append(WordCandidates(i, word, tuple(t for _, t in scored[: cfg.max_per_word]), reason))
        return out

    def is_known(self, word: str) -> bool:
        """In the dictionary (with at least ``min_count`` occurrences)."""
        return self._words.get(word.lower(), 0) >= max(self.config.min_count, 1)

    # -- scoring -------------------------------------------------------------------------

    def _lookup_uncached(self, word: str, max_distance: int) -> tuple[tuple[str, float, float], ...]:
        """The ``rerank_pool`` nearest dictionary words as (term, edit score, log unigram).

        The edit score (minus ``distance_penalty`` per edit and ``first_letter_penalty``) and the
        unigram term depend only on the word, so they are cached with it; context is added per query."""
        cfg = self.config
        order = self._order()
        ranked = sorted((distance * len(order) + order[term], term) for term, distance in lookup_all(self._sym, word, max_distance) if term != word)
        # Our own total order (fewest edits, most frequent, then spelling — ``_order``) so the pool
        # cut never depends on how the index happened to be traversed.
        out = []
        for key, term in ranked[: cfg.rerank_pool]:
            distance = key // len(order)
            static = -cfg.distance_penalty * distance - (cfg.first_letter_penalty if term[:1] != word[:1] else 0.0)
            out.append((term, static, self._log_unigram(term)))
        return tuple(out)

    def _order(self) -> dict[str, int]:
        """Each dictionary word's place when sorted by count (most frequent first), then spelling."""
        if self._word_order is None:
            ranked = sorted(self._words.items(), key=lambda item: (-item[1], item[0]))
            self._word_order = {word: i for i, (word, _) in enumerate(ranked)}
        return self._word_order

    def _log_unigram(self, word: str) -> float:
        return math.log(self._words.get(word, 0) + 1) - self._log_n_uni

    def _context_score(self, prev: str | None, candidate: str, log_uni: float, nxt: str | None) -> float:
        """log P(prev, cand, next) up to terms shared by all candidates: the chain
        P(cand) * P(cand | prev) * P(next | cand), each conditional a bigram/unigram ratio, with
        stupid backoff (``backoff`` + unigram) for bigrams the list does not have."""
        score = log_uni
        if not self._use_context:
            return score
        if prev is not None:
            count = self._bigrams.get(f"{prev} {candidate}")
            if count:
                score += math.log(count) - self._log_n_bi - self._log_unigram(prev)
            else:
                score += self.config.backoff + log_uni
        if nxt is not None:
            count = self._bigrams.get(f"{candidate} {nxt}")
            if count:
                score += math.log(count) - self._log_n_bi - log_uni
            else:
                score += self.config.backoff + self._log_unigram(nxt)
        return score


# --------------------------------------------------------------------------------------------
# Measuring the ceiling


def candidate_recall(
    annotator: CandidateAnnotator,
    queries: Sequence[str],
    references: Sequence[str],
    *,
    ks: Sequence[int] = (1, 3, 5),
    error_types: Sequence[str] | None = None,
) -> dict[str, Any]:
    """How much correction the candidates make possible, on aligned (query, reference) pairs.

    Pairs whose word counts differ (split/merge errors) are counted in ``n_unaligned`` and skipped.
    Returned figures (shares in [0, 1]):

    * ``annotated`` -- misspelled words that got any candidates at all;
    * ``recall@k`` -- misspelled words whose correct word is among the first k candidates
      (``recall@max`` uses all ``max_per_word``);
    * ``query_recall`` -- misspelled queries where *every* misspelled word has its fix among the
      candidates: the ceiling on exact match for a model that only picks among candidates;
    * ``noise_rate`` -- words of the correct queries (the distinct references, fed as inputs) that
      get candidates anyway: input noise the model must learn to ignore;
    * ``chars_added_mean`` -- mean characters appended per query (input-length cost);
    * ``us_per_query`` -- mean wall time to find candidates with a cold LRU cache (empty at the
      start, filling as the queries pass); ``us_per_query_warm`` the full ``annotate`` once the
      cache holds the words; ``cpu_us_per_query(_warm)`` the same in process CPU time.

    ``error_types`` (one label per pair, e.g. non-word / real-word) adds a ``by_error_type`` split.
    """
    if len(queries) != len(references):
        raise ValueError(f"queries ({len(queries)}) and references ({len(references)}) differ in length")
    if not queries:
        raise ValueError("candidate_recall: no pairs given")
    kmax = annotator.config.max_per_word
    ks = sorted({*ks, kmax})
    labels = list(error_types) if error_types is not None else ["all"] * len(queries)

    unique_refs = sorted(set(references))
    annotator._lookup.cache_clear()
    start, cpu_start = time.perf_counter(), time.process_time()
    annotated_queries = [annotator.word_candidates(q) for q in queries]
    cold, cold_cpu = time.perf_counter() - start, time.process_time() - cpu_start
    start, cpu_start = time.perf_counter(), time.process_time()
    texts = [annotator.annotate(q) for q in queries]
    warm, warm_cpu = time.perf_counter() - start, time.process_time() - cpu_start
    ref_items = [annotator.word_candidates(r) for r in unique_refs]
    correct_words = sum(len(r.split()) for r in unique_refs)
    noisy_words = sum(len(items) for items in ref_items)

    def new_counter() -> dict[str, float]:
        return {"n_words": 0, "annotated": 0, "n_queries": 0, "query_hits": 0, **{f"hit@{k}": 0 for k in ks}}

    overall: dict[str, float] = new_counter()
    by_type: dict[str, dict[str, float]] = {}
    unaligned = 0
    for q, r, label, q_items in zip(queries, references, labels, annotated_queries):
        qw, rw = q.lower().split(), r.lower().split()
        if len(qw) != len(rw):
            unaligned += 1
            continue
        wrong = [i for i, (a, b) in enumerate(zip(qw, rw)) if a != b]
        if not wrong:
            continue
        by_pos = {item.position: item.candidates for item in q_items}
        all_hit = all(rw[i] in by_pos.get(i, ()) for i in wrong)
        for bucket in (overall, by_type.setdefault(label, new_counter())):
            bucket["n_queries"] += 1
            bucket["query_hits"] += all_hit
            for i in wrong:
                cands = by_pos.get(i, ())
                bucket["n_words"] += 1
                bucket["annotated"] += bool(cands)
                for k in ks:
                    bucket[f"hit@{k}"] += rw[i] in cands[:k]

    def shares(bucket: dict[str, float]) -> dict[str, Any]:
        n = bucket["n_words"] or 1
        out = {
            "n_misspelled_words": bucket["n_words"],
            "annotated": bucket["annotated"] / n,
            **{f"recall@{k}": bucket[f"hit@{k}"] / n for k in ks},
            "query_recall": bucket["query_hits"] / (bucket["n_queries"] or 1),
        }
        return out

    result = {
        "n_pairs": len(queries),
        "n_unaligned": unaligned,
        **shares(overall),
        "noise_rate": noisy_words / max(correct_words, 1),
        "chars_added_mean": sum(len(t) - len(q) for t, q in zip(texts, queries)) / len(queries),
        "us_per_query": cold / len(queries) * 1e6,
        "us_per_query_warm": warm / len(queries) * 1e6,
        # CPU time: what the annotation costs, whatever else runs on the machine
        "cpu_us_per_query": cold_cpu / len(queries) * 1e6,
        "cpu_us_per_query_warm": warm_cpu / len(queries) * 1e6,
        "config": {k: v for k, v in vars(annotator.config).items()},
    }
    if error_types is not None:
        result["by_error_type"] = {label: shares(bucket) for label, bucket in sorted(by_type.items())}
    return result
