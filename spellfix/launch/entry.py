"""The SageMaker job's entry point: recipe + channels -> train (resuming) -> model in SM_MODEL_DIR.

torchrun starts this once per GPU (``launch/entry.py`` in the source bundle). Each process:

1. reads the container contract (:mod:`spellfix.launch.sm_env`);
2. checks the GPUs before anything slow: SM_NUM_GPUS visible to torch, and this torch build has kernels
   for the GPU's architecture (a V100 with a CUDA 13 image fails here in one sentence, not hours later
   in a CUDA error);
3. loads the bundled recipe, applies the ``overrides`` hyperparameter and points data fields at the
   input channels;
4. trains with resumable checkpoints in /opt/ml/checkpoints (synced to S3 by SageMaker and restored
   after a spot interruption: ``resume=auto`` continues from the newest complete one) and TensorBoard
   files in /opt/ml/output/tensorboard;
5. on rank 0, exports the final model into SM_MODEL_DIR (``hf/``) and copies the run's metrics into
   SM_OUTPUT_DATA_DIR.

Exit codes: 0 done; 143 stopped by SIGTERM after saving a checkpoint (start the job again to resume);
2 a configuration or hardware error (also written to /opt/ml/output/failure, which SageMaker shows as
the job's failure reason).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from spellfix.launch import LaunchError
from spellfix.launch.sm_env import (
    SageMakerEnv,
    parse_bool,
    read_environment,
    recipe_overrides,
    unknown_hyperparameters,
)

log = logging.getLogger("spellfix.launch.entry")

EXIT_CONFIG_ERROR = 2
EXIT_SIGTERM = 143

#: A directory holding a saved ``datasets`` dataset is one data source, not a folder of files.
DATASET_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
#: The source bundle's root (``launch/entry.py`` and ``spellfix/`` sit side by side in it).
BUNDLE_ROOT = Path(__file__).resolve().parents[2]


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run the job; returns the process exit code (see module docstring)."""
    _configure_logging()
    env = read_environment(environ, sys.argv[1:] if argv is None else argv)
    rank = int((os.environ if environ is None else environ).get("RANK", "0"))  # set by torchrun
    try:
        check_gpus(env)
        recipe = job_recipe(env)
    except (LaunchError, ValueError, RuntimeError) as exc:
        return _fail(env, rank, str(exc))

    import spellfix
    from spellfix.training.signals import Preempted

    run_dir = Path(str(env.hyperparameters.get("output_dir") or env.output_data_dir.parent / "spellfix-run"))
    if rank == 0:
        keep_tokenizer_with_checkpoints(run_dir, env.checkpoint_dir)
    resume = str(env.hyperparameters.get("resume", "auto"))
    log.info("spellfix: job recipe %s, run dir %s, checkpoints %s, resume=%s", recipe.name, run_dir, env.checkpoint_dir, resume)
    try:
        result = spellfix.train(
            recipe, run_dir, resume=resume,
            checkpoint_dir=env.checkpoint_dir, logdir=env.tensorboard_dir, progress=False,
        )
    except Preempted as exc:
        log.warning("spellfix: %s; the next start resumes from it", exc)
        return EXIT_SIGTERM
    except (ValueError, FileNotFoundError) as exc:
        return _fail(env, rank, str(exc))
    if rank == 0:
        publish(result, env)
    return 0


# --------------------------------------------------------------------------------- start-up


def check_gpus(env: SageMakerEnv) -> None:
    """Fail in one sentence when the GPUs SageMaker gave us cannot run this torch build."""
    if env.num_gpus <= 0:
        return
    import torch

    from spellfix.training.hardware import check_cuda_arch

    if not torch.cuda.is_available():
        raise LaunchError(
            f"SM_NUM_GPUS={env.num_gpus} but torch {torch.__version__} sees no CUDA device: the image's torch "
            "is a CPU build, or requirements.txt replaced it (never let pip reinstall torch in a GPU image)"
        )
    visible = torch.cuda.device_count()
    if visible < env.num_gpus:
        raise LaunchError(f"SM_NUM_GPUS={env.num_gpus} but torch sees only {visible} CUDA device(s)")
    arch_list = torch.cuda.get_arch_list()
    for index in range(visible):
        check_cuda_arch(arch_list, torch.cuda.get_device_capability(index))


def job_recipe(env: SageMakerEnv) -> Any:
    """The recipe this job trains: the ``recipe`` hyperparameter (bundled file, path or shipped name),
    the ``overrides`` hyperparameter, and data fields pointed at the input channels."""
    from spellfix.config import load_recipe

    hps = env.hyperparameters
    for key in unknown_hyperparameters(hps):
        log.warning("spellfix: ignoring unknown hyperparameter %r", key)
    if "resume" in hps and str(hps["resume"]) not in ("auto", "never") and not Path(str(hps["resume"])).exists():
        raise LaunchError(f"hyperparameter resume={hps['resume']!r}: use auto, never or a checkpoint path")
    name = hps.get("recipe")
    if not name:
        raise LaunchError("hyperparameter 'recipe' is missing (a recipe file in the source bundle or a shipped recipe name)")
    bundled = BUNDLE_ROOT / str(name)
    recipe = load_recipe(bundled if bundled.is_file() else str(name), recipe_overrides(hps))
    apply_channels(recipe, env.channels)
    return recipe


def apply_channels(recipe: Any, channels: Mapping[str, Path]) -> None:
    """Point the recipe's data (and model, for fine-tuning) at the channel directories present."""
    if "train" in channels:
        recipe.data.train = [str(p) for p in channel_files(channels["train"], "train")]
    if "clean" in channels:
        recipe.data.clean = [str(p) for p in channel_files(channels["clean"], "clean")]
    if "validation" in channels:
        files = channel_files(channels["validation"], "validation")
        if len(files) != 1:
            raise LaunchError(
                f"channel 'validation' ({channels['validation']}) must hold exactly one pair file (data.dev), "
                f"found {len(files)}: {', '.join(p.name for p in files)}"
            )
        recipe.data.dev = str(files[0])
    if "model" in channels:
        recipe.model.name_or_path = str(channels["model"])


def channel_files(root: Path, name: str) -> list[Path]:
    """The data sources in a channel directory, in a stable order: the channel itself when it is a
    saved ``datasets`` dataset, else every file (and dataset subdirectory) below it, sorted by path.
    The launcher prefixes staged files ``00-``, ``01-`` ... so this order is the recipe's order."""
    if not root.is_dir():
        raise LaunchError(f"channel '{name}': {root} is not a directory")
    if _is_dataset_dir(root):
        return [root]
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        here = Path(dirpath)
        dirnames.sort()
        keep = []
        for d in dirnames:
            if d.startswith("."):
                continue
            if _is_dataset_dir(here / d):
                found.append(here / d)
            else:
                keep.append(d)
        dirnames[:] = keep
        found.extend(here / f for f in filenames if not f.startswith("."))
    if not found:
        raise LaunchError(f"channel '{name}' ({root}) is empty")
    return sorted(found, key=lambda p: p.relative_to(root).parts)


def _is_dataset_dir(path: Path) -> bool:
    return any((path / marker).is_file() for marker in DATASET_MARKERS)


def keep_tokenizer_with_checkpoints(run_dir: Path, checkpoint_dir: Path) -> None:
    """Make ``run_dir/tokenizer`` live in the checkpoint directory.

    A from-scratch recipe trains its tokenizer into OUT/tokenizer and resumes with it; the checkpoints
    do not contain it. In a job, OUT is local scratch and only /opt/ml/checkpoints survives a spot
    interruption, so the tokenizer goes there (a symlink) and comes back with the checkpoints.
    """
    target = checkpoint_dir / "tokenizer"
    link = run_dir / "tokenizer"
    if link.is_symlink() or link.exists():
        return
    target.mkdir(parents=True, exist_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target, target_is_directory=True)


# -------------------------------------------------------------------------------- finishing


def publish(result: Any, env: SageMakerEnv) -> None:
    """Export the final model into SM_MODEL_DIR and copy the run's logs into SM_OUTPUT_DATA_DIR."""
    formats = env.hyperparameters.get("export_formats", "hf")
    formats = [f.strip() for f in formats.split(",")] if isinstance(formats, str) else list(formats)
    model_dir = Path(result.final_dir) if result.final_dir else None
    if model_dir is None or not model_dir.is_dir():
        raise RuntimeError(f"training finished without a final model directory (got {result.final_dir})")
    env.model_dir.mkdir(parents=True, exist_ok=True)
    try:
        from spellfix.export import export
    except ImportError:
        export = None
    if export is not None:
        export(model_dir, env.model_dir, formats=formats)
    else:
        # final/ already is a Hugging Face safetensors model dir: the same thing export writes to hf/.
        log.warning("spellfix: spellfix.export is unavailable; copying %s to %s/hf", model_dir, env.model_dir)
        shutil.copytree(model_dir, env.model_dir / "hf", dirs_exist_ok=True)
    env.output_data_dir.mkdir(parents=True, exist_ok=True)
    run_dir = Path(result.output_dir)
    for source in (env.tensorboard_dir / "metrics.jsonl", env.tensorboard_dir / "device.jsonl", run_dir / "recipe.yaml"):
        if source.is_file():
            shutil.copy2(source, env.output_data_dir / source.name)
    log.info("spellfix: model exported to %s (%s), logs copied to %s", env.model_dir, ",".join(formats), env.output_data_dir)


def _fail(env: SageMakerEnv, rank: int, message: str) -> int:
    message = message.strip().splitlines()[0] if message.strip() else "unknown error"
    print(f"spellfix: error: {message}", file=sys.stderr, flush=True)
    if rank == 0 and env.failure_file.parent.is_dir():  # /opt/ml/output exists only in a job
        try:
            env.failure_file.write_text(f"spellfix: {message}\n", encoding="utf-8")
        except OSError:
            pass  # the stderr line is enough
    return EXIT_CONFIG_ERROR


def _configure_logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
