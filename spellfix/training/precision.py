"""bf16 weights for compute, fp32 master weights for the optimizer (``train.bf16_weights``).

Autocast keeps the parameters in fp32 and casts around every op: each linear layer re-casts its
weight (forward) and its weight gradient (backward), and the residual stream, LayerNorms and
dropout run in fp32 because ``fp32 + bf16`` promotes to fp32. On a CPU, where elementwise ops are
memory-bound, that traffic is a large share of a step. The alternative used by Megatron-LM and
DeepSpeed's bf16 optimizer: run forward and backward on a **bf16 copy** of the model and keep the
fp32 weights as the *master* copy that the optimizer updates, checkpoints save and evaluation uses.

Per optimizer step: gradients of the bf16 copy are added into the master's fp32 ``.grad`` once
(after DDP's all-reduce; within a step, micro-batch gradients accumulate in bf16 in the copy, so
keep accumulation short — a few micro-batches — when this is on), and after ``optimizer.step()``
the master weights are cast back into the copy. bf16 only: fp16 has too little range to run
without autocast's fp32 islands and loss scaling, so V100 recipes use fp16 autocast instead.
"""

from __future__ import annotations

import copy

import torch


class Bf16ComputeCopy:
    """Keeps ``compute`` (bf16) in step with ``master`` (fp32): grads flow master-ward, weights back."""

    def __init__(self, master: torch.nn.Module):
        self.master = master
        self.compute = copy.deepcopy(master).to(torch.bfloat16)  # deepcopy keeps tied weights tied
        master_named = dict(master.named_parameters())
        compute_named = dict(self.compute.named_parameters())
        if master_named.keys() != compute_named.keys():
            raise RuntimeError("bf16 compute copy does not have the master model's parameters")
        names = [n for n, p in master_named.items() if p.requires_grad]
        self._master = [master_named[n] for n in names]
        self._compute = [compute_named[n] for n in names]

    @torch.no_grad()
    def grads_to_master(self) -> None:
        """Add the copy's (already all-reduced) bf16 gradients into the master's fp32 ``.grad``."""
        for m, c in zip(self._master, self._compute):
            if c.grad is None:
                continue
            if m.grad is None:
                m.grad = c.grad.to(torch.float32)
            else:
                m.grad.add_(c.grad)
            c.grad = None

    @torch.no_grad()
    def weights_to_compute(self) -> None:
        """Cast the master weights into the copy (after each optimizer step and after resume)."""
        torch._foreach_copy_(self._compute, [m.detach() for m in self._master])
