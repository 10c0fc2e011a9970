"""``spellfix export``: a trained model -> a self-contained export dir (DESIGN.md, Export layout).

    from spellfix.export import export
    manifest = export("runs/qs", "exp/", formats=["hf", "onnx", "onnx-int8"])

Formats: ``hf`` (safetensors + tokenizer + generation config), ``onnx`` (fp32 graphs, parity-checked
against PyTorch), ``onnx-int8`` (dynamically quantized graphs for ONNX Runtime on CPU), ``onnx-fp16``
(graphs prepared for TensorRT fp16; also added by ``fp16=True``), ``tensorrt`` (engines — needs
TensorRT and a GPU, built on the target), ``triton`` (model repository; provided by
``spellfix.export.triton`` when installed). Heavy imports (torch, onnx) happen inside the call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

FORMATS = ("hf", "onnx", "onnx-int8", "onnx-fp16", "tensorrt", "triton")
MIN_OPSET = 17  # LayerNormalization is one ONNX op from opset 17 on


def export(
    model: str | Path,
    output: str | Path,
    formats: Sequence[str] = ("hf", "onnx"),
    *,
    fp16: bool = False,
    opset: int = 17,
    sample_queries: Sequence[str] | None = None,
    logits_atol: float | None = None,
    tensorrt_options: dict[str, Any] | None = None,
    triton_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Export ``model`` (training dir, checkpoint, export dir or hub id) into ``output``; return the manifest.

    The export is written to a temporary sibling dir and renamed into place only when every format
    was written and every parity check passed, so ``output`` never holds a half or failed export.
    Raises ``spellfix.export.parity.ParityError`` when a graph disagrees with PyTorch beyond the
    tolerance, ``spellfix.export.tensorrt_build.TensorRTUnavailableError`` when ``tensorrt`` is asked
    for on a machine without TensorRT or a GPU. ``triton_options`` are the Triton repository's
    settings (``spellfix.export.triton.TritonOptions`` fields: max_batch_size, instance_count, kind,
    max_queue_delay_us, ...).
    """
    from spellfix.export.pipeline import run_export

    return run_export(
        model,
        output,
        formats,
        fp16=fp16,
        opset=opset,
        sample_queries=sample_queries,
        logits_atol=logits_atol,
        tensorrt_options=tensorrt_options,
        triton_options=triton_options,
    )


__all__ = ["FORMATS", "MIN_OPSET", "export"]
