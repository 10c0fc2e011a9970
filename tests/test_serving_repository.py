"""The Triton model repository writer, the model's batch logic in-process, and the launcher's guards.

The real server is exercised in test_serving.py; here the same pieces run without it (fast), so a
failure points at the writer or the batch logic rather than at Triton.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pytest

from spellfix.export.triton import TritonOptions, _Plan, render_config, write_repository
from spellfix.serving.env import TritonEnvError, TritonInstall, resolve_install
from spellfix.serving.model_core import BatchCorrector, ModelParameters, RequestError
from spellfix.serving.server import TritonServer, run

CPU_PLAN = _Plan("KIND_CPU", "onnxruntime", "onnx")


# ------------------------------------------------------------------ config.pbtxt and options


def test_config_sets_dynamic_batching_and_instance_group_from_options():
    options = TritonOptions(max_batch_size=16, max_queue_delay_us=500, preferred_batch_sizes=(4, 16), instance_count=2)
    config = render_config(options, CPU_PLAN)
    assert 'backend: "python"' in config
    assert "max_batch_size: 16" in config
    assert "preferred_batch_size: [ 4, 16 ]" in config
    assert "max_queue_delay_microseconds: 500" in config
    assert "instance_group [ { count: 2 kind: KIND_CPU } ]" in config
    assert 'input [ { name: "QUERY" data_type: TYPE_STRING dims: [ 1 ] } ]' in config
    assert 'parameters { key: "backend" value: { string_value: "onnxruntime" } }' in config


def test_config_without_dynamic_batching_has_no_batcher():
    config = render_config(TritonOptions(dynamic_batching=False), CPU_PLAN)
    assert "dynamic_batching {" not in config
    assert "max_batch_size: 32" in config


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_batch_size": 0}, "max_batch_size must be an integer >= 1"),
        ({"instance_count": 0}, "instance_count must be an integer >= 1"),
        ({"kind": "GPU"}, "kind must be one of auto, KIND_CPU, KIND_GPU"),
        ({"backend": "torch"}, "backend must be one of auto, onnxruntime, tensorrt"),
        ({"preferred_batch_sizes": [64]}, r"preferred_batch_sizes must lie in \[1, max_batch_size=32\]"),
        ({"dynamic_batching": False, "preferred_batch_sizes": [8]}, "needs dynamic_batching=True"),
        ({"model_name": "my model"}, "model_name must be letters"),
        ({"instances": 2}, r"unknown triton option\(s\) \['instances'\]"),
    ],
)
def test_bad_options_are_rejected_naming_the_option(options, message):
    with pytest.raises(ValueError, match=message):
        TritonOptions.from_mapping(options).validate()


def test_model_parameters_reject_unknown_keys_and_non_integers(tmp_path):
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['beams'\]"):
        ModelParameters.parse({"beams": "2"}, tmp_path)
    with pytest.raises(ValueError, match="num_beams must be an integer, got 'two'"):
        ModelParameters.parse({"num_beams": "two"}, tmp_path)
    params = ModelParameters.parse({"export_dir": "export"}, tmp_path)
    assert params.export_dir == tmp_path / "export" and params.on_overlong == "error"


# ------------------------------------------------------------------ launcher guards


def test_server_command_binds_http_grpc_and_metrics_to_loopback(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.pbtxt").write_text('backend: "python"\n')
    install = TritonInstall(Path("/bin/true"), tmp_path)
    command = TritonServer(install, tmp_path, http_port=9000).command()
    for flag, value in (("--http-address", "127.0.0.1"), ("--grpc-address", "127.0.0.1"), ("--metrics-address", "127.0.0.1"),
                        ("--http-port", "9000"), ("--grpc-port", "9001"), ("--metrics-port", "9002")):  # fmt: skip
        assert command[command.index(flag) + 1] == value


def test_server_refuses_a_directory_that_is_not_a_model_repository(tmp_path):
    with pytest.raises(FileNotFoundError, match="no <model>/config.pbtxt"):
        TritonServer(TritonInstall(Path("/bin/true"), tmp_path), tmp_path)


def test_triton_environment_drops_the_main_envs_python_paths():
    install = TritonInstall(Path("/bin/true"), Path("/tmp"), {"PYTHONPATH": None, "PATH": "/venv/bin:/usr/bin"})
    env = install.environment({"PYTHONPATH": "/work/main", "PATH": "/usr/bin", "HOME": "/root"})
    assert env == {"PATH": "/venv/bin:/usr/bin", "HOME": "/root"}


def test_missing_triton_env_error_says_how_to_create_it(tmp_path, monkeypatch):
    monkeypatch.delenv("SPELLFIX_TRITONSERVER", raising=False)
    with pytest.raises(TritonEnvError, match="make triton-env"):
        resolve_install(env_dir=tmp_path)
    monkeypatch.setenv("SPELLFIX_TRITONSERVER", str(tmp_path / "tritonserver"))
    with pytest.raises(TritonEnvError, match="not an executable tritonserver"):
        resolve_install()


def test_spellfix_serve_exits_2_with_one_clear_line_for_a_missing_repository(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SPELLFIX_TRITON_ENV", str(tmp_path))
    (tmp_path / "spellfix-triton-env.json").write_text("{}")
    code = run(argparse.Namespace(model_repository=str(tmp_path / "nope"), port=8000, host="127.0.0.1"))
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("spellfix: error: ") and err.count("\n") == 1, err


# ------------------------------------------------------------------ with a real export (slow setup)


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> Path:
    from test_serving_fixtures import tiny_export

    return tiny_export(tmp_path_factory.getbasetemp() / "serving-export")


@pytest.fixture(scope="module")
def corrector(export_dir):
    from spellfix.inference import SpellCorrector

    return SpellCorrector(export_dir, backend="onnxruntime", batch_size=64, on_overlong="error", backend_options={"intra_op_num_threads": 1})


@pytest.mark.slow
def test_export_format_triton_writes_a_self_contained_repository(export_dir):
    from spellfix.inference import SpellCorrector
    from test_serving_fixtures import serving_queries

    model = export_dir / "triton" / "spellfix"
    version = model / "1"
    assert "max_batch_size: 32" in (model / "config.pbtxt").read_text()
    assert "class TritonPythonModel" in (version / "model.py").read_text()
    assert (version / "spellfix" / "inference" / "corrector.py").is_file()
    runtime = version / "export"
    for name in ("tokenizer.json", "spellfix.json", "generation_config.json", "manifest.json", "onnx/encoder.onnx"):
        assert (runtime / name).is_file(), name
    assert os.stat(runtime / "onnx" / "encoder.onnx").st_ino == os.stat(export_dir / "onnx" / "encoder.onnx").st_ino, "graphs are hard links"
    subset = json.loads((runtime / "manifest.json").read_text())
    assert "onnx/decoder.onnx" in subset["files"] and subset["formats"] == ["onnx"]
    top = json.loads((export_dir / "manifest.json").read_text())
    assert "triton/spellfix/config.pbtxt" in top["files"] and "triton" in top["formats"]
    queries = serving_queries(16)
    assert SpellCorrector(runtime, backend="onnxruntime").correct(queries) == SpellCorrector(export_dir, backend="onnxruntime").correct(queries)


@pytest.mark.slow
def test_rewriting_a_repository_replaces_it_and_needs_the_graphs_its_backend_loads(export_dir, tmp_path):
    repository = write_repository(export_dir, tmp_path / "repo", {"max_batch_size": 4, "dynamic_batching": False})
    assert "max_batch_size: 4" in (repository / "spellfix" / "config.pbtxt").read_text()
    assert (repository / "spellfix" / "1" / "spellfix" / "serving" / "model_core.py").is_file()
    assert not list(repository.rglob("__pycache__")), "the bundled package is copied without bytecode caches"
    write_repository(export_dir, repository, {"model_name": "fixer", "instance_count": 2})
    assert sorted(p.name for p in repository.iterdir() if p.is_dir()) == ["fixer"]
    assert "count: 2 kind: KIND_CPU" in (repository / "fixer" / "config.pbtxt").read_text()
    with pytest.raises(ValueError, match="onnx-int8: missing"):
        write_repository(export_dir, tmp_path / "int8", {"precision": "int8"})
    with pytest.raises(ValueError, match="no TensorRT engines"):
        write_repository(export_dir, tmp_path / "trt", {"kind": "KIND_GPU"})
    assert not (tmp_path / "int8").exists() and not (tmp_path / "trt").exists()


class CountingBackend:
    """The real backend, counting ``encode`` calls (one per decoded batch)."""

    def __init__(self, backend):
        self.backend, self.encodes = backend, 0

    def encode(self, input_ids, attention_mask):
        self.encodes += 1
        return self.backend.encode(input_ids, attention_mask)

    def __getattr__(self, name):
        return getattr(self.backend, name)


@pytest.mark.slow
def test_batch_corrector_decodes_every_valid_request_of_a_batch_in_one_pass(corrector):
    from test_serving_fixtures import serving_queries

    queries = serving_queries(12)
    requests = [[q.encode() for q in queries[:1]], [b"\xff"], [q.encode() for q in queries[1:5]], [b""], [q.encode() for q in queries[5:]]]
    counting = CountingBackend(corrector.backend)
    core = BatchCorrector(corrector)
    corrector.backend = counting
    try:
        results = core.correct_requests(requests)
    finally:
        corrector.backend = counting.backend
    assert counting.encodes == 1
    expected = corrector.correct(queries)
    assert results[0] == expected[:1] and results[2] == expected[1:5] and results[4] == expected[5:]
    assert isinstance(results[1], RequestError) and "query 0 is not valid UTF-8: byte 0xff" in str(results[1])
    assert isinstance(results[3], RequestError) and "is empty" in str(results[3])


@pytest.mark.slow
def test_batch_corrector_rejects_overlong_and_oversized_queries_per_request(corrector):
    results = BatchCorrector(corrector).correct_requests([[b"rock song", b"rock " * 100], [b"rock song"]])
    assert isinstance(results[0], RequestError) and "query 1 has" in str(results[0]) and "more than max_source_length=32" in str(results[0])
    assert results[1] == corrector.correct(["rock song"])
    (result,) = BatchCorrector(corrector, max_query_bytes=64).correct_requests([["rock " * 30]])
    assert isinstance(result, RequestError) and "query 0 is 150 bytes long; the limit is 64 bytes" in str(result)


def _engine_only_export(root: Path, max_rows: int) -> Path:
    """An export dir as the GPU host has it after building engines (the writer copies, never parses, them)."""
    (root / "tensorrt").mkdir(parents=True)
    for graph in ("encoder", "decoder", "decoder_with_past", "kv_reorder"):
        (root / "tensorrt" / f"{graph}.engine").write_bytes(b"engine bytes")
    for name in ("tokenizer.json", "spellfix.json", "generation_config.json"):
        (root / name).write_text("{}")
    manifest = {"formats": ["onnx", "tensorrt"], "tensorrt": {"axis_ranges": {"rows": [1, 1, max_rows]}}, "decoding": {}}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def test_an_export_with_engines_gets_a_gpu_tensorrt_model_bounded_by_the_engine_profile(tmp_path):
    export_dir = _engine_only_export(tmp_path / "exp", max_rows=64)
    repository = write_repository(export_dir, tmp_path / "repo", {"instance_count": 2, "max_batch_size": 16, "num_beams": 4})
    config = (repository / "spellfix" / "config.pbtxt").read_text()
    assert "instance_group [ { count: 2 kind: KIND_GPU } ]" in config
    assert 'parameters { key: "backend" value: { string_value: "tensorrt" } }' in config
    assert (repository / "spellfix" / "1" / "export" / "tensorrt" / "decoder_with_past.engine").read_bytes() == b"engine bytes"
    with pytest.raises(ValueError, match=r"max_batch_size 32 x num_beams 4 exceeds the engines' maximum of 64 decoder rows"):
        write_repository(export_dir, tmp_path / "too-big", {"max_batch_size": 32, "num_beams": 4})
    with pytest.raises(ValueError, match="backend 'tensorrt' needs kind KIND_GPU"):
        write_repository(export_dir, tmp_path / "cpu-trt", {"kind": "KIND_CPU", "backend": "tensorrt"})


def test_export_hook_takes_triton_options_from_the_export_info(tmp_path):
    from spellfix.export.triton import write_model_repository

    export_dir = _engine_only_export(tmp_path / "exp", max_rows=128)
    info = {**json.loads((export_dir / "manifest.json").read_text()), "triton_options": {"max_batch_size": 8, "max_queue_delay_us": 250}}
    write_model_repository(export_dir, info)
    config = (export_dir / "triton" / "spellfix" / "config.pbtxt").read_text()
    assert "max_batch_size: 8" in config and "max_queue_delay_microseconds: 250" in config


def test_cli_export_forwards_triton_options_to_the_repository(export_dir, tmp_path, capsys):
    from spellfix.cli import main

    model_dir = export_dir.parent / "model"
    code = main([
        "export", "--model", str(model_dir), "--output", str(tmp_path / "exp"), "--format", "onnx,triton",
        "--triton", "max_batch_size=8", "--triton", "max_queue_delay_us=250", "--triton", "instance_count=2",
    ])
    assert code == 0, capsys.readouterr().err
    config = (tmp_path / "exp" / "triton" / "spellfix" / "config.pbtxt").read_text()
    assert "max_batch_size: 8" in config and "max_queue_delay_microseconds: 250" in config
    assert "count: 2" in config


def test_cli_export_rejects_an_unknown_triton_option_in_one_line(export_dir, tmp_path, capsys):
    from spellfix.cli import main

    code = main(["export", "--model", str(export_dir.parent / "model"), "--output", str(tmp_path / "exp"),
                 "--format", "onnx,triton", "--triton", "max_batch=8"])
    assert code == 2
    assert "unknown triton option(s) ['max_batch']" in capsys.readouterr().err
