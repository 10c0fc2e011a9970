"""Start-up hardware checks: the CUDA branches, exercised by giving the pure checks the arch lists and
compute capabilities real GPUs and torch builds report (no GPU here)."""

from __future__ import annotations

import pytest

from spellfix.training.hardware import HardwareError, check_cuda_arch, resolve_precision

V100 = (7, 0)
T4 = (7, 5)
A10G = (8, 6)
A100 = (8, 0)
H100 = (9, 0)
#: torch.cuda.get_arch_list() of real wheels
CU126_ARCHS = ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]
CU128_ARCHS = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120", "compute_120"]
CU130_ARCHS = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_110", "sm_120"]


def test_bf16_requested_on_a_v100_is_refused_with_the_fp16_fix_named():
    with pytest.raises(HardwareError, match=r"precision=bf16 .*compute capability 7\.0.* no bf16.*train\.precision=fp16 or auto"):
        resolve_precision("bf16", "cuda", V100)


def test_auto_precision_falls_back_to_fp16_on_a_v100_and_t4():
    assert resolve_precision("auto", "cuda", V100) == "fp16"
    assert resolve_precision("auto", "cuda", T4) == "fp16"


@pytest.mark.parametrize("capability", [A100, A10G, H100])
def test_auto_precision_is_bf16_from_ampere_on(capability):
    assert resolve_precision("auto", "cuda", capability) == "bf16"
    assert resolve_precision("bf16", "cuda", capability) == "bf16"


def test_fp16_on_cpu_is_allowed_because_autocast_and_grad_scaler_run_there():
    # tests/test_training.py trains with it (fp16 autocast + torch.amp.GradScaler("cpu"))
    assert resolve_precision("fp16", "cpu", None) == "fp16"


def test_auto_on_cpu_uses_bf16_only_where_the_cpu_has_native_bf16():
    assert resolve_precision("auto", "cpu", None, cpu_fast_bf16=True) == "bf16"
    assert resolve_precision("auto", "cpu", None, cpu_fast_bf16=False) == "fp32"


def test_explicit_precisions_pass_through_where_supported():
    assert resolve_precision("fp32", "cuda", V100) == "fp32"
    assert resolve_precision("fp16", "cuda", V100) == "fp16"
    assert resolve_precision("bf16", "cpu", None) == "bf16"


def test_unknown_precision_names_the_allowed_values():
    with pytest.raises(ValueError, match="expected one of auto, fp32, fp16, bf16"):
        resolve_precision("tf32", "cuda", A100)


@pytest.mark.parametrize("archs", [CU128_ARCHS, CU130_ARCHS], ids=["cu128", "cu130"])
def test_v100_on_a_wheel_without_sm70_names_the_cu126_wheel_and_the_sagemaker_image(archs):
    with pytest.raises(HardwareError) as err:
        check_cuda_arch(archs, V100)
    message = str(err.value)
    assert "sm_70" in message and "cu126" in message and "pytorch-training:2.8.0-gpu-py312" in message
    assert " ".join(archs) in message  # what the build does have


def test_v100_on_the_cu126_wheel_passes():
    check_cuda_arch(CU126_ARCHS, V100)


def test_newer_minor_of_a_compiled_major_runs_the_compiled_kernels():
    check_cuda_arch(["sm_80"], A10G)  # sm_80 SASS runs on sm_86


def test_ptx_of_an_older_arch_is_jit_compiled_for_a_newer_gpu():
    check_cuda_arch(["sm_80", "compute_80"], H100)


def test_gpu_newer_than_every_kernel_without_ptx_is_refused():
    with pytest.raises(HardwareError, match=r"no kernels for the GPU's architecture sm_90.*torch build whose CUDA"):
        check_cuda_arch(["sm_70", "sm_75", "sm_80"], H100)


def test_older_minor_gpu_than_the_compiled_kernels_is_refused():
    with pytest.raises(HardwareError, match="sm_75"):
        check_cuda_arch(["sm_80", "sm_86"], T4)
