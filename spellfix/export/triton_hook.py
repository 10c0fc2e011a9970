"""Hook for the ``triton`` export format, implemented by ``spellfix.export.triton`` (Triton issue).

Contract for that module: ``write_model_repository(export_dir: Path, info: dict) -> None`` writes
``export_dir/triton/`` (a model repository whose python-backend model builds
``spellfix.inference.SpellCorrector(<export dir>, backend="onnxruntime"|"tensorrt")``); ``info`` holds
the manifest fields gathered so far (formats, decoding, settings, graphs, tensorrt). It is called
after the ONNX graphs (and engines) exist and before the manifest hashes the files.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any


def require_triton_writer() -> Any:
    try:
        module = importlib.import_module("spellfix.export.triton")
    except ModuleNotFoundError as exc:
        if exc.name != "spellfix.export.triton":
            raise
        raise ValueError("the 'triton' export format is not available in this spellfix version (no spellfix.export.triton)") from None
    if not hasattr(module, "write_model_repository"):
        raise ValueError("spellfix.export.triton has no write_model_repository(export_dir, info)")
    return module


def write_triton(export_dir: Path, info: dict[str, Any]) -> None:
    require_triton_writer().write_model_repository(export_dir, info)
