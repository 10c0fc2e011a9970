"""Stop decisions agreed by every rank at the same step.

A stop needs a checkpoint, and saving is a collective: if one rank stops (its clock passed
``max_minutes``, it alone evaluated and saw no improvement, it alone got the signal) while the others
keep training, the job hangs. So each rank *votes* for the reasons it sees, the votes are combined
with one all-reduce (MAX over a few flags) at a decision step that every rank computes the same
way, and every rank acts on the combined result. With one process the vote is the decision.

Decision steps: every step with ``train.host_sync=every_step``; with ``log_steps`` (no host sync
between log steps) the log, evaluation and save steps and the last step. A time cap or a signal is
therefore acted on within ``log_every`` steps.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

#: Reasons in order of precedence: what the stop is reported as when several apply.
REASONS = ("signal", "non_finite", "early_stopping", "max_minutes")


@dataclass
class Votes:
    """This rank's view at a decision step."""

    signal: bool = False
    non_finite: bool = False
    early_stopping: bool = False
    max_minutes: bool = False

    def flags(self) -> list[float]:
        return [1.0 if getattr(self, r) else 0.0 for r in REASONS]


def agree(votes: Votes, world: int, device: torch.device) -> str | None:
    """The stop reason every rank agrees on (the first of :data:`REASONS` any rank voted for), or
    None to keep training. A collective when ``world > 1``: every rank must call it at the same step."""
    flags = votes.flags()
    if world > 1:
        t = torch.tensor(flags, device=device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        flags = t.tolist()
    return next((r for r, f in zip(REASONS, flags) if f > 0), None)


@dataclass
class Budget:
    """``train.max_minutes`` as a budget of *this invocation*'s wall time.

    The schedule lives in steps (``max_steps``); the budget only decides when this process hands
    over to the next one (``--resume auto``), so a capped run resumed until done reaches
    ``max_steps`` — and, being the same steps in the same order, the same weights as a run never
    capped. Measured from ``train()``'s start, so setup time counts: it is the job's clock.
    """

    minutes: float | None
    started: float = field(default_factory=time.monotonic)

    def spent(self) -> bool:
        return bool(self.minutes) and time.monotonic() - self.started > 60 * float(self.minutes)
