"""Runtime: one decoding loop over torch / onnxruntime / tensorrt backends, and ``SpellCorrector``.

``import spellfix.inference`` stays light (no torch, transformers or accelerate): the onnxruntime
and tensorrt backends, the tokenizer (``tokenizers`` on ``tokenizer.json``) and the loop need only
numpy, so the same code runs inside Triton's python backend. The torch backend imports torch lazily.
"""

from __future__ import annotations

from spellfix.inference.acceptance import AcceptanceModel
from spellfix.inference.corrector import PRECISIONS, CopyDecision, SpellCorrector
from spellfix.inference.decoding import DecodingOptions, generate
from spellfix.inference.tokenization import OverlongQueryError
from spellfix.inference.text import check_queries, normalize_query

__all__ = [
    "PRECISIONS",
    "AcceptanceModel",
    "DecodingOptions",
    "OverlongQueryError",
    "CopyDecision",
    "SpellCorrector",
    "check_queries",
    "generate",
    "normalize_query",
]
