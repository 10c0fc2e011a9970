"""``spellfix export --format triton``: a self-contained Triton model repository (DESIGN.md).

Layout written to ``EXP/triton/`` (or any ``repository`` dir with ``write_repository``)::

    triton/spellfix/config.pbtxt          python backend, QUERY/CORRECTION TYPE_STRING, max_batch_size,
                                          dynamic_batching, instance_group, parameters
    triton/spellfix/1/model.py            spellfix.serving.triton_model
    triton/spellfix/1/spellfix/           a copy of the spellfix package (the code it was exported with)
    triton/spellfix/1/export/             the runtime subset of the export: tokenizer.json, spellfix.json,
                                          generation_config.json, manifest.json and the graphs the chosen
                                          backend loads (onnx/ or onnx-int8/ for ONNX Runtime, tensorrt/)

Self-contained on purpose: ``cp -r EXP/triton /models`` (or mounting it into an NGC container) is a
deployable unit that needs only the lean runtime (numpy<2, tokenizers, onnxruntime or TensorRT) in
the server's Python. Graph files are hard links into the export when on one filesystem (no second
copy on disk), else copies.

Options (``TritonOptions``) set ``max_batch_size``, ``dynamic_batching`` (on/off, max queue delay,
preferred batch sizes) and ``instance_group`` (count, KIND_CPU/KIND_GPU); ``kind="auto"`` means GPU
with TensorRT when the export holds engines, else CPU with ONNX Runtime. The pipeline calls
``write_model_repository(export_dir, info)``; ``write_repository`` (re)writes a repository for an
existing export, e.g. after building engines on the target GPU or for another batching setup.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from spellfix.fsutil import replace_dir
from spellfix.inference import layout

MODEL_NAME = "spellfix"
REPOSITORY_DIR = "triton"
VERSION = "1"
RUNTIME_DIR = "export"  # inside the version dir
KINDS = ("auto", "KIND_CPU", "KIND_GPU")
RUNTIME_BACKENDS = ("auto", "onnxruntime", "tensorrt")
ON_OVERLONG = ("error", "truncate")
_RUNTIME_FILES = (layout.TOKENIZER_FILE, layout.SETTINGS_FILE, layout.GENERATION_CONFIG_FILE)


@dataclass(frozen=True)
class TritonOptions:
    """What ``config.pbtxt`` says; every field is an export option (``export(..., triton_options=...)``)."""

    model_name: str = MODEL_NAME
    max_batch_size: int = 32  # queries per execute(); also the decode batch
    dynamic_batching: bool = True
    max_queue_delay_us: int = 0  # 0: a batch forms from what queued while the instance was busy
    preferred_batch_sizes: tuple[int, ...] = ()
    instance_count: int = 1
    kind: str = "auto"  # auto | KIND_CPU | KIND_GPU
    backend: str = "auto"  # auto | onnxruntime | tensorrt
    precision: str = "fp32"  # fp32 | int8 (onnxruntime)
    num_beams: int = 1
    on_overlong: str = "error"  # error | truncate: a query over max_source_length tokens
    max_query_bytes: int = 1024
    intra_op_threads: int = 0  # onnxruntime threads per instance; 0 = cores / CPU instances
    thread_spinning: bool = False  # onnxruntime threads busy-wait between ops; off: they would take the CPU
    # that Triton's own threads (HTTP/gRPC, batcher, stub IPC) need on the same cores (docs/serving.md)
    bundle_package: bool = True  # copy spellfix into the version dir (False: use the server's installed spellfix)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | "TritonOptions" | None) -> "TritonOptions":
        if values is None:
            return cls()
        if isinstance(values, TritonOptions):
            return values
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown triton option(s) {unknown}; known: {sorted(known)}")
        data = dict(values)
        if "preferred_batch_sizes" in data:
            data["preferred_batch_sizes"] = tuple(int(v) for v in data["preferred_batch_sizes"])
        return cls(**data)

    def validate(self) -> None:
        def positive(name: str, value: int, minimum: int = 1) -> None:
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"triton option {name} must be an integer >= {minimum}, got {value!r}")

        positive("max_batch_size", self.max_batch_size)
        positive("max_queue_delay_us", self.max_queue_delay_us, 0)
        positive("instance_count", self.instance_count)
        positive("num_beams", self.num_beams)
        positive("max_query_bytes", self.max_query_bytes)
        positive("intra_op_threads", self.intra_op_threads, 0)
        if not self.model_name or not all(c.isalnum() or c in "-_" for c in self.model_name):
            raise ValueError(f"triton option model_name must be letters, digits, '-' or '_', got {self.model_name!r}")
        for name, value, allowed in (("kind", self.kind, KINDS), ("backend", self.backend, RUNTIME_BACKENDS), ("on_overlong", self.on_overlong, ON_OVERLONG)):
            if value not in allowed:
                raise ValueError(f"triton option {name} must be one of {', '.join(allowed)}, got {value!r}")
        if self.precision not in layout.ONNX_DIRS:
            raise ValueError(f"triton option precision must be one of {', '.join(layout.ONNX_DIRS)}, got {self.precision!r}")
        bad = [b for b in self.preferred_batch_sizes if not 1 <= b <= self.max_batch_size]
        if bad:
            raise ValueError(f"triton option preferred_batch_sizes must lie in [1, max_batch_size={self.max_batch_size}], got {bad}")
        if self.preferred_batch_sizes and not self.dynamic_batching:
            raise ValueError("triton option preferred_batch_sizes needs dynamic_batching=True")


@dataclass(frozen=True)
class _Plan:
    kind: str
    backend: str
    graph_dir: str  # export-relative dir the backend loads


def _plan(export_dir: Path, options: TritonOptions, info: Mapping[str, Any]) -> _Plan:
    has_engines = bool(info.get("tensorrt")) or (export_dir / layout.TENSORRT_DIR / f"{layout.ENCODER}.engine").is_file()
    backend = options.backend
    if backend == "auto":
        backend = "tensorrt" if (options.kind == "KIND_GPU" or (options.kind == "auto" and has_engines)) else "onnxruntime"
    kind = options.kind if options.kind != "auto" else ("KIND_GPU" if backend == "tensorrt" else "KIND_CPU")
    if backend == "tensorrt":
        if kind != "KIND_GPU":
            raise ValueError("triton: backend 'tensorrt' needs kind KIND_GPU (or auto)")
        if not has_engines:
            raise ValueError(
                f"{export_dir}: no TensorRT engines in {layout.TENSORRT_DIR}/ for backend 'tensorrt'; build them on the target GPU "
                "(spellfix.export.tensorrt_build.build_engines_for_export) and re-run spellfix.export.triton.write_repository"
            )
        max_rows = ((info.get("tensorrt") or {}).get("axis_ranges") or {}).get("rows", [0, 0, 0])[2]
        if max_rows and options.max_batch_size * options.num_beams > max_rows:
            raise ValueError(
                f"triton: max_batch_size {options.max_batch_size} x num_beams {options.num_beams} exceeds the engines' "
                f"maximum of {max_rows} decoder rows; lower max_batch_size or rebuild the engines with a larger max_batch"
            )
        return _Plan(kind, backend, layout.TENSORRT_DIR)
    if options.precision == "fp16":
        raise ValueError("triton: precision 'fp16' is for TensorRT; ONNX Runtime serves 'fp32' or 'int8'")
    graph_dir = layout.ONNX_DIRS[options.precision]
    missing = [g for g in layout.GRAPHS if not (export_dir / graph_dir / f"{g}.onnx").is_file()]
    if missing:
        fmt = "onnx" if options.precision == "fp32" else "onnx,onnx-int8"
        raise ValueError(f"{export_dir / graph_dir}: missing {', '.join(missing)}; export with --format {fmt},triton")
    return _Plan(kind, backend, graph_dir)


def _pbtxt_string(value: str) -> str:
    return json.dumps(value)  # a JSON string literal is a valid protobuf text-format string


def render_config(options: TritonOptions, plan: _Plan) -> str:
    """config.pbtxt for the ``spellfix`` python-backend model."""
    lines = [
        f"# Written by spellfix.export.triton: {plan.backend} on {plan.kind}. Edit freely (Model Analyzer tunes",
        "# instance_group and dynamic_batching); parameters are read by model.py (spellfix.serving.model_core).",
        f"name: {_pbtxt_string(options.model_name)}",
        'backend: "python"',
        f"max_batch_size: {options.max_batch_size}",
        'input [ { name: "QUERY" data_type: TYPE_STRING dims: [ 1 ] } ]',
        'output [ { name: "CORRECTION" data_type: TYPE_STRING dims: [ 1 ] } ]',
    ]
    if options.dynamic_batching:
        lines.append("dynamic_batching {")
        if options.preferred_batch_sizes:
            lines.append(f"  preferred_batch_size: [ {', '.join(map(str, options.preferred_batch_sizes))} ]")
        lines.append(f"  max_queue_delay_microseconds: {options.max_queue_delay_us}")
        lines.append("}")
    lines.append(f"instance_group [ {{ count: {options.instance_count} kind: {plan.kind} }} ]")
    parameters = {
        "export_dir": RUNTIME_DIR,
        "backend": plan.backend,
        "precision": options.precision,
        "num_beams": str(options.num_beams),
        "on_overlong": options.on_overlong,
        "max_query_bytes": str(options.max_query_bytes),
        "intra_op_threads": str(options.intra_op_threads),
        "thread_spinning": "1" if options.thread_spinning else "0",
    }
    for key, value in parameters.items():
        lines.append(f"parameters {{ key: {_pbtxt_string(key)} value: {{ string_value: {_pbtxt_string(value)} }} }}")
    return "\n".join(lines) + "\n"


def _link_tree(source: Path, target: Path) -> None:
    """Hard-link every file of ``source`` under ``target`` (copy when linking is not possible)."""
    for path in sorted(source.rglob("*")):
        destination = target / path.relative_to(source)
        if path.is_dir():
            destination.mkdir(parents=True, exist_ok=True)
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, destination)
        except OSError:
            shutil.copy2(path, destination)


def _write_runtime_subset(export_dir: Path, runtime: Path, plan: _Plan, info: Mapping[str, Any]) -> None:
    from spellfix.export.manifest import file_table
    from spellfix.fsutil import write_json_atomic

    runtime.mkdir(parents=True)
    for name in _RUNTIME_FILES:
        source = layout.find_file(export_dir, name)
        if source is None:
            raise FileNotFoundError(f"{export_dir}: no {name}; re-run `spellfix export`")
        shutil.copy2(source, runtime / name)
    _link_tree(export_dir / plan.graph_dir, runtime / plan.graph_dir)
    manifest = {
        "format_version": 1,
        "note": f"runtime subset of a spellfix export for the Triton model ({plan.backend}, {plan.graph_dir}/)",
        **{key: info[key] for key in ("source", "versions", "model", "settings", "decoding", "opset", "dynamic_axes") if key in info},
        "formats": [plan.graph_dir],
        "graphs": {k: v for k, v in (info.get("graphs") or {}).items() if k == plan.graph_dir},
    }
    if plan.backend == "tensorrt" and info.get("tensorrt"):
        manifest["tensorrt"] = info["tensorrt"]
    manifest["files"] = file_table(runtime)
    write_json_atomic(runtime / layout.MANIFEST_FILE, manifest)


def _model_file() -> Path:
    """spellfix/serving/triton_model.py (not imported: it needs the stub's triton_python_backend_utils)."""
    import spellfix.serving

    return Path(spellfix.serving.__file__).resolve().parent / "triton_model.py"


def _copy_package(target: Path) -> None:
    import spellfix

    source = Path(spellfix.__file__).resolve().parent
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))


def write_repository(
    export_dir: str | Path,
    repository: str | Path | None = None,
    options: TritonOptions | Mapping[str, Any] | None = None,
    *,
    info: Mapping[str, Any] | None = None,
) -> Path:
    """Write (or replace) a Triton model repository for ``export_dir``; return the repository dir.

    ``repository`` defaults to ``export_dir/triton``. ``info`` is the manifest content (read from
    ``export_dir/manifest.json`` when not given). The repository is written to a temporary sibling
    and renamed into place. Raises ValueError naming the option or file to fix.
    """
    export_dir = Path(export_dir)
    repository = Path(repository) if repository is not None else export_dir / REPOSITORY_DIR
    opts = TritonOptions.from_mapping(options)
    opts.validate()
    if info is None:
        info = layout.read_manifest(export_dir)
    plan = _plan(export_dir, opts, info)
    repository.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=repository.parent, prefix=f".{repository.name}.tmp-"))
    try:
        model_dir = tmp / opts.model_name
        version_dir = model_dir / VERSION
        version_dir.mkdir(parents=True)
        (model_dir / "config.pbtxt").write_text(render_config(opts, plan), encoding="utf-8")
        shutil.copy2(_model_file(), version_dir / "model.py")
        if opts.bundle_package:
            _copy_package(version_dir / "spellfix")
        _write_runtime_subset(export_dir, version_dir / RUNTIME_DIR, plan, info)
        (tmp / "spellfix-triton.json").write_text(
            json.dumps({"options": asdict(opts), "backend": plan.backend, "kind": plan.kind, "graphs": plan.graph_dir}, indent=2) + "\n",
            encoding="utf-8",
        )
        replace_dir(tmp, repository)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return repository


def write_model_repository(export_dir: Path, info: dict[str, Any], options: TritonOptions | Mapping[str, Any] | None = None) -> None:
    """The export pipeline's hook (``spellfix.export.triton_hook``): ``export_dir/triton/``.

    Options come from ``options`` or ``info["triton_options"]`` (what ``export(...,
    triton_options=...)`` passes), else the defaults.
    """
    write_repository(export_dir, export_dir / REPOSITORY_DIR, options if options is not None else info.get("triton_options"), info=info)
