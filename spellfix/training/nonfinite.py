"""Skip optimizer steps with a non-finite loss, and stop after too many in a row (``train.host_sync``).

``every_step``: read the step's loss on the host (one ``.item()``, i.e. one device->host sync per
step) and call ``optimizer.step()`` only when it is finite — simple, and free on a CPU.

``log_steps``: never wait for the device between log steps. The finiteness flag stays on the
device and is handed to fused AdamW as ``found_inf`` (the hook GradScaler uses), so the kernel
itself skips the update and un-counts the step; the run of consecutive non-finite steps is
counted on the device and checked at log steps. With fp16 (a GradScaler present) the scaler
already skips steps whose gradients overflow, so only the count is kept here.

Either way the loss of skipped steps is left out of the logged loss, and after
``max_consecutive`` non-finite steps in a row training stops (all ranks at the same step, after a
checkpoint of the last good weights) with :class:`NonFiniteLossError`.
"""

from __future__ import annotations

from typing import Callable, Literal

import torch


class NonFiniteLossError(RuntimeError):
    """Training produced non-finite losses for too many consecutive steps."""


class NonFiniteGuard:
    """Skips non-finite steps and counts them; the loop asks :meth:`exhausted` at its decision
    steps, so the stop is agreed by every rank and saved like any other stop."""

    def __init__(self, mode: Literal["every_step", "log_steps"], max_consecutive: int, device: torch.device,
                 hint: Callable[[], str] = lambda: ""):
        self.mode, self.max_consecutive, self.hint = mode, max_consecutive, hint
        self.run = torch.zeros((), device=device)  # consecutive non-finite steps (log_steps mode)
        self.run_host = 0  # same, every_step mode
        self.window_loss = torch.zeros((), device=device)
        self.window_tokens = torch.zeros((), device=device)

    def step(self, optimizer, step_loss: torch.Tensor, target_tokens: int, *, scaler=None) -> None:
        """Run the optimizer step unless ``step_loss`` is non-finite; accumulate the log window.

        With a GradScaler (fp16) the gradients were already unscaled: ``scaler.step`` skips the
        update itself when they overflowed, and ``scaler.update`` lowers the scale. A non-finite
        *loss* seen on the host is skipped here and lowers the scale the same way; either way the
        scaler's per-step state is closed by an ``update``, so the next step's unscale is valid.
        """
        if self.mode == "every_step":
            if not torch.isfinite(step_loss).item():  # the one host sync of the step
                self.run_host += 1
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.update(scaler.get_scale() * scaler.get_backoff_factor())
                return
            self.run_host = 0
            _optimizer_step(optimizer, scaler)
            self.window_loss += step_loss
            self.window_tokens += target_tokens
            return
        finite = torch.isfinite(step_loss)
        if scaler is None:
            _inner(optimizer).found_inf = (~finite).float()
        _optimizer_step(optimizer, scaler)
        if scaler is None:
            del _inner(optimizer).found_inf
        self.run = (self.run + 1) * (~finite)
        self.window_loss += torch.where(finite, step_loss, torch.zeros_like(step_loss))
        self.window_tokens += finite * target_tokens

    def exhausted(self) -> bool:
        """Whether ``max_consecutive`` steps in a row were non-finite (a host read in log_steps
        mode: call it at decision steps only). The loss is all-reduced, so every rank agrees."""
        run = self.run_host if self.mode == "every_step" else int(self.run.item())
        return run >= self.max_consecutive

    def error(self, step: int) -> "NonFiniteLossError":
        run = self.run_host if self.mode == "every_step" else int(self.run.item())
        return NonFiniteLossError(f"loss was not finite for {run} consecutive steps (last at step {step}); {self.hint()}")

    def pop_window(self) -> tuple[torch.Tensor, torch.Tensor]:
        loss, tokens = self.window_loss.clone(), self.window_tokens.clone()
        self.window_loss.zero_()
        self.window_tokens.zero_()
        return loss, tokens


def _optimizer_step(optimizer, scaler) -> None:
    if scaler is None:
        optimizer.step()
        return
    scaler.step(optimizer)
    scaler.update()


def _inner(optimizer):
    """The torch optimizer under accelerate's AcceleratedOptimizer wrapper."""
    return getattr(optimizer, "optimizer", optimizer)


def supports_found_inf(optimizer) -> bool:
    """Fused AdamW/Adam/SGD accept ``found_inf`` and skip the update on the device."""
    inner = _inner(optimizer)
    return bool(getattr(inner, "_step_supports_amp_scaling", False)) and all(
        g.get("fused") for g in inner.param_groups
    )
