"""PyTorch backend: the export's own graph modules run eagerly (the reference the ONNX graphs match)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from spellfix.inference.torch_graphs import DecoderGraph, DecoderWithPastGraph, EncoderGraph


@dataclass
class _TorchState:
    mask: torch.Tensor  # (B, S) int64
    hidden: torch.Tensor | None  # encoder output, until the first decoder step
    self_kv: list[torch.Tensor] | None = None
    cross_kv: list[torch.Tensor] | None = None


class TorchBackend:
    """Runs the model's encoder / first-step decoder / decoder-with-past graphs in PyTorch.

    ``dtype`` casts the weights (e.g. ``torch.bfloat16``: on this kind of CPU, bf16 *weights* are
    ~2x faster at batch 1 than fp32, while autocast over fp32 weights is slower — STACK.md).
    """

    name = "torch"

    def __init__(self, model: torch.nn.Module, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None):
        model = model.eval().to(device)
        if dtype is not None:
            model = model.to(dtype)
        self.device = torch.device(device)
        self.encoder = EncoderGraph(model).eval()
        self.decoder = DecoderGraph(model).eval()
        self.decoder_with_past = DecoderWithPastGraph(model).eval()
        self.num_layers = self.decoder.core.num_layers

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array)).to(self.device)

    @torch.inference_mode()
    def encode(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> _TorchState:
        mask = self._tensor(attention_mask)
        return _TorchState(mask=mask, hidden=self.encoder(self._tensor(input_ids), mask))

    @torch.inference_mode()
    def decode_step(
        self, state: _TorchState, input_ids: np.ndarray, full_logits: bool = True, suppress_token: int | None = None
    ) -> tuple[np.ndarray, _TorchState]:
        ids = self._tensor(input_ids)
        n = 2 * self.num_layers
        if state.self_kv is None:
            out = self.decoder(ids, state.hidden, state.mask)
            new_state = _TorchState(mask=state.mask, hidden=None, self_kv=list(out[1 : 1 + n]), cross_kv=list(out[1 + n :]))
        else:
            out = self.decoder_with_past(ids, state.mask, *state.self_kv, *state.cross_kv)
            new_state = _TorchState(mask=state.mask, hidden=None, self_kv=list(out[1:]), cross_kv=state.cross_kv)
        logits = out[0][:, -1].float().cpu().numpy()
        return logits, new_state

    @torch.inference_mode()
    def decode_block(self, state: _TorchState, input_ids: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        if state.hidden is None:
            raise ValueError("decode_block needs the encoder state (before any decode_step)")
        hidden, mask = state.hidden, state.mask
        if rows is not None:
            index = self._tensor(np.asarray(rows, dtype=np.int64))
            hidden, mask = hidden.index_select(0, index), mask.index_select(0, index)
        core = self.decoder.core
        logits, _ = core.run(self._tensor(input_ids), mask, None, core.cross_key_values(hidden))
        return logits.float().cpu().numpy()

    @torch.inference_mode()
    def select_rows(self, state: _TorchState, rows: np.ndarray) -> _TorchState:
        index = self._tensor(np.asarray(rows, dtype=np.int64))

        def pick(tensors: list[torch.Tensor] | None) -> list[torch.Tensor] | None:
            return None if tensors is None else [t.index_select(0, index) for t in tensors]

        return _TorchState(
            mask=state.mask.index_select(0, index),
            hidden=None if state.hidden is None else state.hidden.index_select(0, index),
            self_kv=pick(state.self_kv),
            cross_kv=pick(state.cross_kv),
        )
