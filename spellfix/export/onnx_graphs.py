"""Export the four inference graphs to ONNX: trace, constant-fold, check.

``torch.onnx.export`` (the dynamo exporter) over the small modules of
``spellfix.inference.torch_graphs`` — optimum-onnx does not support transformers 5 (STACK.md).
Dynamic axes: batch, source length, target length (first step) and past length; opset >= 17 so
LayerNorm stays one ``LayerNormalization`` op (TensorRT keeps it in fp32 as one layer).

After tracing, constants are folded with onnxscript's optimizer (the exporter's own toolkit) with
the size limits lifted, so e.g. the transposed LM-head weight becomes a plain initializer — which
``quantize_dynamic`` needs to quantize it — then the file is checked with ``onnx.checker`` and
strict shape inference.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
import torch

from spellfix.export import MIN_OPSET
from spellfix.inference import layout
from spellfix.inference.torch_graphs import (
    DecoderGraph,
    DecoderWithPastGraph,
    EncoderGraph,
    KvReorderGraph,
    io_names,
)

log = logging.getLogger(__name__)

#: protobuf cannot hold a single file over 2 GB; bigger graphs keep weights in ``<name>.onnx.data``
EXTERNAL_DATA_BYTES = 1_800_000_000

#: symbolic dimension names in every exported graph (also written to the manifest)
DYNAMIC_AXES = {
    "batch": "rows in the batch (queries x beams)",
    "src_len": "source length in tokens, <s> and </s> included",
    "tgt_len": "decoder input length of the first step (1 when decoding)",
    "past_len": "decoder tokens already in the self-attention cache",
    "rows": "rows selected by kv_reorder",
}

_GRAPH_DIMS = ("batch", "src_len", "tgt_len", "past_len", "rows")


@dataclass
class _Traced:
    module: torch.nn.Module
    args: tuple[Any, ...]
    dynamic_shapes: tuple[Any, ...]
    input_names: list[str]
    output_names: list[str]


def _example_inputs(model: torch.nn.Module) -> dict[str, _Traced]:
    """Example tensors with distinct sizes per dynamic axis (2, 5, 3, 4, 6), so the tracer cannot
    confuse two axes or specialise one to a constant."""
    from torch.export import Dim

    cfg = model.config
    layers = cfg.decoder_layers
    names = io_names(layers)
    batch, src, tgt, past, rows = (Dim(n) for n in _GRAPH_DIMS)
    b, s, t, p, r = 2, 5, 3, 4, 6
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, cfg.vocab_size, (b, s), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, -1] = 0
    encoder = EncoderGraph(model).eval()
    decoder = DecoderGraph(model).eval()
    with torch.no_grad():
        hidden = encoder(ids, mask)
        first = decoder(torch.randint(3, cfg.vocab_size, (b, p), generator=gen), hidden, mask)
    self_kv, cross_kv = list(first[1 : 1 + 2 * layers]), list(first[1 + 2 * layers :])
    self_shape = {0: batch, 2: past}
    cross_shape = {0: batch, 2: src}
    return {
        layout.ENCODER: _Traced(
            encoder, (ids, mask), ({0: batch, 1: src}, {0: batch, 1: src}), names["encoder_inputs"], names["encoder_outputs"]
        ),
        layout.DECODER: _Traced(
            decoder,
            (torch.randint(3, cfg.vocab_size, (b, t), generator=gen), hidden, mask),
            ({0: batch, 1: tgt}, {0: batch, 1: src}, {0: batch, 1: src}),
            names["decoder_inputs"],
            names["decoder_outputs"],
        ),
        layout.DECODER_WITH_PAST: _Traced(
            DecoderWithPastGraph(model).eval(),
            (torch.randint(3, cfg.vocab_size, (b, 1), generator=gen), mask, *self_kv, *cross_kv),
            ({0: batch}, {0: batch, 1: src}, tuple([self_shape] * len(self_kv) + [cross_shape] * len(cross_kv))),
            names["decoder_with_past_inputs"],
            names["decoder_with_past_outputs"],
        ),
        layout.KV_REORDER: _Traced(
            KvReorderGraph().eval(),
            (torch.tensor([1, 0, 1, 1, 0, 0][:r]), *self_kv, *cross_kv),
            ({0: rows}, tuple([self_shape] * len(self_kv) + [cross_shape] * len(cross_kv))),
            names["kv_reorder_inputs"],
            names["kv_reorder_outputs"],
        ),
    }


@contextlib.contextmanager
def quiet_logger(logger_name: str) -> Any:
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def fold_constants(model_proto: onnx.ModelProto) -> onnx.ModelProto:
    """Fold every constant subgraph, whatever its size (the default limits skip big weights)."""
    import onnxscript.optimizer

    with quiet_logger("onnx_ir"), quiet_logger("onnxscript"):  # per-pass progress lines
        return onnxscript.optimizer.optimize(model_proto, input_size_limit=1 << 40, output_size_limit=1 << 40)


def save_model(model_proto: onnx.ModelProto, path: Path) -> None:
    """Save, with weights in ``<name>.data`` when the graph is too big for one protobuf."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if model_proto.ByteSize() > EXTERNAL_DATA_BYTES:
        onnx.save_model(model_proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=path.name + ".data")
    else:
        onnx.save_model(model_proto, str(path))


def check_model(path: Path) -> None:
    """onnx.checker (full) + strict shape inference; raises with the graph file named."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
        inferred = path.with_name(path.name + ".inferred.tmp")
        try:
            onnx.shape_inference.infer_shapes_path(str(path), str(inferred), check_type=True, strict_mode=True, data_prop=True)
        finally:
            inferred.unlink(missing_ok=True)
    except Exception as exc:  # checker/inference raise several exception types
        raise RuntimeError(f"{path}: exported graph failed the ONNX checks: {exc}") from exc


def export_onnx_graphs(model: torch.nn.Module, out_dir: Path, *, opset: int = MIN_OPSET) -> dict[str, Path]:
    """Write encoder/decoder/decoder_with_past/kv_reorder ``.onnx`` into ``out_dir``; return their paths."""
    if opset < MIN_OPSET:
        raise ValueError(f"opset must be >= {MIN_OPSET} (LayerNormalization as one op), got {opset}")
    model = model.eval().float()
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for graph, traced in _example_inputs(model).items():
        log.info("exporting %s.onnx", graph)
        with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), quiet_logger("torch.onnx"):
            warnings.simplefilter("ignore")  # the exporter's progress and opset-conversion chatter
            program = torch.onnx.export(
                traced.module,
                traced.args,
                None,
                input_names=traced.input_names,
                output_names=traced.output_names,
                dynamic_shapes=traced.dynamic_shapes,
                opset_version=opset,
                dynamo=True,
                verbose=False,
            )
        proto = fold_constants(program.model_proto)
        path = out_dir / f"{graph}.onnx"
        save_model(proto, path)
        check_model(path)
        paths[graph] = path
    return paths


def describe_io(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Names, dtypes and shapes (ints or axis names) of a graph's inputs and outputs, for the manifest."""
    proto = onnx.load(str(path), load_external_data=False)

    def describe(values: Any) -> list[dict[str, Any]]:
        out = []
        for value in values:
            tensor_type = value.type.tensor_type
            shape = [d.dim_param if d.dim_param else d.dim_value for d in tensor_type.shape.dim]
            out.append({"name": value.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name, "shape": shape})
        return out

    return {"inputs": describe(proto.graph.input), "outputs": describe(proto.graph.output)}
