"""From a recipe's ``data`` section to (source, target) text pairs and dev rows.

The one place where pair files, clean corpora (through the noise synthesizer) and the optional
dictionary candidates meet, so training, evaluation and export agree on what the encoder sees.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Sequence

from spellfix.config import DataConfig, resolve_data_path
from spellfix.data.readers import read_clean_queries, read_pairs


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
    if limit is not None and len(rows) > limit:
        stride = len(rows) / limit
        rows = [rows[int(i * stride)] for i in range(limit)]
    return rows


class SourceFormatter:
    """Turns a (normalised) query into the encoder's input text: the query itself, or the query
    followed by dictionary candidates when ``data.candidates.enabled``."""

    def __init__(self, cfg: DataConfig):
        self.candidates = cfg.candidates
        self._annotator = None
        if getattr(cfg.candidates, "enabled", False):
            from spellfix.data.candidates import CandidateAnnotator

            self._annotator = CandidateAnnotator(cfg.candidates)

    def __call__(self, queries: Sequence[str]) -> list[str]:
        if self._annotator is None:
            return list(queries)
        return [self._annotator.annotate(q) for q in queries]

    def settings(self) -> dict:
        """The candidates config as saved into a model dir's spellfix.json."""
        return asdict(self.candidates)
