"""Parity of exported graphs with the PyTorch model: numbers for the manifest, and a hard stop.

Two checks per exported precision, both run through ONNX Runtime on this machine:
1. **logits on random inputs**: random source ids with padding in one row, a random decoder prefix;
   the encoder output, the first-step decoder's logits (teacher-forced over the prefix) and the
   decoder-with-past logits (fed the same prefix one token at a time from a cache) are compared
   with the Hugging Face model's own forward pass. Figure: max |difference|.
2. **greedy outputs on sample queries**: the runtime's decoding loop over the exported graphs vs
   ``model.generate`` (greedy) on the same token ids, batched with mixed lengths. Figure: the number
   of queries with identical output ids.

fp32 must pass both (within ``logits_atol`` and all outputs identical) or the export fails; fp16
(checked on the CPU as a proxy for TensorRT) must stay within ``FP16_LOGITS_ATOL``; int8 figures are
reported, not enforced (quantization changes outputs by design).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from spellfix.inference import layout
from spellfix.inference.backends.onnxruntime_backend import OnnxRuntimeBackend
from spellfix.inference.decoding import DecodingOptions, generate
from spellfix.inference.tokenization import QueryTokenizer

log = logging.getLogger(__name__)

FP32_LOGITS_ATOL = 1e-3
FP16_LOGITS_ATOL = 0.5

#: query-shaped sample for the greedy check when the caller gives none (any text works: the check
#: is that two implementations agree, not that the corrections are right)
DEFAULT_SAMPLE_QUERIES = (
    "beyonse halo",
    "metalica",
    "the beatles let it be",
    "iphone 15 pro max case",
    "weather tomorow",
    "best pizza near me",
    "how to tie a tie",
    "harry poter and the philosophers stone",
    "nike air max 90",
    "lord of the rings",
    "taylor swfit",
    "cheap flights to new yrok",
    "python list comprehension",
    "a",
    "restaurants open now downtown seattle with outdoor seating",
    "elvis presly",
)


class ParityError(RuntimeError):
    """An exported graph disagrees with the PyTorch model beyond the tolerance."""


def _random_batch(vocab_size: int, seed: int, batch: int = 3, src_len: int = 9, tgt_len: int = 6) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, vocab_size, size=(batch, src_len)).astype(np.int64)
    mask = np.ones_like(ids)
    lengths = [src_len, max(2, src_len - 4), max(2, src_len // 2)][:batch]
    for row, length in enumerate(lengths):
        ids[row, 0], ids[row, length - 1] = layout.BOS_ID, layout.EOS_ID
        ids[row, length:], mask[row, length:] = layout.PAD_ID, 0
    dec = rng.integers(3, vocab_size, size=(batch, tgt_len)).astype(np.int64)
    dec[:, 0] = layout.EOS_ID  # decoder_start_token_id
    return {"input_ids": ids, "attention_mask": mask, "decoder_input_ids": dec}


def logits_parity(model: torch.nn.Module, onnx_dir: Path, *, seed: int = 0) -> dict[str, float]:
    """Max |ORT - PyTorch| of encoder output and logits (first step and with past) on random inputs."""
    batch = _random_batch(model.config.vocab_size, seed)
    with torch.no_grad():
        ref = model(
            input_ids=torch.from_numpy(batch["input_ids"]),
            attention_mask=torch.from_numpy(batch["attention_mask"]),
            decoder_input_ids=torch.from_numpy(batch["decoder_input_ids"]),
        )
    ref_logits = ref.logits.float().numpy()
    ref_hidden = ref.encoder_last_hidden_state.float().numpy()
    rows_masked = batch["attention_mask"].astype(bool)

    backend = OnnxRuntimeBackend(onnx_dir)
    state = backend.encode(batch["input_ids"], batch["attention_mask"])
    hidden = state.hidden.numpy().astype(np.float32)
    encoder_diff = float(np.abs(hidden - ref_hidden)[rows_masked].max())  # padded positions are don't-care

    # first-step graph, teacher-forced over the whole prefix
    out = backend._run(
        backend.decoder,
        {"input_ids": batch["decoder_input_ids"], "encoder_hidden_states": state.hidden, "encoder_attention_mask": state.mask},
        backend._decoder_outputs,
    )
    decoder_diff = float(np.abs(out[0].numpy().astype(np.float32) - ref_logits).max())

    # decoder_with_past, one token at a time (and the shortlist head on the same states, if exported)
    step_diff, shortlist = 0.0, {"rows": 0, "accepted": 0, "max_abs_logits_diff": 0.0, "violations": 0}
    for t in range(batch["decoder_input_ids"].shape[1]):
        ids = batch["decoder_input_ids"][:, t : t + 1]
        logits, next_state = backend.decode_step(state, ids)
        if t > 0 and backend.shortlist is not None:
            _check_shortlist(backend, state, ids, logits, shortlist)
        state = next_state
        step_diff = max(step_diff, float(np.abs(logits.astype(np.float32) - ref_logits[:, t]).max()))
    figures = {
        "encoder_max_abs_diff": encoder_diff,
        "decoder_max_abs_logits_diff": decoder_diff,
        "decoder_with_past_max_abs_logits_diff": step_diff,
        "max_abs_logits_diff": max(decoder_diff, step_diff),
    }
    if shortlist["rows"]:
        figures["shortlist"] = shortlist
    return figures


def _check_shortlist(backend: OnnxRuntimeBackend, state: Any, ids: np.ndarray, reference: np.ndarray, acc: dict[str, Any]) -> None:
    """The greedy head vs the full head of the same export on one step (``reference``: its logits):
    candidate logits equal, and whenever the runtime would accept the head's answer, it is the full
    head's argmax (else: a violation — a bug in the head or its bound, whatever the precision)."""
    from spellfix.inference.backends.onnxruntime_backend import accept_shortlist

    inputs = {"input_ids": ids, "encoder_attention_mask": state.mask}
    inputs.update(zip(backend._self_past, state.self_kv))
    inputs.update(zip(backend._cross_past, state.cross_kv))
    out = backend._run(backend.shortlist, inputs, ["shortlist_ids", "shortlist_logits", "shortlist_threshold"])
    cand_ids, cand_logits = out[0].numpy()[:, -1], out[1].numpy()[:, -1]
    accepted = accept_shortlist(cand_logits, out[2].numpy().reshape(-1))
    exact = np.take_along_axis(reference, cand_ids, axis=-1)
    acc["max_abs_logits_diff"] = max(acc["max_abs_logits_diff"], float(np.abs(cand_logits - exact).max()))
    best = reference.argmax(axis=-1)
    chosen = np.take_along_axis(cand_ids, cand_logits.argmax(axis=-1)[:, None], axis=-1)[:, 0]
    acc["violations"] += int((accepted & (chosen != best)).sum())
    acc["rows"] += int(len(ids))
    acc["accepted"] += int(accepted.sum())


def greedy_parity(
    model: torch.nn.Module,
    tokenizer: QueryTokenizer,
    onnx_dir: Path,
    queries: Sequence[str],
    *,
    decoder_start_token_id: int,
    max_new_tokens: int,
) -> dict[str, Any]:
    """Greedy ids of the runtime over ``onnx_dir`` vs ``model.generate`` on the same ids, one batch."""
    with warnings.catch_warnings():  # sample queries longer than the model's max are cut, as at serving time
        warnings.simplefilter("ignore")
        encoded = tokenizer.encode_ids(list(queries))
    batch = tokenizer.pad(encoded)
    options = DecodingOptions(
        decoder_start_token_id=decoder_start_token_id,
        eos_token_id=tokenizer.eos_id,
        pad_token_id=tokenizer.pad_id,
        max_new_tokens=max_new_tokens,
    )
    backend = OnnxRuntimeBackend(onnx_dir)
    ours = generate(backend, batch.input_ids, batch.attention_mask, options)
    theirs = reference_greedy(model, batch.input_ids, batch.attention_mask, options)
    mismatches = [i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b]
    return {
        "queries": len(queries),
        "identical": len(queries) - len(mismatches),
        "mismatched_queries": [queries[i] for i in mismatches][:5],
        **({"shortlist_steps": backend.stats} if backend.shortlist is not None else {}),
    }


def reference_greedy(model: torch.nn.Module, input_ids: np.ndarray, attention_mask: np.ndarray, options: DecodingOptions) -> list[list[int]]:
    """``model.generate`` greedy, ids trimmed like the runtime's (no start token, stop after eos)."""
    with torch.no_grad():
        out = model.generate(
            input_ids=torch.from_numpy(input_ids),
            attention_mask=torch.from_numpy(attention_mask),
            do_sample=False,
            num_beams=options.num_beams,
            max_new_tokens=options.max_new_tokens,
            min_new_tokens=options.min_new_tokens or None,
            decoder_start_token_id=options.decoder_start_token_id,
            eos_token_id=options.eos_token_id,
            pad_token_id=options.pad_token_id,
            forced_bos_token_id=None,
            forced_eos_token_id=None,
            no_repeat_ngram_size=0,
            repetition_penalty=1.0,
            length_penalty=options.length_penalty,
            early_stopping=options.early_stopping,
        )
    return [trim_generated(row, options.eos_token_id) for row in out[:, 1:].tolist()]


def trim_generated(ids: Sequence[int], eos_token_id: int) -> list[int]:
    """Cut a generated row after its first eos (the rest is padding)."""
    ids = list(ids)
    return ids[: ids.index(eos_token_id) + 1] if eos_token_id in ids else ids


def check_parity(
    model: torch.nn.Module,
    tokenizer: QueryTokenizer,
    onnx_dir: Path,
    *,
    precision: str,
    queries: Sequence[str],
    decoder_start_token_id: int,
    max_new_tokens: int,
    logits_atol: float | None = None,
) -> dict[str, Any]:
    """Both checks for one exported precision; raises ParityError past the tolerance (fp32, fp16)."""
    figures: dict[str, Any] = logits_parity(model, onnx_dir)
    figures["greedy"] = greedy_parity(
        model, tokenizer, onnx_dir, queries, decoder_start_token_id=decoder_start_token_id, max_new_tokens=max_new_tokens
    )
    figures["checked_with"] = "onnxruntime CPUExecutionProvider"
    if figures.get("shortlist", {}).get("violations"):
        raise ParityError(f"{onnx_dir} ({precision}): the greedy shortlist head accepted a step whose argmax differs from the full head's")
    if precision == "int8":
        figures["enforced"] = False
        return figures
    atol = logits_atol if logits_atol is not None else (FP32_LOGITS_ATOL if precision == "fp32" else FP16_LOGITS_ATOL)
    figures["logits_atol"] = atol
    figures["enforced"] = True
    where = f"{onnx_dir} ({precision})"
    if not figures["max_abs_logits_diff"] <= atol:  # also catches NaN
        raise ParityError(
            f"{where}: max |logits - PyTorch| = {figures['max_abs_logits_diff']:.3g} exceeds the tolerance {atol:g} "
            f"(encoder {figures['encoder_max_abs_diff']:.3g}, first step {figures['decoder_max_abs_logits_diff']:.3g}, "
            f"with past {figures['decoder_with_past_max_abs_logits_diff']:.3g})"
        )
    greedy = figures["greedy"]
    if precision == "fp32" and greedy["identical"] != greedy["queries"]:
        raise ParityError(
            f"{where}: greedy outputs differ from model.generate on {greedy['queries'] - greedy['identical']} of "
            f"{greedy['queries']} sample queries (e.g. {greedy['mismatched_queries'][:3]})"
        )
    return figures
