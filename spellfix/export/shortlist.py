"""An exact greedy LM head that reads a quarter of the bytes: int8 shortlist + fp32 rescoring.

At batch 1 a decoding step is memory-bound, and the LM head (vocab x d_model fp32: 154 MB for
bart-base) is ~44% of the weights each step streams. Greedy decoding only needs the argmax, so
``decoder_with_past_shortlist.onnx`` replaces the fp32 head with:

1. approximate logits from an int8 copy of the head (7-bit symmetric weights per vocab entry,
   activations quantized on the fly: ``DynamicQuantizeLinear`` + ``MatMulInteger``, which ONNX
   Runtime fuses into one int8 GEMV);
2. a *proven* bound on each approximation error, from the quantization steps:
   ``|l_j - l~_j| <= (t/2)*||w_j||_1 + (s_j/2 + slack_j)*(||h||_1 + D*t/2)`` with ``t`` the activation
   step, ``s_j`` the weight step of entry j (7-bit weights: no int16 saturation on CPUs without VNNI,
   so the integer product is exact everywhere);
3. the ``K`` entries with the highest upper bound (``TopK``), their *exact* fp32 logits (their rows
   of the fp32 weight — the tied embedding, so no extra memory), and the (K+1)-th upper bound as
   a threshold no other entry can exceed.

The runtime accepts a row when its best exact candidate logit (after masking the one token greedy
may suppress, ``eos`` under ``min_new_tokens``) beats the threshold: then no token outside the
shortlist can be larger, so greedy's argmax is exactly the fp32 argmax. Otherwise (a near-tie within
the bound) it reruns the step with the full fp32 graph.
Beam search needs every log-probability and always uses ``decoder_with_past.onnx``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from spellfix.export.onnx_graphs import check_model, save_model

log = logging.getLogger(__name__)

DEFAULT_K = 32
WEIGHT_LEVELS = 63  # 7-bit symmetric: u8 x s7 pair sums fit int16, so no saturation on AVX2 either
#: fp32 rounding allowance relative to |h|_1 * max|w_j| (fp32 dot products of length 768-4096 err far less)
FP32_SLACK = 2.0**-12


def _find_lm_head(graph: onnx.GraphProto, inits: dict[str, onnx.TensorProto]) -> tuple[onnx.NodeProto, onnx.NodeProto | None, str, str, str | None]:
    """(matmul node, bias-add node or None, hidden tensor name, weight (D, V) name, bias name or None)."""
    producers = {out: node for node in graph.node for out in node.output}
    node = producers.get("logits")
    add, bias = None, None
    if node is not None and node.op_type == "Add":
        const = [i for i in node.input if i in inits]
        other = [i for i in node.input if i not in inits]
        if len(const) == 1 and len(other) == 1:
            add, bias, node = node, const[0], producers.get(other[0])
    if node is None or node.op_type != "MatMul" or node.input[1] not in inits:
        raise ValueError("decoder_with_past.onnx: cannot find the LM head (MatMul with a constant weight feeding 'logits')")
    return node, add, node.input[0], node.input[1], bias


def build_shortlist_graph(src: Path, dst: Path, *, k: int = DEFAULT_K) -> Path:
    model = onnx.load(str(src))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    matmul, add, hidden, weight_name, bias_name = _find_lm_head(graph, inits)
    weight = numpy_helper.to_array(inits[weight_name]).astype(np.float32)  # (D, V)
    d_model, vocab = weight.shape
    if k + 1 > vocab:
        raise ValueError(f"shortlist k={k} must be smaller than the vocabulary ({vocab})")
    bias = numpy_helper.to_array(inits[bias_name]).reshape(-1).astype(np.float32) if bias_name else np.zeros(vocab, np.float32)

    # fp32 rows for the exact rescoring: reuse the tied embedding when it holds the same values
    rows_name = next(
        (
            name
            for name, init in inits.items()
            if list(init.dims) == [vocab, d_model] and init.data_type == TensorProto.FLOAT and np.array_equal(numpy_helper.to_array(init), weight.T)
        ),
        None,
    )
    new_inits = []
    if rows_name is None:
        rows_name = "shortlist.weight_rows"
        new_inits.append(numpy_helper.from_array(np.ascontiguousarray(weight.T), rows_name))

    wmax = np.abs(weight).max(axis=0).astype(np.float32)  # per vocab entry
    step = np.where(wmax > 0, wmax / WEIGHT_LEVELS, 1.0).astype(np.float32)  # an all-zero entry (padding) is exact
    quantized = np.clip(np.rint(weight / step), -WEIGHT_LEVELS, WEIGHT_LEVELS).astype(np.int8)
    weight_l1 = np.abs(weight).sum(axis=0).astype(np.float32)
    coef = np.where(wmax > 0, step / 2 + FP32_SLACK * wmax, 0.0).astype(np.float32)
    new_inits += [
        numpy_helper.from_array(quantized, "shortlist.weight_q"),
        numpy_helper.from_array(np.zeros(vocab, np.int8), "shortlist.weight_zero"),
        numpy_helper.from_array(step, "shortlist.weight_step"),
        numpy_helper.from_array((weight_l1 / 2).astype(np.float32), "shortlist.half_weight_l1"),
        numpy_helper.from_array(coef, "shortlist.coef"),
        numpy_helper.from_array(bias, "shortlist.bias"),
        numpy_helper.from_array(np.array(d_model / 2, np.float32), "shortlist.half_d"),
        numpy_helper.from_array(np.array([k + 1], np.int64), "shortlist.k1"),
        numpy_helper.from_array(np.array([0], np.int64), "shortlist.zero"),
        numpy_helper.from_array(np.array([k], np.int64), "shortlist.k"),
        numpy_helper.from_array(np.array([k + 1], np.int64), "shortlist.k_end"),
        numpy_helper.from_array(np.array([-1], np.int64), "shortlist.last_axis"),
    ]
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset >= 18:
        reduce_l1 = helper.make_node("ReduceL1", [hidden, "shortlist.last_axis"], ["sl.h_l1"], keepdims=1)
    else:
        reduce_l1 = helper.make_node("ReduceL1", [hidden], ["sl.h_l1"], axes=[-1], keepdims=1)
    nodes = [
        # approximate logits: int8 GEMV (the pattern ORT fuses into DynamicQuantizeMatMul)
        helper.make_node("DynamicQuantizeLinear", [hidden], ["sl.hq", "sl.h_step", "sl.h_zero"]),
        helper.make_node("MatMulInteger", ["sl.hq", "shortlist.weight_q", "sl.h_zero", "shortlist.weight_zero"], ["sl.acc"]),
        helper.make_node("Cast", ["sl.acc"], ["sl.acc_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["sl.h_step", "shortlist.weight_step"], ["sl.scale"]),
        helper.make_node("Mul", ["sl.acc_f", "sl.scale"], ["sl.approx_nobias"]),
        helper.make_node("Add", ["sl.approx_nobias", "shortlist.bias"], ["sl.approx"]),
        # error bound: (t/2)*||w_j||_1 + coef_j*(||h||_1 + D*t/2)
        reduce_l1,
        helper.make_node("Mul", ["sl.h_step", "shortlist.half_d"], ["sl.h_pad"]),
        helper.make_node("Add", ["sl.h_l1", "sl.h_pad"], ["sl.hq_l1"]),
        helper.make_node("Mul", ["sl.hq_l1", "shortlist.coef"], ["sl.bound_w"]),
        helper.make_node("Mul", ["sl.h_step", "shortlist.half_weight_l1"], ["sl.bound_h"]),
        helper.make_node("Add", ["sl.bound_w", "sl.bound_h"], ["sl.bound"]),
        helper.make_node("Add", ["sl.approx", "sl.bound"], ["sl.upper"]),
        # K best upper bounds -> candidates; the (K+1)-th is the threshold
        helper.make_node("TopK", ["sl.upper", "shortlist.k1"], ["sl.top_upper", "sl.top_ids"], axis=-1, largest=1, sorted=1),
        helper.make_node("Slice", ["sl.top_ids", "shortlist.zero", "shortlist.k", "shortlist.last_axis"], ["shortlist_ids"]),
        helper.make_node("Slice", ["sl.top_upper", "shortlist.k", "shortlist.k_end", "shortlist.last_axis"], ["shortlist_threshold"]),
        # exact fp32 logits of the candidates
        helper.make_node("Gather", [rows_name, "shortlist_ids"], ["sl.rows"], axis=0),  # (B, 1, K, D)
        helper.make_node("Unsqueeze", [hidden, "shortlist.last_axis"], ["sl.h_col"]),  # (B, 1, D, 1)
        helper.make_node("MatMul", ["sl.rows", "sl.h_col"], ["sl.exact_col"]),  # (B, 1, K, 1)
        helper.make_node("Squeeze", ["sl.exact_col", "shortlist.last_axis"], ["sl.exact"]),
        helper.make_node("Gather", ["shortlist.bias", "shortlist_ids"], ["sl.exact_bias"], axis=0),
        helper.make_node("Add", ["sl.exact", "sl.exact_bias"], ["shortlist_logits"]),
    ]
    removed = {id(matmul)} | ({id(add)} if add is not None else set())
    kept = [n for n in graph.node if id(n) not in removed]
    still_used = {i for n in kept for i in n.input}
    unused = {weight_name} | ({bias_name} if bias_name else set())
    initializers = [i for i in graph.initializer if i.name not in unused or i.name in still_used] + new_inits
    outputs = [o for o in graph.output if o.name != "logits"]
    batch = graph.output[0].type.tensor_type.shape.dim[0].dim_param or "batch"
    head_outputs = [
        helper.make_tensor_value_info("shortlist_ids", TensorProto.INT64, [batch, 1, k]),
        helper.make_tensor_value_info("shortlist_logits", TensorProto.FLOAT, [batch, 1, k]),
        helper.make_tensor_value_info("shortlist_threshold", TensorProto.FLOAT, [batch, 1, 1]),
    ]
    new_graph = helper.make_graph(kept + nodes, graph.name, list(graph.input), head_outputs + outputs, initializers)
    new_model = helper.make_model(new_graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    save_model(new_model, dst)
    check_model(dst)
    return dst



def build_topk_graph(src: Path, dst: Path, *, k: int = 2) -> Path:
    """The same interface over a graph whose logits are already cheap (the int8 export): exact top-k
    in the graph, the (k+1)-th logit as the threshold. Saves copying (B, V) logits out of ONNX
    Runtime and scanning them in numpy every step, which shows at batch 32."""
    model = onnx.load(str(src))
    graph = model.graph
    logits = next((o for o in graph.output if o.name == "logits"), None)
    if logits is None:
        raise ValueError(f"{src}: no 'logits' output")
    vocab = logits.type.tensor_type.shape.dim[-1].dim_value
    if vocab and k + 1 > vocab:
        raise ValueError(f"top-k head k={k} must be smaller than the vocabulary ({vocab})")
    consts = [
        numpy_helper.from_array(np.array([k + 1], np.int64), "topk.k1"),
        numpy_helper.from_array(np.array([0], np.int64), "topk.zero"),
        numpy_helper.from_array(np.array([k], np.int64), "topk.k"),
        numpy_helper.from_array(np.array([k + 1], np.int64), "topk.k_end"),
        numpy_helper.from_array(np.array([-1], np.int64), "topk.last_axis"),
    ]
    nodes = [
        helper.make_node("TopK", ["logits", "topk.k1"], ["topk.values", "topk.ids"], axis=-1, largest=1, sorted=1),
        helper.make_node("Slice", ["topk.ids", "topk.zero", "topk.k", "topk.last_axis"], ["shortlist_ids"]),
        helper.make_node("Slice", ["topk.values", "topk.zero", "topk.k", "topk.last_axis"], ["shortlist_logits"]),
        helper.make_node("Slice", ["topk.values", "topk.k", "topk.k_end", "topk.last_axis"], ["shortlist_threshold"]),
    ]
    batch = logits.type.tensor_type.shape.dim[0].dim_param or "batch"
    outputs = [
        helper.make_tensor_value_info("shortlist_ids", TensorProto.INT64, [batch, 1, k]),
        helper.make_tensor_value_info("shortlist_logits", TensorProto.FLOAT, [batch, 1, k]),
        helper.make_tensor_value_info("shortlist_threshold", TensorProto.FLOAT, [batch, 1, 1]),
        *[o for o in graph.output if o.name != "logits"],
    ]
    new_graph = helper.make_graph([*graph.node, *nodes], graph.name, list(graph.input), outputs, [*graph.initializer, *consts])
    new_model = helper.make_model(new_graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    save_model(new_model, dst)
    check_model(dst)
    return dst
