"""``manifest.json``: what an export holds and how far to trust it.

Versions of every tool involved, the graphs' I/O (names, dtypes, shapes with named dynamic axes),
parity figures, and the sha256 of every file — enough for a serving host to check it loaded the
artifacts it was meant to, and for a reader to know what produced them.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from spellfix.inference import layout

MANIFEST_FORMAT_VERSION = 1
#: bumped whenever the exported graphs change for the same model (caches keyed on it rebuild)
EXPORT_REVISION = 3
_VERSIONED = ("spellfix", "torch", "transformers", "onnx", "onnxruntime", "onnxscript", "tokenizers", "numpy", "tensorrt")


def tool_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for dist in _VERSIONED:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_table(root: Path) -> dict[str, dict[str, Any]]:
    """sha256 and size of every file under ``root`` except the manifest itself."""
    table: dict[str, dict[str, Any]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel == layout.MANIFEST_FILE:
            continue
        table[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    return table


def verify_files(export_dir: Path, manifest: dict[str, Any], prefix: str = "") -> None:
    """Raise if a file listed in the manifest (under ``prefix``) is missing or differs."""
    for rel, entry in manifest.get("files", {}).items():
        if not rel.startswith(prefix):
            continue
        path = export_dir / rel
        if not path.is_file():
            raise FileNotFoundError(f"{path}: listed in {layout.MANIFEST_FILE} but missing")
        if sha256_file(path) != entry["sha256"]:
            raise ValueError(f"{path}: sha256 differs from {layout.MANIFEST_FILE} (file changed after export)")



def build_manifest(
    export_dir: Path,
    *,
    source: str,
    model_info: dict[str, Any],
    settings: dict[str, Any],
    decoding: dict[str, Any],
    formats: list[str],
    graphs: dict[str, dict[str, Any]],
    dynamic_axes: dict[str, str],
    opset: int | None,
    parity: dict[str, Any],
    tensorrt: dict[str, Any] | None = None,
) -> dict[str, Any]:
    manifest: dict[str, Any] = {
        "format_version": MANIFEST_FORMAT_VERSION,
        "export_revision": EXPORT_REVISION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": source,
        "versions": tool_versions(),
        "model": model_info,
        "settings": settings,
        "decoding": decoding,
        "formats": formats,
        "opset": opset,
        "dynamic_axes": dynamic_axes,
        "graphs": graphs,
        "parity": parity,
    }
    if tensorrt is not None:
        manifest["tensorrt"] = tensorrt
    manifest["files"] = file_table(export_dir)
    return manifest
