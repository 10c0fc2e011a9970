"""Launch options → a validated plan, with no AWS call and no SDK import.

Everything a user can get wrong (role, instance type, precision vs GPU, batch vs GPU count, data
paths, S3 URIs, time limits, tags) is checked here, so a bad launch fails in a second with one clear
sentence instead of after the code and data were uploaded. The SageMaker side
(:mod:`spellfix.launch.sagemaker`) only turns a plan into SDK objects.

Data travels as SageMaker input channels, one per recipe data field::

    channel "train"      -> data.train   (pair files)
    channel "clean"      -> data.clean   (clean-query corpora)
    channel "validation" -> data.dev     (one pair file)
    channel "model"      -> model.name_or_path, when it is a local or S3 directory (fine-tuning)

A channel's source is the ``--train/--clean/--validation`` option when given (an S3 prefix or a
local file/dir), else the recipe's own files, which are uploaded. Inside the job
:mod:`spellfix.launch.entry` points the recipe fields at the channel directories.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spellfix.launch import LaunchError
from spellfix.launch.instances import InstanceType, check_precision, lookup_instance

#: Where SageMaker mounts channels, checkpoints and TensorBoard files inside the container.
CONTAINER_INPUT_DIR = "/opt/ml/input/data"
CONTAINER_CHECKPOINT_DIR = "/opt/ml/checkpoints"
CONTAINER_TENSORBOARD_DIR = "/opt/ml/output/tensorboard"

#: The resolved recipe's path inside the source bundle (passed as the ``recipe`` hyperparameter).
BUNDLED_RECIPE = "job/recipe.yaml"
ENTRY_SCRIPT = "launch/entry.py"

#: channel name -> recipe data field it feeds ("model", when the recipe fine-tunes a local or S3
#: model directory, feeds model.name_or_path).
CHANNEL_FIELDS = {"train": "train", "clean": "clean", "validation": "dev"}

DEFAULT_INSTANCE_TYPE = "ml.p3.16xlarge"
#: pytorch-training image version: 2.8.0 (CUDA 12.9) still has V100 (sm_70) kernels; 2.9+ is CUDA 13
#: without them (STACK.md). It runs on every GPU in the instance table.
DEFAULT_FRAMEWORK_VERSION = "2.8.0"

MAX_RUNTIME_HOURS = 28 * 24  # SageMaker's limit for MaxRuntimeInSeconds
ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$")
S3_URI = re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$")
JOB_NAME_BASE_MAX = 48  # the SDK appends "-YYYYmmddHHMMSS" and truncates names at 63


@dataclass
class LaunchOptions:
    """What the user asked for (the CLI's flags, or keyword arguments from Python)."""

    recipe: str
    role: str | None = None
    overrides: list[str] = field(default_factory=list)
    train: str | None = None
    validation: str | None = None
    clean: str | None = None
    instance_type: str = DEFAULT_INSTANCE_TYPE
    instance_count: int = 1
    spot: bool = False
    image: str | None = None
    framework_version: str = DEFAULT_FRAMEWORK_VERSION
    region: str | None = None
    checkpoint_s3: str | None = None
    output_path: str | None = None
    tensorboard_s3: str | None = None
    max_run_hours: float = 24.0
    max_wait_hours: float | None = None
    volume_size_gb: int = 50
    tags: list[str] = field(default_factory=list)
    base_job_name: str | None = None
    resume: str = "auto"


@dataclass
class ChannelSource:
    """One input channel: an S3 prefix, one local path, or several local paths staged together."""

    name: str
    s3_uri: str | None = None
    local_paths: list[Path] = field(default_factory=list)

    @property
    def container_dir(self) -> str:
        return f"{CONTAINER_INPUT_DIR}/{self.name}"


@dataclass
class LaunchPlan:
    options: LaunchOptions
    recipe: Any  # spellfix.config.Recipe, with data fields pointing at the channel directories
    recipe_yaml: str
    instance: InstanceType
    precision: str
    channels: list[ChannelSource]
    hyperparameters: dict[str, Any]
    environment: dict[str, str]
    tags: list[tuple[str, str]]
    max_run_s: int
    max_wait_s: int | None
    base_job_name: str

    @property
    def world_size(self) -> int:
        return self.instance.processes * self.options.instance_count


def parse_key_values(items: list[str], what: str) -> list[tuple[str, str]]:
    """``["a=1", "b=2,c=3"]`` -> ``[("a", "1"), ("b", "2"), ("c", "3")]`` (for --tags)."""
    pairs = []
    for item in items:
        for part in item.split(","):
            if not part.strip():
                continue
            key, sep, value = part.partition("=")
            if not sep or not key.strip():
                raise LaunchError(f"{what} {part!r} must look like key=value")
            pairs.append((key.strip(), value.strip()))
    return pairs


def overrides_to_dict(overrides: list[str]) -> dict[str, str]:
    """``--set`` items as a dict of raw strings (the job re-parses them like ``spellfix train --set``)."""
    out: dict[str, str] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise LaunchError(f"--set {item!r} must look like section.key=value")
        out[key.strip()] = value.strip()
    return out


def make_plan(options: LaunchOptions) -> LaunchPlan:
    """Validate ``options`` and resolve everything that does not need AWS. Raises LaunchError
    (or RecipeError, also a ValueError) with a message naming the option at fault."""
    from spellfix.config import load_recipe, recipe_to_yaml

    _check_role(options.role)
    instance = lookup_instance(options.instance_type)
    if options.instance_count < 1:
        raise LaunchError(f"--instance-count must be >= 1, got {options.instance_count}")
    if options.instance_count > 1:
        raise LaunchError(
            f"--instance-count {options.instance_count}: multi-node jobs are not supported. Each node has its own "
            "/opt/ml/checkpoints and run directory, while resuming needs every rank to read the same checkpoint "
            "and the tokenizer rank 0 trained; use one instance (up to 8 GPUs, e.g. ml.p3.16xlarge)"
        )
    _check_s3("--checkpoint-s3", options.checkpoint_s3)
    _check_s3("--output-path", options.output_path)
    _check_s3("--tensorboard-s3", options.tensorboard_s3)
    if options.resume not in ("auto", "never"):
        raise LaunchError(f"--resume {options.resume!r}: inside a job only auto or never make sense")
    if options.volume_size_gb < 1:
        raise LaunchError(f"--volume-size-gb must be >= 1, got {options.volume_size_gb}")
    max_run_s, max_wait_s = _stopping(options)
    tags = _tags(options)

    recipe = load_recipe(options.recipe, options.overrides)
    precision = check_precision(recipe.train.precision, instance)
    world = instance.processes * options.instance_count
    _check_batch(recipe, world, instance, options.instance_count)

    channels = _channels(options, recipe)
    by_name = {c.name: c for c in channels}
    recipe.data.train = [by_name["train"].container_dir] if "train" in by_name else []
    recipe.data.clean = [by_name["clean"].container_dir] if "clean" in by_name else []
    recipe.data.dev = by_name["validation"].container_dir if "validation" in by_name else None
    if "model" in by_name:
        recipe.model.name_or_path = by_name["model"].container_dir

    hyperparameters: dict[str, Any] = {"recipe": BUNDLED_RECIPE, "resume": options.resume}
    if options.overrides:
        # Already applied to the bundled recipe; repeated here so the console shows what changed
        # and a cloned job can be tweaked by editing this one hyperparameter.
        hyperparameters["overrides"] = overrides_to_dict(options.overrides)

    return LaunchPlan(
        options=options,
        recipe=recipe,
        recipe_yaml=recipe_to_yaml(recipe),
        instance=instance,
        precision=precision,
        channels=channels,
        hyperparameters=hyperparameters,
        environment={
            "PYTHONUNBUFFERED": "1",  # metric lines must reach CloudWatch as they are printed
            "TOKENIZERS_PARALLELISM": "false",
            "SPELLFIX_CHECKPOINT_DIR": CONTAINER_CHECKPOINT_DIR,
            "SPELLFIX_TENSORBOARD_DIR": CONTAINER_TENSORBOARD_DIR,
        },
        tags=tags,
        max_run_s=max_run_s,
        max_wait_s=max_wait_s,
        base_job_name=_base_job_name(options.base_job_name, recipe.name),
    )


# ----------------------------------------------------------------------------------- checks


def _check_role(role: str | None) -> None:
    if not role:
        raise LaunchError(
            "--role is required: the ARN of the IAM role SageMaker assumes for the job "
            "(arn:aws:iam::<12-digit account>:role/<name>)"
        )
    if not ROLE_ARN.match(role):
        raise LaunchError(f"--role {role!r} is not an IAM role ARN; expected arn:aws:iam::<12-digit account>:role/<name>")


def _check_s3(option: str, uri: str | None) -> None:
    if uri is not None and not S3_URI.match(uri):
        raise LaunchError(f"{option} {uri!r} is not an S3 URI; expected s3://<bucket>/<prefix>")


def _stopping(options: LaunchOptions) -> tuple[int, int | None]:
    if not 0 < options.max_run_hours <= MAX_RUNTIME_HOURS:
        raise LaunchError(f"--max-run-hours must be in (0, {MAX_RUNTIME_HOURS}], got {options.max_run_hours}")
    max_run_s = int(round(options.max_run_hours * 3600))
    if not options.spot:
        if options.max_wait_hours is not None:
            raise LaunchError("--max-wait-hours applies to managed spot training only; add --spot or drop it")
        return max_run_s, None
    wait_hours = options.max_wait_hours if options.max_wait_hours is not None else 2 * options.max_run_hours
    max_wait_s = int(round(wait_hours * 3600))
    if max_wait_s < max_run_s:
        raise LaunchError(
            f"--max-wait-hours ({wait_hours}) must be >= --max-run-hours ({options.max_run_hours}): "
            "it is the total time including waiting for spot capacity"
        )
    return max_run_s, max_wait_s


def _tags(options: LaunchOptions) -> list[tuple[str, str]]:
    tags = [("project", "spellfix")]
    for key, value in parse_key_values(options.tags, "--tags"):
        if key.lower().startswith("aws:"):
            raise LaunchError(f"--tags {key!r}: the aws: prefix is reserved by AWS")
        if len(key) > 128 or len(value) > 256:
            raise LaunchError(f"--tags {key!r}: keys are at most 128 characters, values at most 256")
        tags = [t for t in tags if t[0] != key] + [(key, value)]
    return tags


def _check_batch(recipe: Any, world: int, instance: InstanceType, count: int) -> None:
    """The training loop needs global batch = per-device batch x accumulation x world size
    (spellfix.training.loop); check it for the instance's process count before launching."""
    t = recipe.train
    per_device = t.per_device_batch_size or t.global_batch_size // world
    if per_device < 1 or t.global_batch_size % per_device or (t.global_batch_size // per_device) % world:
        raise LaunchError(
            f"train.global_batch_size={t.global_batch_size} does not split over {world} training processes "
            f"({count} x {instance.describe()}) with per_device_batch_size={t.per_device_batch_size}: "
            f"use a multiple of {world} (x per_device_batch_size)"
        )


def _base_job_name(given: str | None, recipe_name: str) -> str:
    name = given or f"spellfix-{recipe_name}"
    clean = re.sub(r"[^a-zA-Z0-9-]+", "-", name).strip("-")[:JOB_NAME_BASE_MAX].strip("-")
    if given is not None and clean != given:
        raise LaunchError(
            f"--base-job-name {given!r}: use at most {JOB_NAME_BASE_MAX} letters, digits and hyphens "
            f"(e.g. {clean!r})"
        )
    return clean or "spellfix"


# --------------------------------------------------------------------------------- channels


def _channels(options: LaunchOptions, recipe: Any) -> list[ChannelSource]:
    from spellfix.config import resolve_data_path

    requested = {"train": options.train, "clean": options.clean, "validation": options.validation}
    recipe_paths = {
        "train": list(recipe.data.train),
        "clean": list(recipe.data.clean),
        "validation": [recipe.data.dev] if recipe.data.dev else [],
    }
    channels = []
    for name, source in requested.items():
        option = f"--{name}"
        if source is not None:
            channels.append(_one_source(name, source, option))
            continue
        paths = recipe_paths[name]
        if not paths:
            continue
        where = f"recipe data.{CHANNEL_FIELDS[name]}"
        s3 = [p for p in paths if p.startswith("s3://")]
        if s3:
            if len(paths) > 1:
                raise LaunchError(f"{where} mixes several S3/local paths; pass one S3 prefix with {option} instead")
            channels.append(_one_source(name, s3[0], where))
            continue
        local = []
        for i, p in enumerate(paths):
            path = resolve_data_path(p)
            if not path.exists():
                raise LaunchError(f"{where}[{i}]: {p} does not exist (relative paths are read from the current directory or the repository root); or pass {option} S3_OR_PATH")
            local.append(path.resolve())
        channels.append(ChannelSource(name, local_paths=local))
    model = recipe.model.name_or_path
    if model and not model.startswith("s3://") and Path(model).expanduser().is_dir():
        # A local model directory to fine-tune: the job cannot see it, so it travels as a channel.
        channels.append(ChannelSource("model", local_paths=[Path(model).expanduser().resolve()]))
    elif model and model.startswith("s3://"):
        channels.append(_one_source("model", model, "recipe model.name_or_path"))
    if not any(c.name in ("train", "clean") for c in channels):
        raise LaunchError("no training data: pass --train S3_OR_PATH (pair files) or --clean, or set data.train in the recipe")
    return channels


def _one_source(name: str, source: str, where: str) -> ChannelSource:
    if source.startswith("s3://"):
        _check_s3(where, source)
        return ChannelSource(name, s3_uri=source)
    path = Path(source).expanduser()
    if not path.exists():
        raise LaunchError(f"{where} {source}: no such file or directory (give a local path or an s3:// URI)")
    return ChannelSource(name, local_paths=[path.resolve()])
