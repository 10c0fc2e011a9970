"""Export round trip on a tiny trained model: files, manifest, parity, and the ONNX Runtime runtime.

One export (hf, onnx, onnx-int8, onnx-fp16) is made per module and shared; every test reads it.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from spellfix.export import export  # noqa: E402
from spellfix.export.manifest import verify_files  # noqa: E402
from spellfix.export.parity import ParityError, check_parity, reference_greedy  # noqa: E402
from spellfix.export.tensorrt_build import input_shape_ranges, profile_ranges  # noqa: E402
from spellfix.inference import SpellCorrector, generate  # noqa: E402
from spellfix.inference import layout  # noqa: E402
from test_inference_fixtures import dev_pairs  # noqa: E402
from test_inference_fixtures import model_dir, one_torch_thread  # noqa: E402,F401 (module fixtures)

pytestmark = pytest.mark.slow  # one ~15-30 s export shared by the module

FORMATS = ["hf", "onnx", "onnx-int8", "onnx-fp16"]


@pytest.fixture(scope="module")
def exported(model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "exp"
    manifest = export(model_dir, out, formats=FORMATS)
    return out, manifest


@pytest.fixture(scope="module")
def ort_fixer(exported):
    return SpellCorrector(exported[0], "onnxruntime", max_new_tokens=24, backend_options={"intra_op_num_threads": 1})


@pytest.fixture(scope="module")
def queries():
    return [q for q, _ in dev_pairs(64, offset=40)]


def test_export_writes_the_documented_layout(exported):
    out, manifest = exported
    for graph in layout.GRAPHS:
        for sub in ("onnx", "onnx-int8", "onnx-fp16"):
            assert (out / sub / f"{graph}.onnx").is_file()
    for name in ("manifest.json", "tokenizer.json", "spellfix.json", "generation_config.json", "hf/model.safetensors", "hf/config.json", "hf/tokenizer.json"):
        assert (out / name).is_file(), name
    assert manifest["formats"] == FORMATS
    assert not list(out.parent.glob(".exp.tmp-*")), "the temp dir must be renamed into place"


def test_manifest_records_versions_io_axes_parity_and_checksums(exported):
    out, manifest = exported
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert {"torch", "transformers", "onnx", "onnxruntime", "python"} <= set(manifest["versions"])
    assert manifest["opset"] == 17
    assert set(manifest["dynamic_axes"]) == {"batch", "src_len", "tgt_len", "past_len", "rows"}
    step = manifest["graphs"]["onnx"]["decoder_with_past"]
    names = [i["name"] for i in step["inputs"]]
    assert names[:2] == ["input_ids", "encoder_attention_mask"] and "past_key_values.0.decoder.key" in names
    key = next(i for i in step["inputs"] if i["name"] == "past_key_values.0.decoder.key")
    assert key["dtype"] == "float32" and key["shape"][0] == "batch" and key["shape"][2] == "past_len"
    assert manifest["graphs"]["onnx-fp16"]["decoder_with_past"]["outputs"][0] == {
        "name": "logits", "dtype": "float32", "shape": ["batch", 1, manifest["model"]["vocab_size"]]
    }
    fp32 = manifest["parity"]["onnx"]
    assert fp32["enforced"] and fp32["max_abs_logits_diff"] <= fp32["logits_atol"]
    assert fp32["greedy"]["identical"] == fp32["greedy"]["queries"] > 0
    shortlist = fp32["shortlist"]
    assert shortlist["violations"] == 0 and shortlist["accepted"] > 0 and shortlist["max_abs_logits_diff"] < 1e-3
    assert "decoder_with_past_shortlist" in manifest["graphs"]["onnx"]
    assert "decoder_with_past_shortlist" in manifest["graphs"]["onnx-int8"]  # exact top-k head over int8 logits
    assert manifest["parity"]["onnx-int8"]["shortlist"]["violations"] == 0
    assert manifest["parity"]["onnx-fp16"]["enforced"] and not manifest["parity"]["onnx-int8"]["enforced"]
    assert "onnx/decoder.onnx" in manifest["files"] and "manifest.json" not in manifest["files"]
    verify_files(out, manifest)


def test_manifest_checksums_catch_a_changed_file(exported, tmp_path):
    out, manifest = exported
    copy = tmp_path / "exp"
    shutil.copytree(out, copy)
    with (copy / "onnx" / "kv_reorder.onnx").open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ValueError, match="kv_reorder.onnx: sha256 differs"):
        verify_files(copy, manifest)


def test_parity_check_fails_loudly_past_the_tolerance(exported, model_dir, ort_fixer):
    from spellfix.modeling import load_pretrained

    out, _ = exported
    model, _ = load_pretrained(model_dir)
    with pytest.raises(ParityError, match=r"max \|logits - PyTorch\| = .* exceeds the tolerance 0"):
        check_parity(
            model, ort_fixer.tokenizer, out / "onnx", precision="fp32", queries=["thin lizzy"],
            decoder_start_token_id=2, max_new_tokens=4, logits_atol=0.0,
        )


@pytest.mark.parametrize("batch_size", [1, 32])
def test_onnxruntime_greedy_is_identical_to_torch_backend_and_generate(exported, model_dir, ort_fixer, queries, batch_size):
    from spellfix.modeling import load_pretrained

    torch_fixer = SpellCorrector(model_dir, "torch", max_new_tokens=24, batch_size=batch_size)
    model, _ = load_pretrained(model_dir)
    encoded = ort_fixer.tokenizer.encode_ids(ort_fixer.encoder_texts(queries))
    for start in range(0, len(encoded), batch_size):
        batch = ort_fixer.tokenizer.pad(encoded[start : start + batch_size])
        ours = generate(ort_fixer.backend, batch.input_ids, batch.attention_mask, ort_fixer.options)
        assert ours == generate(torch_fixer.backend, batch.input_ids, batch.attention_mask, torch_fixer.options)
        assert ours == reference_greedy(model, batch.input_ids, batch.attention_mask, ort_fixer.options)
    assert SpellCorrector(exported[0], "onnxruntime", max_new_tokens=24, batch_size=batch_size).correct(queries) == torch_fixer.correct(queries)


def test_shortlist_fallback_reruns_the_full_head_and_gives_the_same_ids(exported, ort_fixer, queries, monkeypatch):
    from spellfix.inference.backends import onnxruntime_backend

    fixer = SpellCorrector(exported[0], "onnxruntime", max_new_tokens=24, copy_verify=False, backend_options={"intra_op_num_threads": 1})
    expected = ort_fixer.generate_ids(queries[:12])
    monkeypatch.setattr(onnxruntime_backend, "accept_shortlist", lambda logits, threshold: np.zeros(len(logits), bool))
    assert fixer.generate_ids(queries[:12]) == expected
    assert fixer.backend.stats["fallback_rows"] == fixer.backend.stats["shortlist_rows"] > 0


def test_onnxruntime_without_shortlist_gives_the_same_ids(exported, ort_fixer, queries):
    fixer = SpellCorrector(exported[0], "onnxruntime", max_new_tokens=24, copy_verify=False, backend_options={"use_shortlist": False})
    assert fixer.backend.shortlist is None
    assert fixer.generate_ids(queries) == ort_fixer.generate_ids(queries)


def test_onnxruntime_beam_search_matches_generate_with_four_beams(exported, model_dir, queries):
    from spellfix.modeling import load_pretrained

    fixer = SpellCorrector(exported[0], "onnxruntime", num_beams=4, max_new_tokens=16, backend_options={"intra_op_num_threads": 1})
    model, _ = load_pretrained(model_dir)
    batch = fixer.tokenizer.pad(fixer.tokenizer.encode_ids(fixer.encoder_texts(queries[:16])))
    ours = generate(fixer.backend, batch.input_ids, batch.attention_mask, fixer.options)
    assert ours == reference_greedy(model, batch.input_ids, batch.attention_mask, fixer.options)


def test_runtime_works_from_the_export_dir_alone(exported, tmp_path, ort_fixer, queries):
    lean = tmp_path / "lean"
    shutil.copytree(exported[0], lean, ignore=shutil.ignore_patterns("hf", "onnx-fp16"))
    fixer = SpellCorrector(lean, "onnxruntime", max_new_tokens=24)
    assert fixer.correct(queries[:8]) == ort_fixer.correct(queries[:8])
    assert fixer.correct(["", "THIN  lizzy"]) == ["", ort_fixer.correct(["thin lizzy"])[0]]


def test_copy_margin_scores_agree_between_onnxruntime_and_torch(exported, model_dir, ort_fixer, queries):
    torch_fixer = SpellCorrector(model_dir, "torch", max_new_tokens=24, copy_margin=None)
    ours, theirs = ort_fixer.copy_decisions(queries[:16]), torch_fixer.copy_decisions(queries[:16])
    assert [d.decoded for d in ours] == [d.decoded for d in theirs]
    assert any(d.gain != 0.0 for d in theirs)
    np.testing.assert_allclose([d.gain for d in ours], [d.gain for d in theirs], atol=2e-3)


def test_a_calibrated_margin_travels_with_the_export(model_dir, tmp_path, queries):
    from spellfix.calibration import save_copy_margin

    calibrated = tmp_path / "model"
    shutil.copytree(model_dir, calibrated)
    save_copy_margin(calibrated, 1.5, real_word_margin=0.5, known_word_zipf=2.5)
    out = tmp_path / "exp"
    export(calibrated, out, formats=["onnx"])
    fixer = SpellCorrector(out, "onnxruntime", max_new_tokens=24)
    assert (fixer.copy_margin, fixer.real_word_margin, fixer.known_word_zipf) == (1.5, 0.5, 2.5)
    decisions = SpellCorrector(out, "onnxruntime", max_new_tokens=24, copy_margin=None).copy_decisions(queries[:16])
    assert fixer.correct(queries[:16]) == [d.choose(1.5, 0.5) for d in decisions]
    assert [d.choose(1.5, 0.5) for d in decisions] != [d.choose(1.5) for d in decisions]  # the second margin mattered


def test_a_saved_acceptance_model_travels_with_the_export(model_dir, tmp_path, queries):
    from spellfix.calibration import save_copy_margin
    from spellfix.inference.acceptance import FEATURES, AcceptanceModel

    calibrated = tmp_path / "model"
    shutil.copytree(model_dir, calibrated)
    # give an answer when its gain exceeds its edit distance: the tiny model's answers fall on both sides
    weights = tuple(1.0 if name == "gain" else -1.0 if name == "edit_distance" else 0.0 for name in FEATURES)
    acceptance = AcceptanceModel(weights, 0.0, (0.0,) * len(FEATURES), (1.0,) * len(FEATURES), 0.0)
    save_copy_margin(calibrated, 1.5, known_word_zipf=2.5, acceptance=acceptance)
    out = tmp_path / "exp"
    export(calibrated, out, formats=["onnx"])
    fixer = SpellCorrector(out, "onnxruntime", max_new_tokens=24)
    assert fixer.acceptance == acceptance
    decisions = fixer.copy_decisions(queries[:16])
    answers = fixer.correct(queries[:16])
    assert answers == [fixer.choose(d) for d in decisions]
    changed = [a != d.query for a, d in zip(answers, decisions)]
    assert any(changed) and not all(a == d.decoded for a, d in zip(answers, decisions))  # it took some, refused some


def test_int8_graphs_run_in_the_same_runtime(exported, queries):
    fixer = SpellCorrector(exported[0], "onnxruntime", precision="int8", max_new_tokens=24)
    out = fixer.correct(queries[:8])
    assert len(out) == 8 and all(isinstance(x, str) for x in out)


def test_runtime_rejects_bad_inputs_like_the_torch_backend(ort_fixer):
    with pytest.raises(ValueError, match="query 0 is not valid UTF-8"):
        ort_fixer.correct([b"\xc3("])
    with pytest.raises(TypeError, match="not a single string"):
        ort_fixer.correct("thin lizzy")
    with pytest.warns(UserWarning, match="truncated"):
        ort_fixer.correct([" ".join(["metallica"] * 40)])


def test_missing_precision_dir_gives_a_clear_message(exported, tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(exported[0], partial, ignore=shutil.ignore_patterns("onnx-int8"))
    with pytest.raises(FileNotFoundError, match="onnx-int8: not found; export it with `spellfix export --format onnx,onnx-int8`"):
        SpellCorrector(partial, "onnxruntime", precision="int8")


def test_export_refuses_to_overwrite_a_directory_that_is_not_an_export(model_dir, tmp_path):
    target = tmp_path / "precious"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a spellfix export dir"):
        export(model_dir, target)
    assert (target / "notes.txt").read_text() == "keep me"


def test_unknown_format_is_rejected_with_the_allowed_list(model_dir, tmp_path):
    with pytest.raises(ValueError, match="unknown export format.*choose from hf, onnx, onnx-int8, onnx-fp16, tensorrt, triton"):
        export(model_dir, tmp_path / "x", formats=["onnx", "coreml"])


def test_tensorrt_profiles_cover_every_dynamic_axis_of_the_fp16_graphs(exported):
    ranges = profile_ranges(max_batch=128, max_source_length=32, max_new_tokens=24)
    for graph in layout.GRAPHS:
        shapes = input_shape_ranges(exported[0] / "onnx-fp16" / f"{graph}.onnx", ranges)
        for name, (lo, opt, hi) in shapes.items():
            assert all(a <= b <= c for a, b, c in zip(lo, opt, hi)), (graph, name)
    step = input_shape_ranges(exported[0] / "onnx-fp16" / "decoder_with_past.onnx", ranges)
    assert step["input_ids"] == ((1, 1), (1, 1), (128, 1))
    assert step["past_key_values.0.decoder.key"][2][2] == 24


def test_fp16_graphs_keep_layernorm_and_softmax_in_fp32_and_clamp_weights(exported):
    import onnx

    model = onnx.load(str(exported[0] / "onnx-fp16" / "decoder_with_past.onnx"))
    types = {}
    for value in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        types[value.name] = value.type.tensor_type.elem_type
    inferred = onnx.shape_inference.infer_shapes(model)
    for value in inferred.graph.value_info:
        types[value.name] = value.type.tensor_type.elem_type
    inits = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type in ("LayerNormalization", "Softmax"):
            assert types.get(node.input[0]) == onnx.TensorProto.FLOAT, node.name
    halves = [onnx.numpy_helper.to_array(i) for i in inits.values() if i.data_type == onnx.TensorProto.FLOAT16]
    assert halves and all(np.isfinite(h).all() for h in halves)
    assert types["past_key_values.0.decoder.key"] == onnx.TensorProto.FLOAT16


def test_fp16_graphs_parse_and_build_with_tensorrt_rtx(exported, tmp_path):
    """A proxy only: TensorRT-RTX (PyPI wheels, builds without a GPU) parses the fp16 graphs and
    builds strongly typed engines with our optimization profiles. It says TensorRT can read these
    graphs and shapes; it does not prove an engine builds or runs on an A10G with TensorRT 10/11."""
    trt = pytest.importorskip("tensorrt_rtx_bindings", reason="tensorrt-rtx-cu12-bindings/-libs not installed (optional proxy check)")
    from spellfix.export.tensorrt_build import _CollectingLogger, build_engine

    logger = _CollectingLogger(trt)
    ranges = profile_ranges(max_batch=8, max_source_length=32, max_new_tokens=24)
    for graph in layout.GRAPHS:
        onnx_path = exported[0] / "onnx-fp16" / f"{graph}.onnx"
        record = build_engine(
            trt, onnx_path, tmp_path / f"{graph}.engine", input_shape_ranges(onnx_path, ranges),
            fp16=True, strongly_typed=True, workspace_bytes=1 << 28, logger=logger,
        )
        assert (tmp_path / f"{graph}.engine").stat().st_size > 0 and record["strongly_typed"]


# ---------------------------------------------------------------------------------------------
# The TensorRT backend's buffer logic (ping-pong K/V sets, tensor addresses, shapes, row selection)
# against real graph execution: TensorRT and CUDA do not run here, so a stand-in executes each
# "engine" (the exported fp32 ONNX graph) with ONNX Runtime on host memory addressed by raw
# pointers, exactly as TensorRT would read and write device buffers. The stand-in checks every
# write fits the buffer it was given.


class _FakeCudart:
    class cudaMemcpyKind:  # noqa: N801 - mirrors cuda-python
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2

    def __init__(self):
        self.allocations: dict[int, np.ndarray] = {}

    def cudaSetDevice(self, device):  # noqa: N802
        return (0,)

    def cudaStreamCreate(self):  # noqa: N802
        return (0, 7)

    def cudaStreamSynchronize(self, stream):  # noqa: N802
        return (0,)

    def cudaMalloc(self, nbytes):  # noqa: N802
        buf = np.zeros(nbytes, dtype=np.uint8)
        self.allocations[buf.ctypes.data] = buf
        return (0, buf.ctypes.data)

    def cudaFree(self, ptr):  # noqa: N802
        self.allocations.pop(ptr)
        return (0,)

    def cudaMemcpyAsync(self, dst, src, nbytes, kind, stream):  # noqa: N802
        import ctypes

        device = dst if kind == self.cudaMemcpyKind.cudaMemcpyHostToDevice else src
        assert nbytes <= self.allocations[device].nbytes, "copy overflows the device buffer"
        ctypes.memmove(dst, src, nbytes)
        return (0,)

    def view(self, ptr, shape, dtype):
        buf = self.allocations[ptr]
        count = int(np.prod(shape))
        assert count * np.dtype(dtype).itemsize <= buf.nbytes, f"tensor {shape} overflows its buffer"
        return buf[: count * np.dtype(dtype).itemsize].view(dtype).reshape(shape)


def _fake_trt(cudart: _FakeCudart, ranges):
    import types

    import onnxruntime as ort

    class Engine:
        def __init__(self, onnx_path):
            self.session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
            self.inputs = [i.name for i in self.session.get_inputs()]
            self.outputs = [o.name for o in self.session.get_outputs()]
            self.names = self.inputs + self.outputs
            self.types = {v.name: np.dtype(np.int64 if "int64" in v.type else np.float32) for v in [*self.session.get_inputs(), *self.session.get_outputs()]}
            self.profile = input_shape_ranges(__import__("pathlib").Path(onnx_path), ranges)
            self.num_io_tensors = len(self.names)

        def get_tensor_name(self, i):
            return self.names[i]

        def get_tensor_mode(self, name):
            return "input" if name in self.inputs else "output"

        def get_tensor_dtype(self, name):
            return self.types[name]

        def get_tensor_profile_shape(self, name, profile):
            return self.profile[name]

        def create_execution_context(self):
            return Context(self)

    class Context:
        def __init__(self, engine):
            self.engine, self.shapes, self.addresses, self.last = engine, {}, {}, {}

        def set_input_shape(self, name, shape):
            lo, _, hi = self.engine.profile[name]
            if not all(a <= s <= b for a, s, b in zip(lo, shape, hi)):
                return False
            self.shapes[name] = tuple(shape)
            return True

        def get_tensor_shape(self, name):
            feeds = {n: np.zeros(self.shapes[n], self.engine.types[n]) for n in self.engine.inputs}
            return tuple(self.engine.session.run([name], feeds)[0].shape)

        def set_tensor_address(self, name, ptr):
            self.addresses[name] = ptr
            return True

        def execute_async_v3(self, stream):
            feeds = {n: cudart.view(self.addresses[n], self.shapes[n], self.engine.types[n]).copy() for n in self.engine.inputs}
            for name, value in zip(self.engine.outputs, self.engine.session.run(self.engine.outputs, feeds)):
                cudart.view(self.addresses[name], value.shape, value.dtype)[...] = value
            return True

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            return Engine(data.decode())

    return types.SimpleNamespace(
        Logger=type("Logger", (), {"WARNING": 2, "__init__": lambda self, level=None: None}),
        Runtime=Runtime,
        TensorIOMode=types.SimpleNamespace(INPUT="input", OUTPUT="output"),
        nptype=lambda dtype: dtype,
    )


def test_tensorrt_backend_buffer_logic_reproduces_onnxruntime_outputs(exported, ort_fixer, queries, tmp_path, monkeypatch):
    from spellfix.export import tensorrt_build
    from spellfix.inference.backends import tensorrt_backend

    engines = tmp_path / "tensorrt"
    engines.mkdir()
    for graph in layout.GRAPHS:  # the stand-in "engine" is the path of the fp32 graph
        (engines / f"{graph}.engine").write_bytes(str(exported[0] / "onnx" / f"{graph}.onnx").encode())
    cudart = _FakeCudart()
    ranges = profile_ranges(max_batch=32, max_source_length=32, max_new_tokens=24)
    monkeypatch.setattr(tensorrt_build, "require_tensorrt", lambda: _fake_trt(cudart, ranges))
    monkeypatch.setattr(tensorrt_backend, "_import_cuda_runtime", lambda: cudart)

    backend = tensorrt_backend.TensorRTBackend(engines)
    encoded = ort_fixer.tokenizer.encode_ids(ort_fixer.encoder_texts(queries[:16]))
    batch = ort_fixer.tokenizer.pad(encoded)
    greedy = ort_fixer.options
    assert generate(backend, batch.input_ids, batch.attention_mask, greedy) == generate(
        ort_fixer.backend, batch.input_ids, batch.attention_mask, greedy
    )
    beams = type(greedy)(**{**greedy.__dict__, "num_beams": 4, "max_new_tokens": 12})
    small = ort_fixer.tokenizer.pad(encoded[:6])
    assert generate(backend, small.input_ids, small.attention_mask, beams) == generate(
        ort_fixer.backend, small.input_ids, small.attention_mask, beams
    )
    # copy-verify and the judging pass run on decode_block over one encoder state, rows re-used
    from spellfix.inference.decoding import copy_verify, score_sequences

    drafts = ort_fixer.tokenizer.encode_targets([q.lower() for q in queries[:16]], greedy.max_new_tokens)
    trt_state = backend.encode(batch.input_ids, batch.attention_mask)
    ort_state = ort_fixer.backend.encode(batch.input_ids, batch.attention_mask)
    trt_verified = copy_verify(backend, trt_state, drafts, greedy)
    assert trt_verified.ids == copy_verify(ort_fixer.backend, ort_state, drafts, greedy).ids
    assert trt_verified.ids == generate(ort_fixer.backend, batch.input_ids, batch.attention_mask, greedy)
    owners = np.array([3, 0, 3, 15, 7])
    sequences = [drafts[i] for i in owners]
    start, pad = greedy.decoder_start_token_id, greedy.pad_token_id
    assert np.allclose(
        score_sequences(backend, trt_state, sequences, start, pad, owners),
        score_sequences(ort_fixer.backend, ort_state, sequences, start, pad, owners),
        atol=1e-4,
    )
    with pytest.raises(ValueError, match="exceed the engines' max batch 32"):
        backend.encode(np.zeros((33, 4), np.int64), np.ones((33, 4), np.int64))
    backend.close()
