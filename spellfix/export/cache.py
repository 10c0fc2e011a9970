"""The export a model dir needs for the fast runtime, made once and kept in a cache.

Why: the fast corrector is ONNX Runtime over an export dir (``onnx/`` fp32, ``onnx-int8/``), but what
a user has is a trained model dir or the shipped model's name. ``spellfix correct --backend
onnxruntime`` and the benchmarks call :func:`cached_export`, so nobody has to run ``spellfix export``
and keep track of which export belongs to which weights. The key is the content of the files the
export is made from (weights, ``spellfix.json`` with its calibrated rule, tokenizer, config): a
re-trained or re-calibrated model gets a new export, an unchanged one is never exported twice.
``export`` writes into a temporary sibling and renames it into place, so a crash mid-export leaves
no half export under the key.

The cache lives in ``$SPELLFIX_CACHE`` (default ``~/.cache/spellfix``), under ``exports/``.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Sequence

from spellfix.inference import layout
from spellfix.shipped import resolve_model_dir

log = logging.getLogger(__name__)

#: environment variable naming the cache root
CACHE_ENV = "SPELLFIX_CACHE"
#: what the fast runtime reads: the fp32 graphs and the int8 ones (``SpellCorrector(precision=...)``)
RUNTIME_FORMATS = ("hf", "onnx", "onnx-int8")
#: the files of a model dir whose content decides its export
_SOURCE_FILES = ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "spellfix.json")


def cache_root() -> Path:
    """``$SPELLFIX_CACHE`` or ``~/.cache/spellfix``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "spellfix").expanduser()


def source_key(model_dir: Path) -> str:
    """A short digest of the files the export is made from (their names and content)."""
    digest = hashlib.sha256()
    for name in _SOURCE_FILES:
        path = model_dir / name
        if path.is_file():
            digest.update(name.encode())
            with path.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()[:16]


def cached_export(model: str | Path, formats: Sequence[str] = RUNTIME_FORMATS, *, cache_dir: Path | None = None) -> Path:
    """The export dir of ``model`` (a training output dir, checkpoint dir or shipped model name)
    holding ``formats``; exported on first use. An export dir is returned as it is."""
    if layout.is_export_dir(Path(model)):
        return Path(model)
    model_dir = Path(resolve_model_dir(model))
    if not model_dir.is_dir():
        raise FileNotFoundError(f"{model}: not a model dir, export dir or shipped model name (hub ids are exported with `spellfix export`)")
    root = (cache_dir or cache_root()) / "exports"
    target = root / f"{model_dir.name}-{source_key(model_dir)}"
    if _holds(target, formats):
        return target
    from spellfix.export import export

    root.mkdir(parents=True, exist_ok=True)
    log.warning("exporting %s once for the fast runtime (%s) -> %s", model_dir, ",".join(formats), target)
    export(model_dir, target, formats=list(formats))
    return target


def _holds(export_dir: Path, formats: Sequence[str]) -> bool:
    """A complete export (its manifest written last) with each asked-for format's directory
    (an export names its directories after the formats: ``hf/``, ``onnx/``, ``onnx-int8/``)."""
    return layout.is_export_dir(export_dir) and all((export_dir / f).is_dir() for f in formats)
