"""Tokenize (source, target) pairs through ``datasets.map`` with an on-disk cache.

The cache file is keyed by a hash of the pairs, the tokenizer and the max lengths, so a resumed or
repeated run skips tokenization, and any change to data or tokenizer invalidates it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

import datasets
import torch

from spellfix.modeling import encode_sources, encode_targets


def _fingerprint(sources: Sequence[str], targets: Sequence[str], tokenizer, max_source: int, max_target: int) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([max_source, max_target]).encode())
    h.update(tokenizer.backend_tokenizer.to_str().encode())
    for s, t in zip(sources, targets):
        h.update(s.encode())
        h.update(b"\x00")
        h.update(t.encode())
        h.update(b"\x01")
    return h.hexdigest()[:20]


def tokenize_pairs(
    sources: Sequence[str],
    targets: Sequence[str],
    tokenizer,
    *,
    max_source_length: int,
    max_target_length: int,
    cache_dir: Path | None = None,
) -> datasets.Dataset:
    """A dataset with ``input_ids`` (``<s> .. </s>``) and ``labels`` (``.. </s>``) columns."""
    if len(sources) != len(targets):
        raise ValueError(f"{len(sources)} sources but {len(targets)} targets")
    raw = datasets.Dataset.from_dict({"source": list(sources), "target": list(targets)})

    def encode(batch: dict) -> dict:
        return {
            "input_ids": encode_sources(tokenizer, batch["source"], max_source_length),
            "labels": encode_targets(tokenizer, batch["target"], max_target_length),
        }

    kwargs = {}
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        key = _fingerprint(sources, targets, tokenizer, max_source_length, max_target_length)
        kwargs = {"cache_file_name": str(cache_dir / f"tokenized-{key}.arrow"), "load_from_cache_file": True}
    return raw.map(encode, batched=True, batch_size=2048, desc="tokenizing", **kwargs)


class TokenizedPairs(torch.utils.data.Dataset):
    """In-memory (input_ids, labels) lists: cheap random access for the micro-batch sampler.

    Why copied out of Arrow: since datasets 4, ``ds["input_ids"]`` is a lazy ``Column`` that
    decodes rows on every access, and the training loop reads every source length once per step
    for its throughput count (3.5 s per step on 283k pairs, 7x the step itself)."""

    def __init__(self, ds: datasets.Dataset):
        columns = ds.select_columns(["input_ids", "labels"])[:]
        self.sources: list[list[int]] = columns["input_ids"]
        self.targets: list[list[int]] = columns["labels"]
        self._source_lengths = [len(s) for s in self.sources]
        self._target_lengths = [len(t) for t in self.targets]

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, i: int) -> tuple[list[int], list[int]]:
        return self.sources[i], self.targets[i]

    def __getitems__(self, indices: list[int]) -> list[tuple[list[int], list[int]]]:
        return [(self.sources[i], self.targets[i]) for i in indices]

    @property
    def source_lengths(self) -> list[int]:
        return self._source_lengths

    @property
    def target_lengths(self) -> list[int]:
        return self._target_lengths
