"""Build TensorRT engines from the exported ONNX graphs — on the target GPU, never ahead of time.

Engines are not portable across TensorRT versions or GPU models (STACK.md), so this runs where the
engines will serve: ``spellfix export --format tensorrt`` on the GPU host, or
``build_engines_for_export(EXP)`` to add engines to an export made elsewhere.

One engine per graph (encoder, decoder, decoder_with_past, kv_reorder), each with one optimization
profile over batch rows, source length, first-step length and past length. Precision:
- TensorRT 11.x: networks are always strongly typed; fp16 comes from the ``onnx-fp16/`` graphs
  (fp16 weights, LayerNorm/softmax in fp32 behind explicit Casts).
- TensorRT 10.x: by default the same fp16 graphs with ``BuilderFlag.FP16`` and LayerNorm/softmax
  layers pinned to fp32 (``OBEY_PRECISION_CONSTRAINTS``); ``strongly_typed=True`` builds them as a
  strongly typed network instead, exactly as TensorRT 11 does.
Without ``fp16`` the fp32 graphs are built in fp32 (TF32 allowed by TensorRT's default).

Writes ``tensorrt/<graph>.engine``, ``tensorrt/build.json`` (versions, GPU, profiles, flags, timings)
and ``tensorrt/build.log`` (TensorRT's own log). Fails with ``TensorRTUnavailableError`` and a clear
message when TensorRT or a CUDA GPU is missing.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from pathlib import Path
from typing import Any

import onnx

from spellfix.inference import layout

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "install TensorRT on the GPU host (`pip install 'spellfix[tensorrt]'`, which pulls NVIDIA's `tensorrt` "
    "wheels from pypi.nvidia.com) and build the engines there: engines are specific to the GPU model and "
    "TensorRT version"
)


class TensorRTUnavailableError(RuntimeError):
    """TensorRT or a CUDA GPU is not available on this machine."""


def require_tensorrt() -> Any:
    """Import ``tensorrt`` or raise TensorRTUnavailableError saying what to install where."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise TensorRTUnavailableError(f"TensorRT is not installed ({exc}); {INSTALL_HINT}") from None
    if not hasattr(trt, "Builder"):  # the PyPI `tensorrt` stub that failed to fetch the real wheel
        raise TensorRTUnavailableError(f"the installed `tensorrt` package is an empty stub; {INSTALL_HINT}")
    return trt


def gpu_name() -> str:
    """Name of CUDA device 0, or TensorRTUnavailableError when there is no usable GPU."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            if pynvml.nvmlDeviceGetCount() < 1:
                raise TensorRTUnavailableError("no CUDA GPU visible (NVML reports 0 devices); TensorRT engines must be built on the target GPU")
            name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(0))
            return name.decode() if isinstance(name, bytes) else str(name)
        finally:
            pynvml.nvmlShutdown()
    except TensorRTUnavailableError:
        raise
    except Exception as exc:  # NVMLError_LibraryNotFound / DriverNotLoaded / ImportError
        raise TensorRTUnavailableError(
            f"no CUDA GPU/driver available ({type(exc).__name__}: {exc}); TensorRT engines must be built on the target GPU"
        ) from None


def major_version(trt: Any) -> int:
    return int(str(trt.__version__).split(".")[0])


def profile_ranges(max_batch: int, max_source_length: int, max_new_tokens: int, opt_batch: int = 1) -> dict[str, tuple[int, int, int]]:
    """(min, opt, max) per named dynamic axis of the exported graphs (see onnx_graphs.DYNAMIC_AXES).

    ``opt`` is the shape TensorRT tunes its kernels for: batch 1 and a short query (latency case).
    """
    if max_batch < 1 or max_source_length < 3 or max_new_tokens < 1:
        raise ValueError(f"invalid profile bounds: max_batch={max_batch}, max_source_length={max_source_length}, max_new_tokens={max_new_tokens}")
    opt_batch = min(max(1, opt_batch), max_batch)
    return {
        "batch": (1, opt_batch, max_batch),
        "rows": (1, opt_batch, max_batch),
        "src_len": (1, min(16, max_source_length), max_source_length),
        "tgt_len": (1, 1, max_new_tokens),
        "past_len": (1, min(8, max_new_tokens), max_new_tokens),
    }


def input_shape_ranges(onnx_path: Path, ranges: dict[str, tuple[int, int, int]]) -> dict[str, tuple[tuple[int, ...], ...]]:
    """min/opt/max shape per graph input: named axes from ``ranges``, fixed axes as exported."""
    proto = onnx.load(str(onnx_path), load_external_data=False)
    shapes: dict[str, tuple[tuple[int, ...], ...]] = {}
    for value in proto.graph.input:
        lo, opt, hi = [], [], []
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param:
                if dim.dim_param not in ranges:
                    raise ValueError(f"{onnx_path}: input {value.name} has an axis {dim.dim_param!r} with no profile range")
                a, b, c = ranges[dim.dim_param]
            else:
                a = b = c = dim.dim_value
            lo.append(a)
            opt.append(b)
            hi.append(c)
        shapes[value.name] = (tuple(lo), tuple(opt), tuple(hi))
    return shapes


class _CollectingLogger:
    """A TensorRT ILogger that keeps every message for build.log (and forwards warnings to logging)."""

    def __new__(cls, trt: Any) -> Any:
        class Logger(trt.ILogger):
            def __init__(self) -> None:
                trt.ILogger.__init__(self)
                self.lines: list[str] = []

            def log(self, severity: Any, msg: str) -> None:
                self.lines.append(f"[{str(severity).split('.')[-1]}] {msg}")
                if severity in (trt.ILogger.Severity.ERROR, trt.ILogger.Severity.INTERNAL_ERROR):
                    log.error("TensorRT: %s", msg)

        return Logger()


def _pin_fp32(trt: Any, network: Any) -> int:
    """TensorRT 10 weak typing: keep normalization and softmax layers (and their outputs) in fp32."""
    pinned = 0
    sensitive = {trt.LayerType.NORMALIZATION, trt.LayerType.SOFTMAX}
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        if layer.type in sensitive:
            layer.precision = trt.float32
            for out in range(layer.num_outputs):
                layer.set_output_type(out, trt.float32)
            pinned += 1
    return pinned


def build_engine(
    trt: Any,
    onnx_path: Path,
    engine_path: Path,
    shapes: dict[str, tuple[tuple[int, ...], ...]],
    *,
    fp16: bool,
    strongly_typed: bool,
    workspace_bytes: int,
    logger: Any,
) -> dict[str, Any]:
    """Parse one ONNX graph and build one engine; return what was done (for build.json)."""
    major = major_version(trt)
    builder = trt.Builder(logger)
    if builder is None:
        raise TensorRTUnavailableError("trt.Builder could not be created (no usable CUDA device?); build on the target GPU")
    flags = 0
    if major < 11 and strongly_typed:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):  # handles external weights next to the file
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise RuntimeError(f"{onnx_path}: TensorRT's ONNX parser failed: " + "; ".join(errors))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    pinned = 0
    if fp16 and major < 11 and not strongly_typed:
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        pinned = _pin_fp32(trt, network)
    profile = builder.create_optimization_profile()
    for index in range(network.num_inputs):
        name = network.get_input(index).name
        profile.set_shape(name, *shapes[name])
    config.add_optimization_profile(profile)
    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"{onnx_path}: TensorRT failed to build an engine (see build.log)")
    engine_path.write_bytes(bytes(serialized))
    return {
        "onnx": onnx_path.name,
        "engine": engine_path.name,
        "build_seconds": round(time.perf_counter() - start, 1),
        "strongly_typed": major >= 11 or strongly_typed,
        "fp16_flag": bool(fp16 and major < 11 and not strongly_typed),
        "layers_pinned_fp32": pinned,
        "profile": {name: {"min": list(s[0]), "opt": list(s[1]), "max": list(s[2])} for name, s in shapes.items()},
    }


def build_engines(
    onnx_dir: Path,
    out_dir: Path,
    *,
    fp16: bool,
    max_source_length: int,
    max_new_tokens: int,
    max_batch: int = 128,
    opt_batch: int = 1,
    workspace_gb: float = 4.0,
    strongly_typed: bool = False,
) -> dict[str, Any]:
    """Build all engines from ``onnx_dir`` into ``out_dir``; return the build record (also build.json).

    ``max_batch`` bounds decoder rows = queries per batch x beams (e.g. 32 x 4 = 128).
    """
    trt = require_tensorrt()
    device = gpu_name()
    major = major_version(trt)
    if fp16 and major < 11 and not strongly_typed and not hasattr(trt.BuilderFlag, "FP16"):
        raise TensorRTUnavailableError(f"TensorRT {trt.__version__} has no BuilderFlag.FP16; use strongly_typed=True")
    out_dir.mkdir(parents=True, exist_ok=True)
    logger = _CollectingLogger(trt)
    ranges = profile_ranges(max_batch, max_source_length, max_new_tokens, opt_batch)
    record: dict[str, Any] = {
        "tensorrt_version": str(trt.__version__),
        "gpu": device,
        "host": platform.node(),
        "source_graphs": onnx_dir.name,
        "fp16": fp16,
        "axis_ranges": {k: list(v) for k, v in ranges.items()},
        "engines": {},
        "command": (
            f"python -c \"from spellfix.export.tensorrt_build import build_engines_for_export as b; "
            f"b('EXPORT_DIR', fp16={fp16}, max_batch={max_batch}, strongly_typed={strongly_typed})\""
        ),
    }
    try:
        for graph in layout.GRAPHS:
            onnx_path = onnx_dir / f"{graph}.onnx"
            shapes = input_shape_ranges(onnx_path, ranges)
            log.info("building TensorRT engine for %s", graph)
            record["engines"][graph] = build_engine(
                trt,
                onnx_path,
                out_dir / f"{graph}.engine",
                shapes,
                fp16=fp16,
                strongly_typed=strongly_typed,
                workspace_bytes=int(workspace_gb * (1 << 30)),
                logger=logger,
            )
    finally:
        (out_dir / "build.log").write_text("\n".join(logger.lines) + "\n", encoding="utf-8")
    (out_dir / "build.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record


def build_engines_for_export(export_dir: str | Path, *, fp16: bool = True, **options: Any) -> dict[str, Any]:
    """Add ``tensorrt/`` engines to an existing export dir (made on another machine) and update its manifest."""
    from spellfix.export.manifest import file_table
    from spellfix.fsutil import write_json_atomic

    export_dir = Path(export_dir)
    manifest = layout.read_manifest(export_dir)
    source = export_dir / layout.ONNX_DIRS["fp16" if fp16 else "fp32"]
    if not source.is_dir():
        fmt = "onnx-fp16" if fp16 else "onnx"
        raise FileNotFoundError(f"{source}: not in the export; re-export with --format {fmt}")
    settings = layout.read_input_settings(export_dir)
    record = build_engines(
        source,
        export_dir / layout.TENSORRT_DIR,
        fp16=fp16,
        max_source_length=settings.max_source_length,
        max_new_tokens=settings.max_new_tokens,
        **options,
    )
    manifest["tensorrt"] = record
    if "tensorrt" not in manifest.get("formats", []):
        manifest.setdefault("formats", []).append("tensorrt")
    manifest["files"] = file_table(export_dir)
    write_json_atomic(export_dir / layout.MANIFEST_FILE, manifest)
    return record
