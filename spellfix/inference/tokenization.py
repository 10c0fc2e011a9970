"""Queries -> padded encoder input and generated ids -> text, through ``tokenizers`` alone.

The serving side must not need transformers, so the tokenizer is loaded from ``tokenizer.json`` with
the ``tokenizers`` library. It produces the same ids as training (``spellfix.modeling.encode_sources``:
``<s> tokens </s>`` with ``tokens = tokenizer(text, add_special_tokens=False)``, truncated keeping the
closing ``</s>``).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from tokenizers import Tokenizer

log = logging.getLogger(__name__)

ON_OVERLONG = ("truncate", "error")


class OverlongQueryError(ValueError):
    """A query is longer than the model's max source length and ``on_overlong="error"``."""


@dataclass
class EncodedBatch:
    input_ids: np.ndarray  # (B, S) int64, right-padded with pad id
    attention_mask: np.ndarray  # (B, S) int64, 1 on tokens


class QueryTokenizer:
    """Encoder input ids in the training convention, and decoding of generated ids."""

    def __init__(
        self,
        tokenizer: "Tokenizer | str | Path",
        *,
        max_source_length: int,
        bos_token_id: int,
        eos_token_id: int,
        pad_token_id: int,
        on_overlong: str = "truncate",
    ):
        if on_overlong not in ON_OVERLONG:
            raise ValueError(f"on_overlong must be one of {ON_OVERLONG}, got {on_overlong!r}")
        if max_source_length < 3:
            raise ValueError(f"max_source_length must be >= 3 (<s>, one token, </s>), got {max_source_length}")
        if isinstance(tokenizer, (str, Path)):
            tokenizer = Tokenizer.from_file(str(tokenizer))
        else:  # a copy: we change its padding/truncation settings
            tokenizer = Tokenizer.from_str(tokenizer.to_str())
        self.tokenizer = tokenizer
        # tokenizer.json may carry the padding/truncation a trainer left on; we do both ourselves.
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self.max_source_length = max_source_length
        self.bos_id, self.eos_id, self.pad_id = bos_token_id, eos_token_id, pad_token_id
        self.on_overlong = on_overlong

    def encode_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """``<s> tokens </s>`` per text; over-long texts are truncated (with a warning) or rejected."""
        bodies = [enc.ids for enc in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]
        limit = self.max_source_length - 2
        out: list[list[int]] = []
        for i, body in enumerate(bodies):
            if len(body) > limit:
                message = (
                    f"query {i} has {len(body) + 2} tokens, more than max_source_length={self.max_source_length} "
                    f"(query starts {texts[i][:40]!r})"
                )
                if self.on_overlong == "error":
                    raise OverlongQueryError(message + "; shorten it or use on_overlong='truncate'")
                warnings.warn(message + "; truncated", stacklevel=3)
                body = body[:limit]
            out.append([self.bos_id, *body, self.eos_id])
        return out

    def encode_targets(self, texts: Sequence[str], max_length: int) -> list[list[int]]:
        """``tokens </s>`` per text, the training labels' convention (``modeling.encode_targets``):
        what the decoder would generate to reproduce ``text``. Used to score "leave it alone"."""
        bodies = [enc.ids for enc in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]
        return [[*body[: max_length - 1], self.eos_id] for body in bodies]

    def pad(self, sequences: Sequence[Sequence[int]]) -> EncodedBatch:
        length = max(len(s) for s in sequences)
        ids = np.full((len(sequences), length), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(sequences), length), dtype=np.int64)
        for row, seq in enumerate(sequences):
            ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        return EncodedBatch(ids, mask)

    def decode(self, sequences: Sequence[Sequence[int]]) -> list[str]:
        """Generated ids -> text, special tokens dropped, whitespace collapsed (byte-level BPE adds a
        leading space)."""
        texts = self.tokenizer.decode_batch([list(map(int, s)) for s in sequences], skip_special_tokens=True)
        return [" ".join(t.split()) for t in texts]
