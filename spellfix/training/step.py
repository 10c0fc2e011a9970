"""One optimizer step — the single home of the training arithmetic.

The loop (``spellfix.training.loop``) and the benchmarks (``spellfix.bench.train``) call the same
:class:`TrainStep`, so what the benchmark times is what training runs. A step, over one rank's
micro-batches of one global batch:

1. forward under the precision's autocast (bf16 or fp16; none for fp32 and for ``bf16_weights``,
   where the model itself runs in bf16), loss summed over tokens and normalised by the *global*
   batch's target tokens x world size (DDP averages over ranks), so the gradient is the same for
   any number of processes;
2. backward (scaled by the GradScaler with fp16), gradient all-reduce on the last micro-batch only
   (``train.ddp_no_sync``);
3. the step's global loss all-reduced (a scalar: every rank sees the same value and so takes the
   same skip decision);
4. bf16 copy gradients into the fp32 master; with fp16 the gradients are **unscaled first** (so
   clipping sees true norms), then clipped; then the optimizer step or its skip
   (:class:`~spellfix.training.nonfinite.NonFiniteGuard`), the schedule step and zeroed gradients.

accelerate is not involved in the arithmetic: it does process-group setup and DDP wrapping only
(its CPU path has no fp16 GradScaler; ``torch.amp.GradScaler`` works on CPU and GPU alike).
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable

import torch

from spellfix.config import TrainConfig
from spellfix.training.loss import Seq2SeqLoss
from spellfix.training.nonfinite import NonFiniteGuard
from spellfix.training.optim import build_optimizer, build_scheduler
from spellfix.training.precision import Bf16ComputeCopy

AUTOCAST_DTYPE = {"fp16": torch.float16, "bf16": torch.bfloat16}


class TrainStep:
    """Model + loss + optimizer + schedule (+ GradScaler, bf16 copy, non-finite guard) and ``step()``.

    ``model`` is the fp32 master: the optimizer updates it, checkpoints save it, evaluation runs
    it. ``wrap`` puts the loss module under DDP (``accelerator.prepare_model``); the default is no
    wrapping (one process, as in the benchmarks).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        t: TrainConfig,
        *,
        precision: str,
        device: torch.device,
        total_steps: int,
        world: int = 1,
        wrap: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
        hint: Callable[[], str] = lambda: "",
    ):
        if precision not in ("fp32", "fp16", "bf16"):
            raise ValueError(f"precision must be resolved to fp32, fp16 or bf16, got {precision!r}")
        self.model, self.world, self.grad_clip = model, world, t.grad_clip
        self.device = torch.device(device)
        self.bf16_copy = Bf16ComputeCopy(model) if t.bf16_weights else None
        module: torch.nn.Module = Seq2SeqLoss(self.bf16_copy.compute if self.bf16_copy else model, t.loss, t.label_smoothing)
        module = wrap(module) if wrap else module
        self._ddp = module if hasattr(module, "no_sync") else None
        self.module = torch.compile(module, dynamic=True) if t.compile else module
        self.module.train()
        self.optimizer = build_optimizer(model, t, self.device.type)
        self.scheduler = build_scheduler(self.optimizer, t, total_steps)
        self.scaler = torch.amp.GradScaler(self.device.type) if precision == "fp16" else None
        autocast = precision != "fp32" and not t.bf16_weights
        self._autocast_dtype = AUTOCAST_DTYPE.get(precision) if autocast else None
        self._no_sync = t.ddp_no_sync
        self.guard = NonFiniteGuard(t.host_sync, t.max_nonfinite_steps, self.device, hint=hint)

    # ------------------------------------------------------------------------------ the step

    def step(self, micro_batches: list[dict[str, torch.Tensor]], target_tokens: int) -> torch.Tensor:
        """Train on this rank's ``micro_batches`` of one global batch of ``target_tokens`` label
        tokens; returns the global summed loss (a device scalar, the same on every rank)."""
        step_loss = torch.zeros((), device=self.device)
        for k, batch in enumerate(micro_batches):
            with self._grad_sync(last=k == len(micro_batches) - 1):
                with self._autocast():
                    loss_sum = self.module(**batch)
                scaled = loss_sum * (self.world / target_tokens)
                (self.scaler.scale(scaled) if self.scaler else scaled).backward()
            step_loss += loss_sum.detach().float()
        if self.world > 1:
            torch.distributed.all_reduce(step_loss)
        if self.bf16_copy:
            self.bf16_copy.grads_to_master()
        if self.scaler:
            self.scaler.unscale_(self.optimizer)  # before clipping: the norm of the true gradients
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.guard.step(self.optimizer, step_loss, target_tokens, scaler=self.scaler)
        if self.bf16_copy:
            self.bf16_copy.weights_to_compute()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return step_loss

    # ------------------------------------------------------------------------------ state

    def state_dicts(self) -> dict[str, Any]:
        """What a checkpoint holds besides the weights (the scaler only with fp16)."""
        out = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}
        if self.scaler:
            out["scaler"] = self.scaler.state_dict()
        return out

    def load_state_dicts(self, states: dict[str, Any]) -> None:
        """Restore :meth:`state_dicts` (after the master weights were loaded)."""
        self.optimizer.load_state_dict(states["optimizer"])
        self.scheduler.load_state_dict(states["scheduler"])
        if self.scaler and "scaler" in states:
            self.scaler.load_state_dict(states["scaler"])
        if self.bf16_copy:
            self.bf16_copy.weights_to_compute()

    def loss_scale(self) -> float | None:
        """The GradScaler's current scale (fp16), read on the host: call it at log steps only."""
        return float(self.scaler.get_scale()) if self.scaler else None

    # ------------------------------------------------------------------------------ pieces

    def _autocast(self):
        if self._autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self._autocast_dtype)

    def _grad_sync(self, *, last: bool):
        """``train.ddp_no_sync``: no gradient all-reduce on non-final micro-batches of a step."""
        if last or not self._no_sync or self._ddp is None:
            return contextlib.nullcontext()
        return self._ddp.no_sync()
