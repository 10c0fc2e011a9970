"""The export steps in order: formats -> files -> parity -> manifest -> atomic rename."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

from spellfix.export import FORMATS, MIN_OPSET
from spellfix.fsutil import replace_dir
from spellfix.inference import layout

log = logging.getLogger(__name__)

#: cap on generated tokens in the greedy parity check (random-weight models never emit eos)
PARITY_MAX_NEW_TOKENS = 24


def resolve_formats(formats: Sequence[str] | str, fp16: bool) -> list[str]:
    """Validate and complete the format list: int8/fp16 graphs derive from the fp32 ones, and
    TensorRT engines from the fp16 (``fp16=True``) or fp32 graphs."""
    if isinstance(formats, str):
        formats = [f.strip() for f in formats.split(",") if f.strip()]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ValueError(f"unknown export format(s) {unknown or formats!r}; choose from {', '.join(FORMATS)}")
    wanted = set(formats)
    if fp16:
        wanted.add("onnx-fp16")
    if "tensorrt" in wanted:
        wanted.add("onnx-fp16" if fp16 else "onnx")
    if wanted & {"onnx-int8", "onnx-fp16", "triton"}:
        wanted.add("onnx")
    return [f for f in FORMATS if f in wanted]


def _check_output(output: Path) -> None:
    if output.exists() and not output.is_dir():
        raise FileExistsError(f"{output}: exists and is not a directory")
    if output.is_dir() and any(output.iterdir()) and not layout.is_export_dir(output):
        raise FileExistsError(f"{output}: exists, is not empty and is not a spellfix export dir; choose another --output")


def _source_settings(model_dir: Path | str) -> dict[str, Any]:
    from spellfix.modeling import input_settings

    path = Path(model_dir) / layout.SETTINGS_FILE
    if Path(model_dir).is_dir() and path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    log.warning("%s: no %s; exporting with default input settings", model_dir, layout.SETTINGS_FILE)
    return input_settings(layout.DEFAULT_MAX_SOURCE_LENGTH, None)


def _write_runtime_files(model: Any, tokenizer: Any, root: Path, settings: dict[str, Any]) -> None:
    """tokenizer.json, spellfix.json and generation_config.json at the export root: all a lean runtime reads."""
    tokenizer.backend_tokenizer.save(str(root / layout.TOKENIZER_FILE))
    (root / layout.SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
    model.generation_config.to_json_file(str(root / layout.GENERATION_CONFIG_FILE))


def _model_info(model: Any) -> dict[str, Any]:
    cfg = model.config
    return {
        "architecture": type(model).__name__,
        "model_type": cfg.model_type,
        "d_model": cfg.d_model,
        "encoder_layers": cfg.encoder_layers,
        "decoder_layers": cfg.decoder_layers,
        "attention_heads": cfg.decoder_attention_heads,
        "head_dim": cfg.d_model // cfg.decoder_attention_heads,
        "vocab_size": cfg.vocab_size,
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def run_export(
    model_path: str | Path,
    output: str | Path,
    formats: Sequence[str] | str,
    *,
    fp16: bool,
    opset: int,
    sample_queries: Sequence[str] | None,
    logits_atol: float | None,
    tensorrt_options: dict[str, Any] | None,
    triton_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    wanted = resolve_formats(formats, fp16)
    if opset < MIN_OPSET:
        raise ValueError(f"opset must be >= {MIN_OPSET} (LayerNormalization as one op), got {opset}")
    if "tensorrt" in wanted:
        from spellfix.export.tensorrt_build import require_tensorrt

        require_tensorrt()  # fail before minutes of export work
    if "triton" in wanted:
        from spellfix.export.triton_hook import require_triton_writer

        require_triton_writer()
    output = Path(output)
    _check_output(output)
    # heavy imports only once the request is known to be valid
    from spellfix.export.onnx_graphs import DYNAMIC_AXES, describe_io, export_onnx_graphs
    from spellfix.export.parity import DEFAULT_SAMPLE_QUERIES, check_parity
    from spellfix.inference.tokenization import QueryTokenizer
    from spellfix.modeling import load_pretrained, resolve_model_dir, save_model_dir

    model_dir = resolve_model_dir(model_path)
    model, tokenizer = load_pretrained(model_dir)
    model = model.eval().float()
    settings = _source_settings(model_dir)

    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}.tmp-"))
    try:
        if "hf" in wanted:
            save_model_dir(model, tokenizer, tmp / layout.HF_DIR, settings=settings)
        _write_runtime_files(model, tokenizer, tmp, settings)
        runtime_settings = layout.read_input_settings(tmp)
        query_tokenizer = QueryTokenizer(
            tmp / layout.TOKENIZER_FILE,
            max_source_length=runtime_settings.max_source_length,
            bos_token_id=runtime_settings.bos_token_id,
            eos_token_id=runtime_settings.eos_token_id,
            pad_token_id=runtime_settings.pad_token_id,
        )
        queries = list(sample_queries or DEFAULT_SAMPLE_QUERIES)
        parity_args = {
            "queries": queries,
            "decoder_start_token_id": runtime_settings.decoder_start_token_id,
            "max_new_tokens": min(runtime_settings.max_new_tokens, PARITY_MAX_NEW_TOKENS),
        }
        graphs: dict[str, dict[str, Any]] = {}
        parity: dict[str, Any] = {}
        trt_info: dict[str, Any] | None = None

        if "onnx" in wanted:
            fp32_dir = tmp / layout.ONNX_DIRS["fp32"]
            export_onnx_graphs(model, fp32_dir, opset=opset)
            from spellfix.export.shortlist import build_shortlist_graph

            build_shortlist_graph(fp32_dir / f"{layout.DECODER_WITH_PAST}.onnx", fp32_dir / f"{layout.DECODER_WITH_PAST_SHORTLIST}.onnx")
            parity["onnx"] = check_parity(model, query_tokenizer, fp32_dir, precision="fp32", logits_atol=logits_atol, **parity_args)
            log.info("onnx parity: %s", parity["onnx"])
        if "onnx-int8" in wanted:
            from spellfix.export.precision import quantize_int8

            int8_dir = tmp / layout.ONNX_DIRS["int8"]
            quantize_int8(tmp / layout.ONNX_DIRS["fp32"], int8_dir)
            from spellfix.export.shortlist import build_topk_graph

            build_topk_graph(int8_dir / f"{layout.DECODER_WITH_PAST}.onnx", int8_dir / f"{layout.DECODER_WITH_PAST_SHORTLIST}.onnx")
            parity["onnx-int8"] = check_parity(model, query_tokenizer, int8_dir, precision="int8", **parity_args)
        if "onnx-fp16" in wanted:
            from spellfix.export.precision import convert_to_fp16

            fp16_dir = tmp / layout.ONNX_DIRS["fp16"]
            convert_to_fp16(tmp / layout.ONNX_DIRS["fp32"], fp16_dir)
            parity["onnx-fp16"] = check_parity(model, query_tokenizer, fp16_dir, precision="fp16", **parity_args)
        for fmt in ("onnx", "onnx-int8", "onnx-fp16"):
            if fmt in wanted:
                directory = tmp / fmt
                names = [*layout.GRAPHS, layout.DECODER_WITH_PAST_SHORTLIST]
                graphs[fmt] = {g: {"file": f"{fmt}/{g}.onnx", **describe_io(directory / f"{g}.onnx")} for g in names if (directory / f"{g}.onnx").is_file()}
        if "tensorrt" in wanted:
            from spellfix.export.tensorrt_build import build_engines

            source_dir = tmp / (layout.ONNX_DIRS["fp16"] if fp16 else layout.ONNX_DIRS["fp32"])
            trt_info = build_engines(
                source_dir,
                tmp / layout.TENSORRT_DIR,
                fp16=fp16,
                max_source_length=runtime_settings.max_source_length,
                max_new_tokens=runtime_settings.max_new_tokens,
                **(tensorrt_options or {}),
            )
        manifest_args = {
            "source": str(model_path),
            "model_info": _model_info(model),
            "settings": settings,
            "decoding": {
                "decoder_start_token_id": runtime_settings.decoder_start_token_id,
                "bos_token_id": runtime_settings.bos_token_id,
                "eos_token_id": runtime_settings.eos_token_id,
                "pad_token_id": runtime_settings.pad_token_id,
                "max_new_tokens": runtime_settings.max_new_tokens,
            },
            "formats": wanted,
            "graphs": graphs,
            "dynamic_axes": DYNAMIC_AXES if graphs else {},
            "opset": opset if graphs else None,
            "parity": parity,
            "tensorrt": trt_info,
        }
        if "triton" in wanted:
            from spellfix.export.triton_hook import write_triton

            write_triton(tmp, {**manifest_args, "triton_options": triton_options})
        from spellfix.export.manifest import build_manifest
        from spellfix.fsutil import write_json_atomic

        manifest = build_manifest(tmp, **manifest_args)
        write_json_atomic(tmp / layout.MANIFEST_FILE, manifest)
        replace_dir(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("exported %s -> %s (%s)", model_path, output, ", ".join(wanted))
    return manifest
