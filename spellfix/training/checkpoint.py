"""Resumable checkpoints: atomic, self-describing, loaded without unpickling arbitrary objects.

Layout of ``checkpoints/step-000500/``: ``model.safetensors``, ``optimizer.pt``, ``scheduler.pt``,
``scaler.pt`` (fp16 only), ``rng-rank<r>.pt`` (one per process), ``recipe.yaml`` and, written last,
``trainer_state.json``. A checkpoint is built in a ``.tmp-*`` sibling and renamed when complete, so
``--resume auto`` never sees a half-written one (a crash mid-save leaves the previous one usable).
``.pt`` files are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_model, save_model

STEP_DIR = re.compile(r"^step-(\d{6,})$")
STATE_FILE = "trainer_state.json"


@dataclass
class TrainerState:
    """Where the loop is: enough to continue with the same data order."""

    step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    samples_seen: int = 0
    best_metric: float | None = None
    best_step: int | None = None
    evals_without_improvement: int = 0
    elapsed_s: float = 0.0
    world_size: int = 1
    history: list[dict[str, Any]] = field(default_factory=list)


def list_complete(checkpoint_dir: Path) -> list[Path]:
    """Complete checkpoints (those with trainer_state.json), oldest first."""
    if not checkpoint_dir.is_dir():
        return []
    found = []
    for p in checkpoint_dir.iterdir():
        m = STEP_DIR.match(p.name)
        if m and p.is_dir() and (p / STATE_FILE).exists():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def latest_complete(checkpoint_dir: Path) -> Path | None:
    done = list_complete(checkpoint_dir)
    return done[-1] if done else None


def save_checkpoint(
    checkpoint_dir: Path,
    state: TrainerState,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any | None,
    recipe_yaml: str,
    rank: int,
    world_size: int,
    barrier: Callable[[], None],
    keep_last: int,
) -> Path:
    """Collective: every rank calls it (each saves its RNG state); rank 0 writes the rest and renames."""
    final = checkpoint_dir / f"step-{state.step:06d}"
    tmp = checkpoint_dir / f".tmp-step-{state.step:06d}"
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier()
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    torch.save(rng, tmp / f"rng-rank{rank}.pt")
    barrier()
    if rank == 0:
        save_model(model, str(tmp / "model.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        if scaler is not None:
            torch.save(scaler.state_dict(), tmp / "scaler.pt")
        (tmp / "recipe.yaml").write_text(recipe_yaml, encoding="utf-8")
        state.world_size = world_size
        (tmp / STATE_FILE).write_text(json.dumps(asdict(state), indent=2), encoding="utf-8")
        _fsync_dir(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _prune(checkpoint_dir, keep_last)
    barrier()
    return final


def load_checkpoint(
    path: Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any | None,
    rank: int,
) -> TrainerState:
    """Restore everything ``save_checkpoint`` wrote; raise a clear error for an incomplete dir."""
    if not (path / STATE_FILE).exists():
        raise FileNotFoundError(f"{path} is not a complete checkpoint (no {STATE_FILE})")
    missing, unexpected = load_model(model, str(path / "model.safetensors"), strict=False)
    if unexpected or [m for m in missing if not _is_tied(m)]:
        raise RuntimeError(f"{path}: weights do not match the model (missing {missing[:5]}, unexpected {unexpected[:5]})")
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    if scaler is not None and (path / "scaler.pt").exists():
        scaler.load_state_dict(torch.load(path / "scaler.pt", weights_only=True))
    rng_file = path / f"rng-rank{rank}.pt"
    if rng_file.exists():
        rng = torch.load(rng_file, weights_only=True)
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
    data = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
    return TrainerState(**data)


def _is_tied(name: str) -> bool:
    return name.endswith(("embed_tokens.weight", "lm_head.weight"))


def _prune(checkpoint_dir: Path, keep_last: int) -> None:
    done = list_complete(checkpoint_dir)
    for old in done[: max(0, len(done) - max(1, keep_last))]:
        shutil.rmtree(old, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    for f in path.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
