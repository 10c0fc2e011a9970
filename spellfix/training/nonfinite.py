"""Skip optimizer steps with a non-finite loss, and stop after too many in a row (``train.host_sync``).

``every_step``: read the step's loss on the host (one ``.item()``, i.e. one device->host sync per
step) and call ``optimizer.step()`` only when it is finite — simple, and free on a CPU.

``log_steps``: never wait for the device between log steps. The finiteness flag stays on the
device and is handed to fused AdamW as ``found_inf`` (the hook GradScaler uses), so the kernel
itself skips the update and un-counts the step; the run of consecutive non-finite steps is
counted on the device and checked at log steps. With fp16 (a GradScaler present) the scaler
already skips steps whose gradients overflow, so only the count is kept here.

Either way the loss of skipped steps is left out of the logged loss, and after
``max_consecutive`` non-finite steps in a row training stops with :class:`NonFiniteLossError`.
"""

from __future__ import annotations

from typing import Callable, Literal

import torch


class NonFiniteLossError(RuntimeError):
    """Training produced non-finite losses for too many consecutive steps."""


class NonFiniteGuard:
    def __init__(self, mode: Literal["every_step", "log_steps"], max_consecutive: int, device: torch.device,
                 hint: Callable[[], str] = lambda: ""):
        self.mode, self.max_consecutive, self.hint = mode, max_consecutive, hint
        self.run = torch.zeros((), device=device)  # consecutive non-finite steps (log_steps mode)
        self.run_host = 0  # same, every_step mode
        self.window_loss = torch.zeros((), device=device)
        self.window_tokens = torch.zeros((), device=device)

    def step(self, optimizer, step_loss: torch.Tensor, target_tokens: int, *, has_scaler: bool, step: int) -> None:
        """Run ``optimizer.step()`` unless ``step_loss`` is non-finite; accumulate the log window."""
        if self.mode == "every_step":
            if not torch.isfinite(step_loss).item():  # the one host sync of the step
                self.run_host += 1
                optimizer.zero_grad(set_to_none=True)
                self._raise_if_too_many(self.run_host, step)
                return
            self.run_host = 0
            optimizer.step()
            self.window_loss += step_loss
            self.window_tokens += target_tokens
            return
        finite = torch.isfinite(step_loss)
        if not has_scaler:
            _inner(optimizer).found_inf = (~finite).float()
        optimizer.step()
        if not has_scaler:
            del _inner(optimizer).found_inf
        self.run = (self.run + 1) * (~finite)
        self.window_loss += torch.where(finite, step_loss, torch.zeros_like(step_loss))
        self.window_tokens += finite * target_tokens

    def check(self, step: int) -> None:
        """At log steps (log_steps mode): raise if the device-side count reached the limit."""
        if self.mode == "log_steps":
            self._raise_if_too_many(int(self.run.item()), step)

    def pop_window(self) -> tuple[torch.Tensor, torch.Tensor]:
        loss, tokens = self.window_loss.clone(), self.window_tokens.clone()
        self.window_loss.zero_()
        self.window_tokens.zero_()
        return loss, tokens

    def _raise_if_too_many(self, run: int, step: int) -> None:
        if run >= self.max_consecutive:
            raise NonFiniteLossError(
                f"loss was not finite for {run} consecutive steps (last at step {step}); {self.hint()}"
            )


def _inner(optimizer):
    """The torch optimizer under accelerate's AcceleratedOptimizer wrapper."""
    return getattr(optimizer, "optimizer", optimizer)


def supports_found_inf(optimizer) -> bool:
    """Fused AdamW/Adam/SGD accept ``found_inf`` and skip the update on the device."""
    inner = _inner(optimizer)
    return bool(getattr(inner, "_step_supports_amp_scaling", False)) and all(
        g.get("fused") for g in inner.param_groups
    )
