"""Resumable checkpoints: atomic, self-describing, loaded without unpickling arbitrary objects.

Layout of ``checkpoints/step-000500/``: ``model.safetensors``, ``optimizer.pt``, ``scheduler.pt``,
``scaler.pt`` (fp16 only), ``rng-rank<r>.pt`` (one per process, all written by rank 0),
``recipe.yaml`` and, written last, ``trainer_state.json``. A checkpoint is built in a ``.tmp-*``
sibling, fsynced, and renamed when complete, so ``--resume auto`` never sees a half-written one (a
crash or ``kill -9`` mid-save leaves the previous one usable: ``benchmarks/checkpoint_crash_trials.py``).
``.pt`` files are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model

STEP_DIR = re.compile(r"^step-(\d{6,})$")
#: A complete checkpoint moved aside while a new one of the same step is renamed in (see _install).
REPLACED_DIR = re.compile(r"^\.replaced-step-(\d{6,})$")
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
    #: why the run that wrote this checkpoint stopped ("" while it was running): an early-stopped
    #: run is finished and resuming it does not train on
    stop_reason: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)


def list_complete(checkpoint_dir: Path) -> list[Path]:
    """Complete checkpoints (those with trainer_state.json), oldest first.

    A ``.replaced-step-N`` directory counts for step N only while ``step-N`` is missing: that is the
    moment between the two renames of :func:`_install`, which a crash may freeze.
    """
    if not checkpoint_dir.is_dir():
        return []
    found: dict[int, Path] = {}
    for p in checkpoint_dir.iterdir():
        m = STEP_DIR.match(p.name) or REPLACED_DIR.match(p.name)
        if m and p.is_dir() and (p / STATE_FILE).exists():
            step = int(m.group(1))
            if step not in found or STEP_DIR.match(p.name):
                found[step] = p
    return [found[k] for k in sorted(found)]


def latest_complete(checkpoint_dir: Path) -> Path | None:
    done = list_complete(checkpoint_dir)
    return done[-1] if done else None


def save_checkpoint(
    checkpoint_dir: Path,
    state: TrainerState,
    *,
    model: torch.nn.Module,
    states: dict[str, Any],
    recipe_yaml: str,
    rank: int,
    world_size: int,
    keep_last: int,
) -> Path:
    """Collective: every rank calls it at the same step. Rank 0 writes everything — the RNG states of
    all ranks are gathered to it, so no other rank (or node) touches the checkpoint directory.

    Durable and atomic: files are written into ``.tmp-step-N``, each fsynced, the directory fsynced,
    then renamed to ``step-N`` and the parent fsynced. An existing complete ``step-N`` is moved
    aside, not deleted, until the new one is in place. ``states``: name -> state dict
    (optimizer, scheduler, scaler), each written to ``<name>.pt``.
    """
    rng: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    rngs = [rng]
    if world_size > 1:
        rngs = [None] * world_size
        torch.distributed.all_gather_object(rngs, rng)
    final = checkpoint_dir / f"step-{state.step:06d}"
    if rank == 0:
        tmp = checkpoint_dir / f".tmp-step-{state.step:06d}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for r, rank_rng in enumerate(rngs):
            torch.save(rank_rng, tmp / f"rng-rank{r}.pt")
        save_model(model, str(tmp / "model.safetensors"))
        for name, sd in states.items():
            torch.save(sd, tmp / f"{name}.pt")
        (tmp / "recipe.yaml").write_text(recipe_yaml, encoding="utf-8")
        state.world_size = world_size
        (tmp / STATE_FILE).write_text(json.dumps(asdict(state), indent=2), encoding="utf-8")  # last: marks complete
        _fsync_tree(tmp)
        _install(tmp, final)
        _prune(checkpoint_dir, keep_last)
    if world_size > 1:
        torch.distributed.barrier()  # nobody resumes or exits before the checkpoint is in place
    return final


def load_checkpoint(path: Path, *, model: torch.nn.Module, rank: int) -> tuple[TrainerState, dict[str, Any]]:
    """Load the weights into ``model`` and this rank's RNG state; return the trainer state and the
    other state dicts (``optimizer``, ``scheduler``, ``scaler`` if saved) for the step to restore.
    A clear error for an incomplete directory."""
    if not (path / STATE_FILE).exists():
        raise FileNotFoundError(f"{path} is not a complete checkpoint (no {STATE_FILE})")
    missing, unexpected = load_model(model, str(path / "model.safetensors"), strict=False)
    if unexpected or [m for m in missing if not _is_tied(m)]:
        raise RuntimeError(f"{path}: weights do not match the model (missing {missing[:5]}, unexpected {unexpected[:5]})")
    states = {f.stem: torch.load(f, weights_only=True) for f in sorted(path.glob("*.pt")) if not f.name.startswith("rng-")}
    rng_file = path / f"rng-rank{rank}.pt"
    if rng_file.exists():
        rng = torch.load(rng_file, weights_only=True)
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
    data = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
    return TrainerState(**data), states


def _is_tied(name: str) -> bool:
    return name.endswith(("embed_tokens.weight", "lm_head.weight"))


def _install(tmp: Path, final: Path) -> None:
    """Rename the complete ``tmp`` to ``final``; a complete ``final`` of the same step (a re-save
    after resume) is moved aside first and deleted only once the new one is in place."""
    parent = final.parent
    aside = parent / f".replaced-{final.name}"
    if final.exists():
        shutil.rmtree(aside, ignore_errors=True)
        os.replace(final, aside)
        _fsync_dir(parent)
    os.replace(tmp, final)
    _fsync_dir(parent)
    shutil.rmtree(aside, ignore_errors=True)


def _prune(checkpoint_dir: Path, keep_last: int) -> None:
    """Keep the newest ``keep_last`` complete checkpoints; drop leftovers of interrupted saves."""
    done = list_complete(checkpoint_dir)
    for old in done[: max(0, len(done) - max(1, keep_last))]:
        shutil.rmtree(old, ignore_errors=True)
    kept = set(list_complete(checkpoint_dir))
    for p in checkpoint_dir.iterdir():
        if (p.name.startswith(".tmp-step-") or REPLACED_DIR.match(p.name)) and p not in kept:
            shutil.rmtree(p, ignore_errors=True)


def _fsync_tree(path: Path) -> None:
    """fsync every file in ``path`` and then ``path`` itself (its entries)."""
    for f in path.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    _fsync_dir(path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
