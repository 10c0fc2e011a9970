"""From a recipe's ``data`` section to (source, target) text pairs and dev rows.

The one place where pair files, clean corpora (through the noise synthesizer) and the optional
dictionary candidates meet, so training, evaluation and export agree on what the encoder sees.
"""

from __future__ import annotations

import multiprocessing
from dataclasses import asdict
from typing import Sequence

from tqdm.auto import tqdm

from spellfix.config import DataConfig, resolve_data_path
from spellfix.data.readers import read_clean_queries, read_pairs, spread_rows


def load_training_pairs(cfg: DataConfig, seed: int) -> tuple[list[str], list[str]]:
    """(queries, corrections) from data.train pair files plus noisy pairs from data.clean corpora."""
    queries: list[str] = []
    corrections: list[str] = []
    for path in cfg.train:
        rows, report = read_pairs(
            resolve_data_path(path),
            query_column=cfg.query_column,
            correction_column=cfg.correction_column,
            on_error=cfg.on_error,
            max_query_chars=cfg.max_query_chars,
        )
        queries.extend(r["query"] for r in rows)
        corrections.extend(r["correction"] for r in rows)
    clean: list[str] = []
    for path in cfg.clean:
        texts, report = read_clean_queries(resolve_data_path(path), on_error=cfg.on_error, max_query_chars=cfg.max_query_chars)
        clean.extend(texts)
    if cfg.max_clean_queries is not None:
        clean = clean[: cfg.max_clean_queries]
    if cfg.dictionary_words:
        from spellfix.lexical.dictionary import top_dictionary_words

        clean.extend(top_dictionary_words(cfg.dictionary_words))
    if clean:
        from spellfix.data.noise import make_noisy_pairs

        for copy in range(cfg.noisy_copies):
            for noisy, correct in make_noisy_pairs(clean, seed=seed + copy, config=cfg.noise):
                queries.append(noisy)
                corrections.append(correct)
    if not queries:
        raise ValueError("data: no training pairs (data.train and data.clean gave nothing)")
    return queries, corrections


def load_dev_rows(cfg: DataConfig, limit: int | None = None) -> list[dict[str, str]]:
    """Dev rows for evaluation during training, spread over the file when ``limit`` cuts it."""
    if not cfg.dev:
        return []
    rows, report = read_pairs(
        resolve_data_path(cfg.dev),
        query_column=cfg.query_column,
        correction_column=cfg.correction_column,
        on_error=cfg.on_error,
        max_query_chars=cfg.max_query_chars,
    )
    return spread_rows(rows, limit)


#: below this many queries one process is faster than starting workers (each loads the dictionary, ~3 s)
PARALLEL_MIN_QUERIES = 5000

_worker_annotator = None


def _init_worker(candidates_config) -> None:
    global _worker_annotator
    from spellfix.lexical.candidates import CandidateAnnotator

    _worker_annotator = CandidateAnnotator(candidates_config)


def _annotate_in_worker(query: str) -> str:
    return _worker_annotator.annotate(query)


class SourceFormatter:
    """Turns a (normalised) query into the encoder's input text: the query itself, or the query
    followed by dictionary candidates when ``data.candidates.enabled``."""

    def __init__(self, cfg: DataConfig):
        self.candidates = cfg.candidates
        self._annotator = None
        if getattr(cfg.candidates, "enabled", False):
            from spellfix.lexical.candidates import CandidateAnnotator

            self._annotator = CandidateAnnotator(cfg.candidates)

    def __call__(self, queries: Sequence[str], *, workers: int = 1, progress: bool = False) -> list[str]:
        """Encoder texts, in order. ``workers > 1`` annotates in that many processes (symspellpy's
        lookups are pure Python, ~2-3 ms per new query: 120 k training queries take minutes on one
        core); the output is identical to the serial one (the annotator is deterministic)."""
        if self._annotator is None:
            return list(queries)
        bar = {"desc": "dictionary candidates", "unit": "query", "total": len(queries), "disable": not progress, "mininterval": 2.0}
        if workers <= 1 or len(queries) < PARALLEL_MIN_QUERIES:
            return [self._annotator.annotate(q) for q in tqdm(queries, **bar)]
        chunk = max(64, len(queries) // (workers * 32))
        with multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker, initargs=(self.candidates,)) as pool:
            return list(tqdm(pool.imap(_annotate_in_worker, queries, chunksize=chunk), **bar))

    def settings(self) -> dict:
        """The candidates config as saved into a model dir's spellfix.json."""
        return asdict(self.candidates)
