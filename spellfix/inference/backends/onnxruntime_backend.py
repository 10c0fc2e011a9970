"""ONNX Runtime backend over an export's graphs, with IO binding so the KV cache never leaves ORT.

Each step binds the previous step's ``present.*`` OrtValues as this step's ``past_key_values.*``
inputs and lets ORT allocate the outputs on the session's device: no numpy round trip of the cache,
only the logits are copied out. The cross-attention K/V come out of the first-step decoder once
and are re-bound unchanged every later step. For greedy steps the exact int8-shortlist head
(``decoder_with_past_shortlist.onnx``, spellfix.export.shortlist) replaces the fp32 LM head when the
export has it; beam search and the rare uncertified step use ``decoder_with_past.onnx``. Row selection (beam search, dropping finished rows)
runs the exported ``kv_reorder`` graph, so it stays on the device with the CUDA provider too.

Imports neither torch nor transformers (the serving environment is lean — DESIGN.md).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from spellfix.inference import layout
from spellfix.inference.backends.base import StepLogits, TopCandidates

log = logging.getLogger(__name__)


@dataclass
class _OrtState:
    mask: np.ndarray  # (B, S) int64, host
    hidden: Any | None  # OrtValue of the encoder output, until the first decoder step
    self_kv: list[Any] | None = None  # OrtValues, (B, H, P, Dh)
    cross_kv: list[Any] | None = None  # OrtValues, (B, H, S, Dh)
    hidden_host: np.ndarray | None = None  # the encoder output on the host, once rows are gathered from it


def default_providers() -> list[str]:
    """CUDA when this onnxruntime build has it, else CPU."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def _default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def make_session_options(intra_op_num_threads: int | None = None, extra: Mapping[str, Any] | None = None) -> Any:
    """Latency-oriented defaults: all graph optimizations, one inter-op thread (the graphs are a
    chain), intra-op threads = the cores this process may use."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = intra_op_num_threads or _default_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    for key, value in (extra or {}).items():
        if key.startswith("config:"):
            options.add_session_config_entry(key[len("config:") :], str(value))
        elif not hasattr(options, key):
            raise ValueError(f"unknown onnxruntime SessionOptions field {key!r}")
        else:
            setattr(options, key, value)
    return options


def accept_shortlist(candidate_logits: np.ndarray, threshold: np.ndarray) -> np.ndarray:
    """Per row: True when the best candidate provably beats every token outside the shortlist (its
    exact logit exceeds the largest upper bound left out) — see spellfix.export.shortlist."""
    return candidate_logits.max(axis=-1) > threshold


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(
        self,
        onnx_dir: str | Path,
        *,
        providers: list[str] | None = None,
        intra_op_num_threads: int | None = None,
        session_options: Mapping[str, Any] | None = None,
        use_shortlist: bool = True,
    ):
        import onnxruntime as ort

        onnx_dir = Path(onnx_dir)
        self.onnx_dir = onnx_dir
        missing = [g for g in layout.GRAPHS if not (onnx_dir / f"{g}.onnx").is_file()]
        if missing:
            raise FileNotFoundError(f"{onnx_dir}: missing {', '.join(m + '.onnx' for m in missing)}; re-run `spellfix export`")
        self.providers = providers or default_providers()
        self.device = "cuda" if self.providers[0] == "CUDAExecutionProvider" else "cpu"
        options = make_session_options(intra_op_num_threads, session_options)

        def load(graph: str) -> Any:
            return ort.InferenceSession(str(onnx_dir / f"{graph}.onnx"), options, providers=self.providers)

        self._load = load
        self.encoder = load(layout.ENCODER)
        self.decoder = load(layout.DECODER)
        self.kv_reorder = load(layout.KV_REORDER)
        self._full_step: Any | None = None  # decoder_with_past, loaded on first need when a shortlist exists
        shortlist_path = onnx_dir / f"{layout.DECODER_WITH_PAST_SHORTLIST}.onnx"
        self.shortlist = load(layout.DECODER_WITH_PAST_SHORTLIST) if use_shortlist and shortlist_path.is_file() else None
        step_session = self.shortlist if self.shortlist is not None else self.decoder_with_past
        self._decoder_outputs = [o.name for o in self.decoder.get_outputs()]
        self._reorder_outputs = [o.name for o in self.kv_reorder.get_outputs()]
        past = [i.name for i in step_session.get_inputs() if i.name.startswith("past_key_values.")]
        self._self_past = [n for n in past if ".decoder." in n]
        self._cross_past = [n for n in past if ".encoder." in n]
        self._present = [n.replace("past_key_values.", "present.") for n in self._self_past]
        self.num_layers = len(self._self_past) // 2
        self.vocab_size = int(self.decoder.get_outputs()[0].shape[-1])
        if len(self._decoder_outputs) != 1 + 4 * self.num_layers:
            raise ValueError(f"{onnx_dir}: decoder.onnx and decoder_with_past.onnx disagree on the number of layers")
        #: rows decoded through the shortlist head, and rows that needed the full head (fallback)
        self.stats = {"shortlist_rows": 0, "fallback_rows": 0}

    @property
    def decoder_with_past(self) -> Any:
        if self._full_step is None:
            self._full_step = self._load(layout.DECODER_WITH_PAST)
        return self._full_step

    def _run(self, session: Any, inputs: Mapping[str, Any], outputs: list[str]) -> list[Any]:
        binding = session.io_binding()
        for name, value in inputs.items():
            if isinstance(value, np.ndarray):
                binding.bind_cpu_input(name, value)
            else:
                binding.bind_ortvalue_input(name, value)
        for name in outputs:
            binding.bind_output(name, self.device)
        session.run_with_iobinding(binding)
        return binding.get_outputs()

    def encode(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> _OrtState:
        ids = np.ascontiguousarray(input_ids, dtype=np.int64)
        mask = np.ascontiguousarray(attention_mask, dtype=np.int64)
        (hidden,) = self._run(self.encoder, {"input_ids": ids, "attention_mask": mask}, ["encoder_hidden_states"])
        return _OrtState(mask=mask, hidden=hidden)

    def decode_step(
        self, state: _OrtState, input_ids: np.ndarray, full_logits: bool = True, suppress_token: int | None = None
    ) -> tuple[StepLogits, _OrtState]:
        ids = np.ascontiguousarray(input_ids, dtype=np.int64)
        n = 2 * self.num_layers
        if state.self_kv is None:
            inputs = {"input_ids": ids, "encoder_hidden_states": state.hidden, "encoder_attention_mask": state.mask}
            out = self._run(self.decoder, inputs, self._decoder_outputs)
            new_state = _OrtState(mask=state.mask, hidden=None, self_kv=out[1 : 1 + n], cross_kv=out[1 + n :])
            return out[0].numpy()[:, -1], new_state
        inputs = {"input_ids": ids, "encoder_attention_mask": state.mask}
        inputs.update(zip(self._self_past, state.self_kv))
        inputs.update(zip(self._cross_past, state.cross_kv))
        if full_logits or self.shortlist is None:
            out = self._run(self.decoder_with_past, inputs, ["logits", *self._present])
            return out[0].numpy()[:, -1], _OrtState(mask=state.mask, hidden=None, self_kv=out[1:], cross_kv=state.cross_kv)
        out = self._run(self.shortlist, inputs, ["shortlist_ids", "shortlist_logits", "shortlist_threshold", *self._present])
        new_state = _OrtState(mask=state.mask, hidden=None, self_kv=out[3:], cross_kv=state.cross_kv)
        cand_ids, cand_logits = out[0].numpy()[:, -1], out[1].numpy()[:, -1]
        threshold = out[2].numpy().reshape(-1)
        if suppress_token is not None:
            cand_logits = np.where(cand_ids == suppress_token, -np.inf, cand_logits)
        accepted = accept_shortlist(cand_logits, threshold)
        self.stats["shortlist_rows"] += int(ids.shape[0])
        if not accepted.all():  # rare: the bound cannot separate the best candidate from the rest
            rows = np.flatnonzero(~accepted)
            full = self._run(self.decoder_with_past, inputs, ["logits"])[0].numpy()[rows, -1]
            if suppress_token is not None:
                full[:, suppress_token] = -np.inf
            best = full.argmax(axis=-1)
            cand_ids, cand_logits = cand_ids.copy(), cand_logits.copy()
            cand_ids[rows] = best[:, None]  # every candidate of such a row is now the true argmax
            cand_logits[rows] = full[np.arange(len(rows)), best][:, None]
            self.stats["fallback_rows"] += len(rows)
        return TopCandidates(cand_ids, cand_logits), new_state

    def decode_block(self, state: _OrtState, input_ids: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """The first-step ``decoder.onnx`` over whole blocks (its target axis is dynamic); only the
        logits are bound as output."""
        if state.hidden is None:
            raise ValueError("decode_block needs the encoder state (before any decode_step)")
        hidden, mask = state.hidden, state.mask
        if rows is not None:
            import onnxruntime as ort

            rows = np.asarray(rows, dtype=np.int64)
            if state.hidden_host is None:
                state.hidden_host = state.hidden.numpy()
            hidden = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(state.hidden_host[rows]), self.device)
            mask = np.ascontiguousarray(mask[rows])
        ids = np.ascontiguousarray(input_ids, dtype=np.int64)
        inputs = {"input_ids": ids, "encoder_hidden_states": hidden, "encoder_attention_mask": mask}
        return self._run(self.decoder, inputs, ["logits"])[0].numpy()

    def select_rows(self, state: _OrtState, rows: np.ndarray) -> _OrtState:
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        if state.self_kv is None:  # before the first step (beam expansion): one small host gather
            import onnxruntime as ort

            hidden = state.hidden.numpy()[rows]
            hidden_value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(hidden), self.device)
            return _OrtState(mask=state.mask[rows], hidden=hidden_value)
        inputs: dict[str, Any] = {"row_index": rows}
        inputs.update(zip(self._self_past, state.self_kv))
        inputs.update(zip(self._cross_past, state.cross_kv))
        out = self._run(self.kv_reorder, inputs, self._reorder_outputs)
        n = 2 * self.num_layers
        return _OrtState(mask=state.mask[rows], hidden=None, self_kv=out[:n], cross_kv=out[n:])
