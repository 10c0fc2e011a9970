"""The backend protocol the decoding loop runs on: encode once, then one decoder step at a time.

A backend owns its tensors (torch tensors, ONNX Runtime OrtValues, TensorRT device buffers) inside an
opaque *state*; the loop only sees numpy ids in and float32 logits out. ``select_rows`` keeps/repeats/
reorders batch rows of the state — beam search uses it to follow the surviving beams and the loop
uses it to drop rows that have finished, so a batch of mixed lengths stops paying for done rows.
``decode_block`` runs the decoder over whole (batch, length) token blocks without a cache, from the
encoder state: copy-verify decoding checks a whole draft in one call with it, and the judging pass
scores every answer of a batch in one teacher-forced call (``spellfix.inference.decoding``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Union, runtime_checkable

import numpy as np


@dataclass
class TopCandidates:
    """A greedy step's answer from a backend that scores only its best tokens (no (B, V) array):
    per row, candidate ids (B, K) and their exact logits (B, K), with the suppressed token already
    at -inf, such that the best candidate is the argmax over the whole vocabulary."""

    ids: np.ndarray
    logits: np.ndarray

    def argmax(self) -> np.ndarray:
        best = self.logits.argmax(axis=-1)
        return np.take_along_axis(self.ids, best[:, None], axis=-1)[:, 0]


StepLogits = Union[np.ndarray, TopCandidates]


@runtime_checkable
class Backend(Protocol):
    #: short name used in logs and benchmarks ("torch", "onnxruntime", "tensorrt")
    name: str

    def encode(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> Any:
        """Run the encoder on (B, S) int64 ids/mask; return the decoder state for step 0."""
        ...

    def decode_step(
        self, state: Any, input_ids: np.ndarray, full_logits: bool = True, suppress_token: int | None = None
    ) -> tuple[StepLogits, Any]:
        """Feed one token per row ((B, 1) int64); return float32 logits (B, V) and the next state.

        ``full_logits=False`` says the caller only takes the argmax after setting the logit of
        ``suppress_token`` (if not None) to -inf: a backend may then answer with ``TopCandidates``
        instead (the ONNX Runtime shortlist heads do), saving the (B, V) copy and scan.
        """
        ...

    def decode_block(self, state: Any, input_ids: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """Teacher-forced decoder pass with no cache: row i of ``input_ids`` ((B, T) int64, the
        decoder start token first) attends to encoder row ``rows[i]`` of ``state`` (an encoder
        state from ``encode``; ``None``: row i). Returns float32 logits (B, T, V). ``state`` is left
        as it was, so one encoder run serves every verify and scoring pass of a batch."""
        ...

    def select_rows(self, state: Any, rows: np.ndarray) -> Any:
        """A state whose row i is row ``rows[i]`` of ``state`` (rows may repeat or be dropped)."""
        ...
