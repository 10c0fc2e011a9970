"""The inference benchmark's bookkeeping (the timing run itself is not part of the tests)."""

from __future__ import annotations

import pytest

from spellfix.bench.infer import SYSTEMS, bench_inputs, floors, render_markdown, run_infer_benchmark, work_per_query


def test_benchmark_entry_names_are_the_design_contract():
    assert SYSTEMS == ("generate", "spellfix-torch", "onnxruntime fp32", "onnxruntime int8", "ctranslate2 fp32", "ctranslate2 int8")


def test_work_per_query_counts_every_matmul_of_a_tiny_model():
    cfg = {"d_model": 2, "encoder_ffn_dim": 3, "decoder_ffn_dim": 3, "vocab_size": 5, "encoder_layers": 1, "decoder_layers": 1}
    work = work_per_query(cfg, source_tokens=2, new_tokens=1)
    encoder = 2 * (4 * 4 + 2 * 2 * 3) * 2 + 2 * 2 * 2 * 2 * 2  # projections + attention (scores, values)
    cross_kv = 2 * (2 * 4) * 2
    step = 2 * (6 * 4 + 2 * 2 * 3 + 5 * 2) + 2 * 2 * 2 * (1 + 2)
    assert work["flops"] == encoder + cross_kv + step
    assert work["weights_streamed"] == (4 * 4 + 2 * 2 * 3) + 2 * 4 + (6 * 4 + 2 * 2 * 3 + 5 * 2)


def test_bart_base_floors_match_the_stack_md_figures():
    bart_base = {"d_model": 768, "encoder_layers": 6, "decoder_layers": 6, "encoder_ffn_dim": 3072, "decoder_ffn_dim": 3072, "vocab_size": 50265}
    work = work_per_query(bart_base, source_tokens=10, new_tokens=10)
    floor = floors(work, {"fp32_matmul_gflops": 180.0, "memory_read_gbps": 39.0})
    assert 85 < floor["memory_floor_ms_fp32"] < 105  # STACK.md: ~95 ms fp32, ~24 ms int8
    assert 20 < floor["memory_floor_ms_int8"] < 27


def test_bench_inputs_are_ten_source_ids_with_bos_and_eos():
    (ids1, mask1), (ids32, mask32) = bench_inputs(32, 50265)
    assert ids1.shape == (1, 10) and ids1[0, 0] == 0 and ids1[0, -1] == 2 and mask1.all()
    assert ids32.shape == (32, 10) and (ids32 == ids1).all()


def test_unknown_system_is_rejected_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="unknown system.*choose from generate"):
        run_infer_benchmark(tmp_path, tmp_path, systems=["generate", "vllm"])
    assert not any(tmp_path.iterdir())


def test_markdown_table_lists_every_entry():
    entry = {"name": "generate", "precision": "fp32", "p50_ms": 10.0, "p99_ms": 12.0, "queries_per_s": 5.0, "x_memory_floor_batch1": 1.5, "x_flop_floor_batch32": 2.0}
    floor = {"flops_per_query": 2e9, "weights_streamed_per_query": 9e8, "memory_floor_ms_fp32": 90.0, "memory_floor_ms_int8": 22.0,
             "flop_floor_ms_fp32": 11.0, "flop_floor_ms_int8": 3.0, "at_reference_machine": {"memory_floor_ms_fp32": 95.0, "memory_floor_ms_int8": 24.0},
             "reference_machine": {"fp32_matmul_gflops": 180.0, "memory_read_gbps": 39.0}}
    report = {
        "setup": {"source_tokens": 10, "new_tokens": 10, "repeats": 4, "calls_batch1": 200, "batch_size": 32},
        "floor": floor,
        "machine": {"threads": 2, "cpu_count": 2, "loadavg_before": [1.0], "loadavg_after": [1.0], "fp32_matmul_gflops": 100.0, "int8_matmul_gops": 300.0, "memory_read_gbps": 30.0},
        "entries": [entry, {**entry, "name": "onnxruntime fp32", "batch1_breakdown_ms": {"encode_ms": 1.0, "first_step_ms": 2.0, "later_steps_ms": 3.0}}],
    }
    md = render_markdown(report)
    assert "| generate | 10.0 |" in md and "| onnxruntime fp32 | 1.0 | 2.0 | 3.0 |" in md
