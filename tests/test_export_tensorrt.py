"""TensorRT paths on a machine without TensorRT or a GPU: clear failures, nothing half-written.

The engine builder and the TensorRT backend are exercised for real only on a GPU host; here the
contract is that asking for them fails at once with a message saying what to install where.
"""

from __future__ import annotations

import importlib.util

import pytest

from spellfix.export.tensorrt_build import TensorRTUnavailableError, profile_ranges, require_tensorrt

needs_no_tensorrt = pytest.mark.skipif(
    importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here; these tests check its absence"
)


@needs_no_tensorrt
def test_export_with_tensorrt_format_fails_before_any_work(tmp_path):
    from spellfix.export import export

    with pytest.raises(TensorRTUnavailableError, match=r"TensorRT is not installed .*build the engines there"):
        export(tmp_path / "no-model-needed", tmp_path / "trt", formats=["tensorrt"], fp16=True)
    assert not (tmp_path / "trt").exists()


@needs_no_tensorrt
def test_tensorrt_backend_without_tensorrt_says_what_to_install(tmp_path):
    from spellfix.inference.backends.tensorrt_backend import TensorRTBackend

    with pytest.raises(TensorRTUnavailableError, match=r"pip install 'spellfix\[tensorrt\]'"):
        TensorRTBackend(tmp_path / "tensorrt")


@needs_no_tensorrt
def test_engine_build_without_tensorrt_fails_with_install_hint(tmp_path):
    from spellfix.export.tensorrt_build import build_engines

    with pytest.raises(TensorRTUnavailableError, match="engines are specific to the GPU model"):
        build_engines(tmp_path, tmp_path / "out", fp16=True, max_source_length=32, max_new_tokens=24)
    assert not (tmp_path / "out").exists()


def test_gpu_check_fails_clearly_without_a_driver():
    from spellfix.export.tensorrt_build import gpu_name

    try:
        name = gpu_name()
    except TensorRTUnavailableError as exc:
        assert "must be built on the target GPU" in str(exc)
    else:  # a GPU host
        assert name


def test_corrector_with_tensorrt_backend_needs_an_export_dir(tmp_path):
    from spellfix.inference import SpellCorrector

    with pytest.raises(FileNotFoundError, match="tensorrt backend needs an export dir"):
        SpellCorrector(tmp_path, "tensorrt")


def test_profile_ranges_reject_impossible_bounds():
    with pytest.raises(ValueError, match="invalid profile bounds"):
        profile_ranges(max_batch=0, max_source_length=32, max_new_tokens=24)
    ranges = profile_ranges(max_batch=128, max_source_length=64, max_new_tokens=48)
    assert ranges["batch"] == (1, 1, 128) and ranges["src_len"][2] == 64 and ranges["past_len"][2] == 48


@needs_no_tensorrt
def test_require_tensorrt_names_the_problem():
    with pytest.raises(TensorRTUnavailableError, match="TensorRT is not installed"):
        require_tensorrt()
