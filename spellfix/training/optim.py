"""AdamW, learning-rate scaling with batch size, and warmup + decay schedules."""

from __future__ import annotations

import math

import torch

from spellfix.config import TrainConfig


def scaled_lr(cfg: TrainConfig) -> float:
    """The peak LR for this run's global batch: ``lr`` was tuned at ``reference_batch_size``.

    sqrt scaling (the usual heuristic for Adam, with warmup) or linear (the SGD rule); none keeps lr.
    """
    ratio = cfg.global_batch_size / cfg.reference_batch_size
    if cfg.lr_scaling == "linear":
        return cfg.lr * ratio
    if cfg.lr_scaling == "sqrt":
        return cfg.lr * math.sqrt(ratio)
    return cfg.lr


def fused_available(device_type: str) -> bool:
    return device_type in ("cuda", "cpu", "mps", "xpu")


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig, device_type: str) -> torch.optim.AdamW:
    """AdamW without weight decay on biases and LayerNorm weights; fused kernel where available."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    fused = {"on": True, "off": False, "auto": fused_available(device_type)}[cfg.fused_adamw]
    return torch.optim.AdamW(
        groups,
        lr=scaled_lr(cfg),
        betas=(cfg.adam_beta1, cfg.adam_beta2),
        eps=cfg.adam_eps,
        fused=fused or None,
    )


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    warmup = min(cfg.warmup_steps, max(1, total_steps - 1))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if cfg.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        if cfg.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * progress))
        return max(0.0, 1.0 - progress)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
