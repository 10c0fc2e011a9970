"""Recipes: YAML files validated into dataclasses.

A recipe is the single source of truth for a run (torchtune-style): every field has a default and a
help string, unknown keys and bad values are rejected with a message that names the key and the
allowed values, and ``--set section.key=value`` overrides are parsed against the field's type. The
resolved recipe is saved next to every checkpoint so a run can be reproduced from its output alone.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, get_args, get_origin

import yaml

from spellfix.fsutil import write_text_atomic
from spellfix.lexical.candidates import CandidatesConfig
from spellfix.data.noise import NoiseConfig
from spellfix.shipped import shipped_root

#: the checkout, $SPELLFIX_HOME or the wheel's spellfix/_shipped/ (spellfix.shipped)
REPO_ROOT = shipped_root()
RECIPES_DIR = REPO_ROOT / "recipes"


class RecipeError(ValueError):
    """A recipe file or override is invalid; the message names the key and what is allowed."""


def _help(text: str, **kwargs: Any) -> Any:
    return field(metadata={"help": text}, **kwargs)


@dataclass
class TokenizerConfig:
    kind: Literal["byte-bpe", "pretrained"] = _help(
        "byte-bpe: train a byte-level BPE on the training corpus; pretrained: load from model.name_or_path.",
        default="byte-bpe",
    )
    vocab_size: int = _help("Vocabulary size when training a byte-level BPE.", default=2000)
    min_frequency: int = _help("Minimum pair frequency for a BPE merge.", default=2)


@dataclass
class ModelConfig:
    name_or_path: str | None = _help(
        "Hub id (e.g. facebook/bart-base) or local directory to fine-tune; null builds from `config`.",
        default=None,
    )
    architecture: Literal["bart", "mbart"] = _help(
        "From-scratch architecture: bart (post-LayerNorm) or mbart (pre-LayerNorm, trains from scratch "
        "far more reliably, see STACK.md).",
        default="mbart",
    )
    config: dict[str, Any] = _help(
        "Config keys for a from-scratch model (d_model, encoder_layers, ...); ignored with name_or_path.",
        default_factory=dict,
    )
    tokenizer: TokenizerConfig = _help("How the tokenizer is obtained.", default_factory=TokenizerConfig)
    dropout: float | None = _help("Override the model's dropout (null keeps the config's).", default=None)


@dataclass
class DataConfig:
    train: list[str] = _help("Pair files (query, correction) used for training.", default_factory=list)
    clean: list[str] = _help(
        "Clean-query corpora (one query per line); turned into pairs by the noise synthesizer.",
        default_factory=list,
    )
    dev: str | None = _help("Pair file evaluated during training (never trained on).", default=None)
    query_column: str = _help("Column holding the query as typed.", default="query")
    correction_column: str = _help("Column holding the corrected query.", default="correction")
    on_error: Literal["skip", "error"] = _help(
        "What a malformed row does: skip (reported, counted) or error (stop at the first).", default="skip"
    )
    max_query_chars: int = _help("Longer queries are reported as malformed rows.", default=256)
    max_source_length: int = _help("Encoder tokens kept (longer inputs are truncated).", default=64)
    max_target_length: int = _help("Decoder tokens kept (longer targets are truncated).", default=64)
    noisy_copies: int = _help("Noisy pairs drawn per clean query (each with its own noise).", default=1)
    max_clean_queries: int | None = _help("Use only the first N clean queries (null: all).", default=None)
    dictionary_words: int = _help(
        "Add the N most frequent English words (symspellpy's frequency dictionary, 3+ letters) as "
        "one-word clean queries, noised like data.clean: teaches isolated-word correction (0: none).",
        default=0,
    )
    noise: NoiseConfig = _help("Noise synthesizer settings.", default_factory=NoiseConfig)
    candidates: CandidatesConfig = _help(
        "Dictionary candidates appended to the encoder input.", default_factory=CandidatesConfig
    )
    cache_dir: str | None = _help(
        "Where tokenized datasets are cached (null: <output_dir>/cache).", default=None
    )


@dataclass
class BatchingConfig:
    group_by_length: bool = _help(
        "Sort pools of examples by (source, target) length so a batch pads little.", default=True
    )
    pool_factor: int = _help("Length-sorting pool size, in batches (bigger: less padding, less randomness).", default=50)
    max_tokens: int | None = _help(
        "Token budget per device batch (padded source + target tokens); null: fixed batch size.", default=None
    )
    length_key: Literal["source+target", "source"] = _help(
        "What length grouping sorts by: source+target (labels pad little too) or source only (what "
        "transformers' group_by_length does; kept to measure the difference).",
        default="source+target",
    )
    padding: Literal["dynamic", "max_length"] = _help(
        "dynamic: pad each micro-batch to its own longest row; max_length: pad every batch to "
        "data.max_source_length/max_target_length (the slow 'before').",
        default="dynamic",
    )
    num_workers: int = _help("DataLoader worker processes (collation off the training thread).", default=0)
    pin_memory: bool = _help(
        "Pin host memory and copy batches with non_blocking=True (CUDA only; no effect on CPU).", default=True
    )


@dataclass
class TrainConfig:
    precision: Literal["auto", "fp32", "fp16", "bf16"] = _help(
        "auto: bf16 where the hardware has it, fp16 + loss scaling on older GPUs, fp32 otherwise.",
        default="auto",
    )
    global_batch_size: int = _help("Examples per optimizer step across all processes.", default=64)
    per_device_batch_size: int | None = _help(
        "Examples per forward pass per process; accumulation is derived (null: global / world size).",
        default=None,
    )
    lr: float = _help("Peak learning rate at reference_batch_size (scaled by lr_scaling).", default=1e-3)
    lr_scaling: Literal["none", "linear", "sqrt"] = _help(
        "How the LR scales with global batch relative to reference_batch_size.", default="none"
    )
    reference_batch_size: int = _help("Batch size at which `lr` was tuned.", default=64)
    warmup_steps: int = _help("Linear warmup steps.", default=200)
    schedule: Literal["linear", "cosine", "constant"] = _help("Decay after warmup.", default="linear")
    weight_decay: float = _help("AdamW weight decay (not on biases or LayerNorm).", default=0.01)
    adam_beta1: float = _help("AdamW beta1.", default=0.9)
    adam_beta2: float = _help("AdamW beta2.", default=0.98)
    adam_eps: float = _help("AdamW epsilon.", default=1e-8)
    fused_adamw: Literal["auto", "on", "off"] = _help("Fused AdamW kernel (auto: where supported).", default="auto")
    grad_clip: float | None = _help("Max gradient norm (null: no clipping).", default=1.0)
    label_smoothing: float = _help("Label smoothing of the cross-entropy loss.", default=0.1)
    epochs: float = _help("Passes over the training pairs (ignored when max_steps is set).", default=1.0)
    max_steps: int | None = _help("Stop after this many optimizer steps.", default=None)
    max_minutes: float | None = _help(
        "Wall-time budget of one invocation: stop (all ranks at the same step), save and write final/; "
        "--resume auto continues the same schedule to max_steps.",
        default=None,
    )
    log_every: int = _help("Log metrics every N optimizer steps.", default=20)
    eval_every: int = _help("Evaluate on the dev set every N optimizer steps (0: only at the end).", default=500)
    save_every: int = _help("Save a resumable checkpoint every N optimizer steps (0: only at the end).", default=500)
    keep_last: int = _help("How many resumable checkpoints to keep.", default=2)
    early_stopping_patience: int | None = _help(
        "Stop after this many evaluations without improvement (null: never).", default=None
    )
    max_nonfinite_steps: int = _help(
        "Stop with an error after this many consecutive steps with a non-finite loss.", default=20
    )
    seed: int = _help("Seed for data order, noise and initialisation.", default=0)
    compile: bool = _help("torch.compile the model and its loss (dynamic shapes).", default=False)
    loss: Literal["fused-head", "full-logits"] = _help(
        "fused-head: LM head + cross-entropy only on real target positions, in chunks, never storing "
        "full-vocabulary fp32 logits; full-logits: model(...).logits + F.cross_entropy (reference).",
        default="fused-head",
    )
    bf16_weights: bool = _help(
        "precision bf16 only: forward/backward on a bf16 copy of the model, fp32 master weights in the "
        "optimizer (no autocast casts); false: bf16 autocast over fp32 weights.",
        default=False,
    )
    attention: Literal["auto", "sdpa", "eager"] = _help(
        "Attention kernel: auto keeps the model's default (sdpa); eager = plain matmul + softmax.",
        default="auto",
    )
    host_sync: Literal["every_step", "log_steps"] = _help(
        "every_step: read the loss on the host each step (skip non-finite steps there); log_steps: no "
        "device->host sync between log steps (non-finite steps skipped on the device by fused AdamW, "
        "counted and checked at log steps; ranks agree on SIGTERM at log steps).",
        default="every_step",
    )
    cpu_allocator: Literal["retain", "system"] = _help(
        "CPU training on glibc: retain = large tensors come from the heap and freed memory is kept for the "
        "next step (no fresh page faults every step; given back when training ends); system = glibc's defaults.",
        default="retain",
    )
    ddp_no_sync: bool = _help(
        "Skip the gradient all-reduce on all but the last micro-batch of a step (DDP no_sync).", default=True
    )
    batching: BatchingConfig = _help("How examples become batches.", default_factory=BatchingConfig)


@dataclass
class EvalConfig:
    limit: int | None = _help("Evaluate on at most N dev rows during training (null: all).", default=400)
    batch_size: int = _help("Queries per generation batch.", default=64)
    num_beams: int = _help("Beam width (1: greedy).", default=1)
    max_new_tokens: int = _help("Upper bound on generated tokens.", default=48)
    metric: str = _help("Metric that picks the best checkpoint (higher is better).", default="score")


@dataclass
class TelemetryConfig:
    sample_interval_s: float = _help("Seconds between device samples (NVML or CPU).", default=1.0)
    tensorboard: bool = _help("Write TensorBoard event files.", default=True)
    stdout: bool = _help("Print one `spellfix: step=...` line per log step.", default=True)


@dataclass
class ExportConfig:
    formats: list[str] = _help("Formats written by `spellfix export` by default.", default_factory=lambda: ["hf", "onnx"])
    opset: int = _help("ONNX opset.", default=17)
    fp16: bool = _help("Also write fp16 graphs for TensorRT.", default=False)


@dataclass
class Recipe:
    name: str = _help("Recipe name (informational).", default="unnamed")
    description: str = _help("What this recipe is for.", default="")
    model: ModelConfig = _help("Model and tokenizer.", default_factory=ModelConfig)
    data: DataConfig = _help("Training and dev data.", default_factory=DataConfig)
    train: TrainConfig = _help("Optimisation and the training loop.", default_factory=TrainConfig)
    eval: EvalConfig = _help("Evaluation during training.", default_factory=EvalConfig)
    telemetry: TelemetryConfig = _help("Device and throughput logging.", default_factory=TelemetryConfig)
    export: ExportConfig = _help("Export defaults.", default_factory=ExportConfig)
    source_path: str | None = field(default=None, metadata={"help": "Where this recipe was loaded from.", "internal": True})

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "source_path"}


# ---------------------------------------------------------------------------------------- parsing


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check/convert ``value`` to the annotated type ``tp``; raise RecipeError naming ``key``."""
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except RecipeError as exc:
                errors.append(str(exc))
        raise RecipeError(errors[0] if errors else f"{key}: got {value!r}")
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise RecipeError(f"{key}: {value!r} is not allowed; expected one of {', '.join(map(repr, allowed))}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(tp, type) and isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise RecipeError(f"{key}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return from_dict(tp, value, prefix=key)
    if origin is list:
        (item_tp,) = get_args(tp) or (Any,)
        if isinstance(value, str):
            value = [v for v in value.split(",") if v] if "," in value else [value]
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise RecipeError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise RecipeError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise RecipeError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(float(value)) if float(value).is_integer() else int(value)
            except ValueError:
                pass
        raise RecipeError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise RecipeError(f"{key}: expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise RecipeError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise RecipeError(f"{key}: expected a string, got {value!r}")
    raise RecipeError(f"{key}: unsupported field type {_type_name(tp)}")


def from_dict(cls: type, data: Mapping[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys by name."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            raise RecipeError(f"unknown key '{full}'; allowed keys here: {', '.join(sorted(fields))}")
        kwargs[key] = _coerce(value, hints[key], full)
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    return obj


def _parse_override_value(raw: str) -> Any:
    """YAML-parse an override value so `--set train.lr=3e-4` or `data.train=[a,b]` work."""
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def apply_overrides(data: dict[str, Any], overrides: Mapping[str, Any] | list[str] | None) -> dict[str, Any]:
    """Apply ``{"train.lr": 3e-4}`` or ``["train.lr=3e-4"]`` to a nested recipe dict (in place)."""
    if not overrides:
        return data
    items: list[tuple[str, Any]] = []
    if isinstance(overrides, Mapping):
        items = list(overrides.items())
    else:
        for text in overrides:
            if "=" not in text:
                raise RecipeError(f"override {text!r} must look like section.key=value")
            key, raw = text.split("=", 1)
            items.append((key.strip(), _parse_override_value(raw.strip())))
    for dotted, value in items:
        node = data
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise RecipeError(f"override {dotted!r}: '{part}' is not a section")
        node[parts[-1]] = value
    return data


def resolve_recipe_path(name_or_path: str | os.PathLike[str]) -> Path:
    """Accept a path or a shipped recipe name (``quickstart`` -> recipes/quickstart.yaml)."""
    path = Path(name_or_path)
    if path.exists():
        return path
    shipped = RECIPES_DIR / f"{path.stem}.yaml"
    if path.suffix in ("", ".yaml", ".yml") and shipped.exists() and len(path.parts) == 1:
        return shipped
    names = ", ".join(p.stem for p in sorted(RECIPES_DIR.glob("*.yaml")))
    raise RecipeError(f"recipe not found: {name_or_path} (shipped recipes: {names})")


def load_recipe(
    path: str | os.PathLike[str] | Mapping[str, Any],
    overrides: Mapping[str, Any] | list[str] | None = None,
) -> Recipe:
    """Load and validate a recipe from a YAML file, a shipped recipe name, or a dict.

    Relative data paths in a recipe file are resolved against the repository root when they exist
    there, so shipped recipes work from any working directory.
    """
    if isinstance(path, Mapping):
        data, source = dict(path), None
    else:
        file = resolve_recipe_path(path)
        try:
            data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise RecipeError(f"{file}: not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise RecipeError(f"{file}: a recipe must be a mapping of sections, got {type(data).__name__}")
        source = str(file)
    data = apply_overrides(data, overrides)
    data.pop("source_path", None)
    try:
        recipe = from_dict(Recipe, data)
    except RecipeError as exc:
        raise RecipeError(f"{source}: {exc}" if source else str(exc)) from None
    recipe.source_path = source
    _check_consistency(recipe)
    return recipe


def _check_consistency(recipe: Recipe) -> None:
    t = recipe.train
    if t.global_batch_size < 1:
        raise RecipeError(f"train.global_batch_size must be >= 1, got {t.global_batch_size}")
    if t.per_device_batch_size is not None and t.per_device_batch_size < 1:
        raise RecipeError(f"train.per_device_batch_size must be >= 1, got {t.per_device_batch_size}")
    if t.lr <= 0:
        raise RecipeError(f"train.lr must be > 0, got {t.lr}")
    if recipe.data.dictionary_words < 0:
        raise RecipeError(f"data.dictionary_words must be >= 0, got {recipe.data.dictionary_words}")
    if not recipe.data.train and not recipe.data.clean and not recipe.data.dictionary_words:
        raise RecipeError(
            "data: give at least one file in data.train (pairs) or data.clean (clean queries), or data.dictionary_words"
        )
    if recipe.model.name_or_path is None and not recipe.model.config:
        raise RecipeError("model: set model.name_or_path (hub id or directory) or model.config (from scratch)")


def resolve_data_path(path: str) -> Path:
    """Relative paths: as given if they exist from the cwd, else relative to the repository root."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    candidate = REPO_ROOT / p
    return candidate if candidate.exists() else p


def recipe_to_yaml(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.to_dict(), sort_keys=False)


def save_recipe(recipe: Recipe, path: Path) -> None:
    """Write the resolved recipe atomically."""
    write_text_atomic(path, recipe_to_yaml(recipe))



def describe_fields(cls: type = Recipe, prefix: str = "") -> list[tuple[str, str, str]]:
    """(key, default, help) for every recipe field — used by `spellfix recipes --fields`."""
    rows = []
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        key = f"{prefix}{f.name}"
        hint = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(hint):
            rows.extend(describe_fields(hint, prefix=f"{key}."))
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        rows.append((key, repr(default), f.metadata.get("help", "")))
    return rows


def list_recipes() -> list[tuple[str, str]]:
    """(name, description) of the shipped recipes."""
    out = []
    for path in sorted(RECIPES_DIR.glob("*.yaml")):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError:
            data = {}
        out.append((path.stem, str(data.get("description", "")).strip().splitlines()[0] if data.get("description") else ""))
    return out
