"""Lower-precision variants of the exported fp32 graphs: fp16 for TensorRT, int8 for ONNX Runtime.

fp16 (``onnx-fp16/``): weights and activations in fp16 with every initializer clamped to the fp16
range (±65504; tiny magnitudes to the smallest subnormal instead of 0), while LayerNormalization and
Softmax run in fp32 behind explicit Casts — the recipe of NVIDIA's BART TensorRT demo. Explicit casts
make the graph valid as a *strongly typed* TensorRT network (TensorRT 11, or 10 with the
STRONGLY_TYPED flag), and TensorRT 10 with ``BuilderFlag.FP16`` keeps the fp32 islands when the
builder is told to obey precision constraints. ``logits`` stay fp32 (beam search takes log-softmax
on the host). The conversion is onnxruntime's ``transformers.float16`` tool.

int8 (``onnx-int8/``): ``onnxruntime.quantization.quantize_dynamic`` — weights int8 per output
channel, activations quantized on the fly. It needs the separate decoder graphs (it skips the
If-subgraphs of a merged decoder — STACK.md) and MatMul weights as plain initializers (the export
constant-folds the transposed LM head for that reason), so the LM head is quantized too.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import onnx

from spellfix.export.onnx_graphs import check_model, quiet_logger, save_model
from spellfix.inference import layout

log = logging.getLogger(__name__)

#: op types kept in fp32 inside the fp16 graphs (numerically sensitive reductions)
FP32_OPS = ("LayerNormalization", "Softmax")
#: graphs whose float outputs stay fp32 in the fp16 variant
FP32_OUTPUTS = ("logits",)


def convert_to_fp16(src_dir: Path, dst_dir: Path) -> dict[str, Path]:
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    dst_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for graph in layout.GRAPHS:
        model = onnx.load(str(src_dir / f"{graph}.onnx"))
        outputs = {o.name for o in model.graph.output}
        keep = [name for name in FP32_OUTPUTS if name in outputs]
        converted = convert_float_to_float16(
            model,
            keep_io_types=keep or False,
            op_block_list=[*DEFAULT_OP_BLOCK_LIST, *FP32_OPS],
            min_positive_val=5.96e-08,
            max_finite_val=65504.0,
        )
        path = dst_dir / f"{graph}.onnx"
        save_model(_topologically_sorted(converted), path)
        check_model(path)
        paths[graph] = path
    return paths


def _topologically_sorted(model: onnx.ModelProto) -> onnx.ModelProto:
    """The fp16 converter appends its Casts at the end of the node list (ONNX wants producers first)
    and leaves fp32 annotations on values that became fp16: sort, and drop the stale annotations."""
    import onnx_ir as ir

    del model.graph.value_info[:]
    ir_model = ir.serde.deserialize_model(model)
    ir_model.graph.sort()
    return ir.serde.serialize_model(ir_model)


def quantize_int8(src_dir: Path, dst_dir: Path, *, per_channel: bool = True) -> dict[str, Path]:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    dst_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for graph in layout.GRAPHS:
        src, dst = src_dir / f"{graph}.onnx", dst_dir / f"{graph}.onnx"
        if graph == layout.KV_REORDER:  # a gather: nothing to quantize
            shutil.copyfile(src, dst)
        else:
            with quiet_logger(""):  # the quantizer logs every tensor (and a pre-processing hint) on the root logger
                quantize_dynamic(
                    str(src),
                    str(dst),
                    weight_type=QuantType.QInt8,
                    per_channel=per_channel,
                    op_types_to_quantize=["MatMul"],
                    use_external_data_format=src.with_name(src.name + ".data").exists(),
                    extra_options={"MatMulConstBOnly": True},
                )
        check_model(dst)
        paths[graph] = dst
    return paths
