"""The SageMaker training-container contract, read once into a dataclass.

Inside a job, SageMaker (and the SDK's driver scripts) describe the run through environment variables::

    SM_CHANNEL_<NAME>   /opt/ml/input/data/<name>, one per input channel
    SM_MODEL_DIR        /opt/ml/model, uploaded as model.tar.gz when the job ends
    SM_OUTPUT_DATA_DIR  /opt/ml/output/data, uploaded as output.tar.gz
    SM_HPS              the hyperparameters as one JSON object
    SM_NUM_GPUS, SM_HOSTS (JSON list), SM_CURRENT_HOST

and pass the hyperparameters again as ``--key value`` arguments. Their types are unreliable: the v3
SDK JSON-decodes what it can (``true`` -> true, ``0.1`` -> 0.1, a dict -> a dict) and leaves the rest as
strings, the classic toolkit writes Python's ``False``. So :func:`parse_bool` accepts any case and
:func:`read_environment` prefers ``SM_HPS`` (typed) over argv (strings).

Checkpoint and TensorBoard paths are not in SageMaker's environment (they are fixed by the job's
CheckpointConfig / TensorBoardOutputConfig); the launcher passes them as ``SPELLFIX_CHECKPOINT_DIR`` and
``SPELLFIX_TENSORBOARD_DIR`` so both sides use one definition and tests can point them at temp dirs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spellfix.launch import LaunchError

DEFAULT_MODEL_DIR = "/opt/ml/model"
DEFAULT_OUTPUT_DATA_DIR = "/opt/ml/output/data"
DEFAULT_CHECKPOINT_DIR = "/opt/ml/checkpoints"
DEFAULT_TENSORBOARD_DIR = "/opt/ml/output/tensorboard"

#: Hyperparameters the entry point understands. Keys with a dot (``train.lr``) are recipe overrides;
#: keys starting with ``sagemaker_`` are set by SageMaker toolkits and ignored.
KNOWN_HYPERPARAMETERS = {"recipe", "resume", "overrides", "export_formats", "output_dir"}

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


@dataclass
class SageMakerEnv:
    channels: dict[str, Path]
    model_dir: Path
    output_data_dir: Path
    checkpoint_dir: Path
    tensorboard_dir: Path
    hyperparameters: dict[str, Any]
    num_gpus: int = 0
    hosts: list[str] = field(default_factory=list)
    current_host: str | None = None

    @property
    def failure_file(self) -> Path:
        """SageMaker shows this file's text as the job's FailureReason."""
        return self.output_data_dir.parent / "failure"


def read_environment(environ: Mapping[str, str] | None = None, argv: Sequence[str] | None = None) -> SageMakerEnv:
    """Read the container contract from ``environ`` (default ``os.environ``) and ``argv``."""
    env = os.environ if environ is None else environ
    channels = {
        key[len("SM_CHANNEL_") :].lower(): Path(value)
        for key, value in env.items()
        if key.startswith("SM_CHANNEL_") and value
    }
    hps = parse_cli_hyperparameters(list(argv or []))
    if env.get("SM_HPS"):
        try:
            sm_hps = json.loads(env["SM_HPS"])
        except json.JSONDecodeError as exc:
            raise LaunchError(f"SM_HPS is not valid JSON: {exc}") from None
        if not isinstance(sm_hps, dict):
            raise LaunchError(f"SM_HPS must be a JSON object, got {type(sm_hps).__name__}")
        hps.update(sm_hps)
    return SageMakerEnv(
        channels=channels,
        model_dir=Path(env.get("SM_MODEL_DIR") or DEFAULT_MODEL_DIR),
        output_data_dir=Path(env.get("SM_OUTPUT_DATA_DIR") or DEFAULT_OUTPUT_DATA_DIR),
        checkpoint_dir=Path(env.get("SPELLFIX_CHECKPOINT_DIR") or DEFAULT_CHECKPOINT_DIR),
        tensorboard_dir=Path(env.get("SPELLFIX_TENSORBOARD_DIR") or DEFAULT_TENSORBOARD_DIR),
        hyperparameters=hps,
        num_gpus=_int(env.get("SM_NUM_GPUS"), "SM_NUM_GPUS"),
        hosts=_json_list(env.get("SM_HOSTS"), "SM_HOSTS"),
        current_host=env.get("SM_CURRENT_HOST") or None,
    )


def parse_cli_hyperparameters(argv: Sequence[str]) -> dict[str, Any]:
    """``--key value`` / ``--key=value`` / a bare ``--flag`` -> dict; values JSON-decoded when they can
    be (as the SDK's driver does), else kept as strings."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--") or len(arg) == 2:
            raise LaunchError(f"unexpected argument {arg!r}: hyperparameters come as --key value")
        key, sep, value = arg[2:].partition("=")
        if not sep:
            if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                value = argv[i + 1]
                i += 1
            else:
                value = "true"
        out[key] = _json_or_str(value)
        i += 1
    return out


def parse_bool(value: Any, name: str) -> bool:
    """True/False from a bool, 0/1, or a string in any case (true, False, TRUE, yes, off ...)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise LaunchError(f"hyperparameter {name}={value!r} is not a boolean; use true or false")


def recipe_overrides(hps: Mapping[str, Any]) -> dict[str, Any]:
    """Recipe overrides from the ``overrides`` hyperparameter (a dict, its JSON or YAML text, or a list
    of ``key=value``) plus any dotted hyperparameter (``train.lr``). String values are parsed like
    ``spellfix train --set`` (YAML: ``3e-4`` -> float, ``False`` -> bool, ``[a, b]`` -> list)."""
    import yaml

    raw: dict[str, Any] = {}
    given = hps.get("overrides")
    if isinstance(given, str):
        text = given.strip()
        if text:
            try:
                given = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise LaunchError(f"hyperparameter overrides={given!r} is not a mapping: {exc}") from None
            if isinstance(given, str):
                given = [given]
    if isinstance(given, Mapping):
        raw.update({str(k): v for k, v in given.items()})
    elif isinstance(given, list):
        for item in given:
            key, sep, value = str(item).partition("=")
            if not sep:
                raise LaunchError(f"hyperparameter overrides: {item!r} must look like section.key=value")
            raw[key.strip()] = value.strip()
    elif given not in (None, ""):
        raise LaunchError(f"hyperparameter overrides={given!r} must be a mapping of section.key to value")
    raw.update({k: v for k, v in hps.items() if "." in k})

    def parse(value: Any) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return yaml.safe_load(value)
        except yaml.YAMLError:
            return value

    return {key: parse(value) for key, value in raw.items()}


def unknown_hyperparameters(hps: Mapping[str, Any]) -> list[str]:
    return sorted(k for k in hps if k not in KNOWN_HYPERPARAMETERS and "." not in k and not k.startswith("sagemaker_"))


def _json_or_str(value: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def _int(value: str | None, name: str) -> int:
    if value in (None, ""):
        return 0
    try:
        return int(value)
    except ValueError:
        raise LaunchError(f"{name}={value!r} is not an integer") from None


def _json_list(value: str | None, name: str) -> list[str]:
    if not value:
        return []
    try:
        data = json.loads(value)
    except json.JSONDecodeError:
        return [h for h in value.split(",") if h]
    if not isinstance(data, list):
        raise LaunchError(f"{name} must be a JSON list of host names, got {value!r}")
    return [str(h) for h in data]
