"""Memory per GPU of a training recipe, from a measurement on CPU with the real model.

What a GPU holds during a step: fp32 weights, fp32 gradients, two fp32 Adam moments, the
half-precision weight copies autocast caches for the forward pass, the activations saved for the
backward pass, and the loss's own buffers (full-vocabulary logits unless the fused head is used).
The first four are arithmetic on the parameter count. Activations are **measured**: one forward
pass of the real model at a small batch at the recipe's max lengths, under the recipe's autocast
dtype, with ``torch.autograd.graph.saved_tensors_hooks`` adding up the bytes of every distinct
tensor autograd keeps for backward, at two batch sizes; the difference per example (constant terms
such as autocast's cached half-precision weights cancel) is scaled to the per-device batch
(activations are linear in batch size). Attention through SDPA keeps O(length) per head, so the
measurement at the max length is the worst case for that length.

Not measured here: the CUDA context and allocator slack (~0.5-1 GB on a V100, taken as 1 GB), and
cuBLAS/cuDNN workspaces (small). The result is a budget with a margin, not a promise to the byte.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

GB = 1e9
CUDA_CONTEXT_GB = 1.0


@dataclass
class MemoryBudget:
    recipe: str
    per_device_batch: int
    max_source_length: int
    max_target_length: int
    precision: str
    loss: str
    parameters: int
    weights_gb: float
    grads_gb: float
    adam_gb: float
    half_weight_cache_gb: float
    activations_gb: float
    activation_bytes_per_token: float
    loss_buffers_gb: float
    cuda_context_gb: float
    total_gb: float
    device_gb: float
    fits: bool


def saved_activation_bytes(model, batch: int, source_length: int, target_length: int, dtype, loss: str) -> int:
    """Bytes autograd saves for backward in one forward of ``model`` (+ its loss) at this shape.

    Tensors are deduplicated by storage, and parameters (weights, not activations) are excluded.
    The loss's own saved logits are excluded too (counted separately, see :func:`loss_buffer_bytes`).
    """
    import torch

    from spellfix.training.loss import Seq2SeqLoss

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in params and ptr not in seen:
            seen[ptr] = storage.nbytes()
        return t

    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(0)
    input_ids = torch.randint(5, vocab, (batch, source_length), generator=gen)
    decoder_input_ids = torch.randint(5, vocab, (batch, target_length), generator=gen)
    labels = torch.randint(5, vocab, (batch, target_length), generator=gen)
    step = Seq2SeqLoss(model, "fused-head", 0.0)  # body only: the head's buffers are counted separately
    model.train()
    with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = step(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), decoder_input_ids=decoder_input_ids, labels=labels)
    del loss
    return sum(seen.values())


def loss_buffer_bytes(loss: str, tokens: int, vocab: int, precision: str = "fp16") -> int:
    """Peak extra bytes of the loss: full-logits keeps half-precision logits, their fp32 upcast and
    the fp32 log-softmax for backward; fused-head holds one fp32 chunk of logits, plus (bf16/fp32,
    where gradients are formed in the forward pass) the tokens x vocab logit gradient in the compute
    dtype while it lasts; fp16 recomputes chunk by chunk in backward instead."""
    from spellfix.training.loss import CHUNK_ROWS

    half_bytes = 4 if precision == "fp32" else 2
    if loss == "full-logits":
        return tokens * vocab * (half_bytes + 4 + 4)
    chunk = min(tokens, CHUNK_ROWS) * vocab * (4 + half_bytes)
    return chunk if precision == "fp16" else chunk + tokens * vocab * half_bytes


def estimate(recipe_name: str = "bart-base-8xv100", *, probe_batch: int = 1, device_gb: float = 16.0,
             loss: str | None = None, per_device_batch: int | None = None) -> MemoryBudget:
    """Memory budget per device for ``recipe_name`` (the bart-base shape, measured activations)."""
    import torch

    from spellfix.config import load_recipe
    from spellfix.modeling import BART_BASE_SHAPE, build_model

    recipe = load_recipe(recipe_name)
    t, d = recipe.train, recipe.data
    batch = per_device_batch or t.per_device_batch_size or t.global_batch_size
    precision = "fp16" if t.precision in ("fp16", "auto") else t.precision
    loss = loss or t.loss
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[precision]
    from spellfix.config import ModelConfig

    model = build_model(ModelConfig(architecture="bart", config=dict(BART_BASE_SHAPE)), BART_BASE_SHAPE["vocab_size"])
    n = sum(p.numel() for p in model.parameters())
    # Two probe batches: the per-example slope excludes what does not grow with the batch (autocast's
    # half-precision weight copies are saved for backward too; they are counted once, below).
    small = saved_activation_bytes(model, probe_batch, d.max_source_length, d.max_target_length, dtype, loss)
    large = saved_activation_bytes(model, 2 * probe_batch, d.max_source_length, d.max_target_length, dtype, loss)
    per_example = (large - small) / probe_batch
    tokens_per_example = d.max_source_length + d.max_target_length
    act = per_example * batch
    half = 2 if precision != "fp32" else 4
    weights = 4 * n
    budget = dict(
        weights_gb=weights / GB,
        grads_gb=weights / GB,
        adam_gb=2 * weights / GB,
        half_weight_cache_gb=(half * n / GB) if precision != "fp32" else 0.0,
        activations_gb=act / GB,
        loss_buffers_gb=loss_buffer_bytes(loss, batch * d.max_target_length, BART_BASE_SHAPE["vocab_size"], precision) / GB,
        cuda_context_gb=CUDA_CONTEXT_GB,
    )
    total = sum(budget.values())
    return MemoryBudget(
        recipe=recipe_name, per_device_batch=batch, max_source_length=d.max_source_length,
        max_target_length=d.max_target_length, precision=precision, loss=loss, parameters=n,
        activation_bytes_per_token=per_example / tokens_per_example, total_gb=total, device_gb=device_gb,
        fits=total < device_gb, **budget,
    )


def budget_table(budgets: list[MemoryBudget]) -> str:
    rows = [
        "| recipe | batch/GPU | lengths | precision | loss | weights | grads | Adam | half cache | activations | loss buffers | CUDA ctx | total | fits 16 GB |",
        "|---|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for b in budgets:
        rows.append(
            f"| {b.recipe} | {b.per_device_batch} | {b.max_source_length}+{b.max_target_length} | {b.precision} | {b.loss} | "
            f"{b.weights_gb:.2f} | {b.grads_gb:.2f} | {b.adam_gb:.2f} | {b.half_weight_cache_gb:.2f} | {b.activations_gb:.2f} | "
            f"{b.loss_buffers_gb:.2f} | {b.cuda_context_gb:.1f} | **{b.total_gb:.2f}** | {'yes' if b.fits else 'NO'} |"
        )
    return "\n".join(rows) + "\n"


def write(budgets: list[MemoryBudget], output_dir: Path, name: str = "train_memory") -> tuple[Path, Path]:
    from spellfix.config import write_text_atomic

    output_dir.mkdir(parents=True, exist_ok=True)
    entries: list[dict[str, Any]] = [{"name": f"{b.recipe} {b.loss} batch {b.per_device_batch}", **asdict(b)} for b in budgets]
    json_path, md_path = output_dir / f"{name}.json", output_dir / f"{name}.md"
    write_text_atomic(json_path, json.dumps(entries, indent=1) + "\n")
    write_text_atomic(md_path, "# Training memory per GPU (GB), bart-base shape\n\n" + budget_table(budgets)
                      + "\nActivations measured on CPU (saved-tensor hooks, autocast dtype of the recipe) and scaled "
                      "to the batch; weights/grads/Adam from the parameter count; CUDA context taken as 1 GB. "
                      "Written by `python benchmarks/train_memory.py` (spellfix.bench.train_memory).\n")
    return json_path, md_path
