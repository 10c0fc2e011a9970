"""Start-up checks that turn a hardware mismatch into one clear sentence instead of a crash hours in.

Pure functions of (device type, compute capability, arch list) so the CUDA branches are testable on a
machine without a GPU; ``detect()`` reads the real values.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: What to install when the running torch build has no kernels for the GPU (STACK.md).
V100_HINT = (
    "Volta (V100, sm_70) kernels were dropped from CUDA 13 and from PyTorch cu128/cu130 wheels. Use a cu126 "
    "wheel (pip install torch --index-url https://download.pytorch.org/whl/cu126, up to torch 2.14) or, on "
    "SageMaker ml.p3.*, the image pytorch-training:2.8.0-gpu-py312 (CUDA 12.9)."
)


class HardwareError(RuntimeError):
    """The requested run cannot work on this hardware; the message says what to change."""


@dataclass(frozen=True)
class Hardware:
    device_type: str  # "cuda" | "cpu"
    capability: tuple[int, int] | None  # CUDA compute capability, e.g. (7, 0) for V100
    name: str
    arch_list: tuple[str, ...]


def detect() -> Hardware:
    if torch.cuda.is_available():
        cap = torch.cuda.get_device_capability(0)
        return Hardware("cuda", cap, torch.cuda.get_device_name(0), tuple(torch.cuda.get_arch_list()))
    return Hardware("cpu", None, "cpu", ())


def check_cuda_arch(arch_list: tuple[str, ...] | list[str], capability: tuple[int, int]) -> None:
    """Fail clearly when this torch build has no kernels (SASS or compatible PTX) for the GPU."""
    major, minor = capability
    sm = f"sm_{major}{minor}"
    if sm in arch_list:
        return
    # PTX for an older arch JIT-compiles on a newer GPU of the same or higher major version.
    ptx = [a for a in arch_list if a.startswith("compute_")]
    if any(int(a.split("_")[1]) <= major * 10 + minor for a in ptx):
        return
    same_major = [a for a in arch_list if a.startswith(f"sm_{major}")]
    if same_major and all(int(a.split("_")[1]) <= major * 10 + minor for a in same_major):
        return  # binary compatible within a major version (e.g. sm_80 kernels on sm_86)
    hint = V100_HINT if capability == (7, 0) else "Install a torch build whose CUDA version supports this GPU."
    raise HardwareError(
        f"this PyTorch build ({torch.__version__}) has no kernels for the GPU's architecture {sm} "
        f"(built for: {' '.join(arch_list) or 'none'}). {hint}"
    )


def bf16_supported(device_type: str, capability: tuple[int, int] | None) -> bool:
    """bf16 tensor cores from Ampere (sm_80) on; on CPU, torch runs bf16 everywhere (fast or not)."""
    if device_type == "cuda":
        return capability is not None and capability >= (8, 0)
    return device_type == "cpu"


def cpu_has_fast_bf16() -> bool:
    """Whether oneDNN has native bf16 kernels here (AVX512-BF16 or AMX). Without them bf16 matmuls
    are emulated and slower than fp32, so ``auto`` picks fp32 on such CPUs."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # build without oneDNN
        return False


def resolve_precision(requested: str, device_type: str, capability: tuple[int, int] | None,
                      *, cpu_fast_bf16: bool | None = None) -> str:
    """Map ``auto|fp32|fp16|bf16`` to what runs: bf16 where the hardware has it, fp16 + loss scaling
    on pre-Ampere GPUs (V100), and on CPU bf16 autocast as the twin of GPU mixed precision (fp32
    on CPUs without native bf16, where it would be slower; ``cpu_fast_bf16`` overrides the probe)."""
    if requested not in ("auto", "fp32", "fp16", "bf16"):
        raise ValueError(f"train.precision={requested!r}; expected one of auto, fp32, fp16, bf16")
    if requested == "auto":
        if device_type == "cuda":
            return "bf16" if bf16_supported(device_type, capability) else "fp16"
        fast = cpu_has_fast_bf16() if cpu_fast_bf16 is None else cpu_fast_bf16
        return "bf16" if fast else "fp32"
    if requested == "bf16" and not bf16_supported(device_type, capability):
        raise HardwareError(
            f"train.precision=bf16 but this GPU (compute capability {capability[0]}.{capability[1]}) has no bf16; "
            "V100 supports fp16 with loss scaling: set train.precision=fp16 or auto"
        )
    # fp16 on CPU: fp16 autocast + torch.amp.GradScaler("cpu") run (slowly) since torch 2.x; the
    # V100 recipe's arithmetic can be exercised here, so it is allowed, not refused.
    return requested


def check_hardware(requested_precision: str) -> tuple[Hardware, str]:
    """Run every start-up check; return the hardware and the precision that will be used."""
    hw = detect()
    if hw.device_type == "cuda":
        check_cuda_arch(hw.arch_list, hw.capability)  # type: ignore[arg-type]
    return hw, resolve_precision(requested_precision, hw.device_type, hw.capability)
