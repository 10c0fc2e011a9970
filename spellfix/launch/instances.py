"""SageMaker instance types → GPUs: validates ``--instance-type`` and the recipe's precision locally.

SageMaker itself only rejects a bad instance type after the code and data were uploaded, and a bf16
recipe on a V100 (no bf16) would only fail once the container is up. This small table catches both
before anything leaves the machine. It lists the training instances this project targets; extend it
when a new family is needed (``spellfix launch sagemaker --help`` shows the list).
"""

from __future__ import annotations

from dataclasses import dataclass

from spellfix.launch import LaunchError


@dataclass(frozen=True)
class Gpu:
    name: str
    capability: tuple[int, int]  # CUDA compute capability
    memory_gb: int

    @property
    def has_bf16(self) -> bool:
        # bf16 tensor cores arrived with Ampere (sm_80); V100 (7.0) and T4 (7.5) have none.
        return self.capability >= (8, 0)


@dataclass(frozen=True)
class InstanceType:
    name: str
    gpu: Gpu | None  # None: CPU-only instance
    gpu_count: int

    @property
    def processes(self) -> int:
        """Training processes per node (one per GPU; one on a CPU instance)."""
        return max(1, self.gpu_count)

    def describe(self) -> str:
        if self.gpu is None:
            return f"{self.name} (CPU only)"
        return f"{self.name} ({self.gpu_count} x {self.gpu.name} {self.gpu.memory_gb} GB, sm_{''.join(map(str, self.gpu.capability))})"


V100 = Gpu("V100", (7, 0), 16)
V100_32 = Gpu("V100", (7, 0), 32)
T4 = Gpu("T4", (7, 5), 16)
A10G = Gpu("A10G", (8, 6), 24)
L4 = Gpu("L4", (8, 9), 24)
A100 = Gpu("A100", (8, 0), 40)
A100_80 = Gpu("A100", (8, 0), 80)
H100 = Gpu("H100", (9, 0), 80)


def _family(prefix: str, gpu: Gpu | None, counts: dict[str, int]) -> dict[str, InstanceType]:
    return {f"ml.{prefix}.{size}": InstanceType(f"ml.{prefix}.{size}", gpu, n) for size, n in counts.items()}


_ONE_TO_FOUR_TO_EIGHT = {"xlarge": 1, "2xlarge": 1, "4xlarge": 1, "8xlarge": 1, "16xlarge": 1, "12xlarge": 4, "24xlarge": 4, "48xlarge": 8}

INSTANCE_TYPES: dict[str, InstanceType] = {
    **_family("p3", V100, {"2xlarge": 1, "8xlarge": 4, "16xlarge": 8}),
    **_family("p3dn", V100_32, {"24xlarge": 8}),
    **_family("g4dn", T4, {"xlarge": 1, "2xlarge": 1, "4xlarge": 1, "8xlarge": 1, "16xlarge": 1, "12xlarge": 4}),
    **_family("g5", A10G, _ONE_TO_FOUR_TO_EIGHT),
    **_family("g6", L4, _ONE_TO_FOUR_TO_EIGHT),
    **_family("p4d", A100, {"24xlarge": 8}),
    **_family("p4de", A100_80, {"24xlarge": 8}),
    **_family("p5", H100, {"48xlarge": 8}),
    # CPU instances: cheap smoke runs of small recipes (quickstart).
    **_family("m5", None, {"xlarge": 0, "2xlarge": 0, "4xlarge": 0, "12xlarge": 0, "24xlarge": 0}),
    **_family("c5", None, {"xlarge": 0, "2xlarge": 0, "4xlarge": 0, "9xlarge": 0, "18xlarge": 0}),
}


def lookup_instance(name: str) -> InstanceType:
    """Return the table entry for ``name`` or raise LaunchError listing the known types."""
    try:
        return INSTANCE_TYPES[name]
    except KeyError:
        known = ", ".join(sorted(INSTANCE_TYPES))
        hint = " (SageMaker instance types start with 'ml.')" if not name.startswith("ml.") else ""
        raise LaunchError(f"--instance-type {name!r} is not a known training instance type{hint}; known: {known}") from None


def check_precision(precision: str, instance: InstanceType) -> str:
    """Check the recipe's ``train.precision`` against the instance's GPU; return what will run.

    Mirrors ``spellfix.training.hardware.resolve_precision`` (the check the job repeats at start-up
    on the real GPU) without importing torch here.
    """
    gpu = instance.gpu
    if precision == "auto":
        if gpu is None:
            return "bf16"  # CPU autocast twin of mixed precision
        return "bf16" if gpu.has_bf16 else "fp16"
    if precision == "bf16" and gpu is not None and not gpu.has_bf16:
        raise LaunchError(
            f"train.precision=bf16 but {instance.describe()} has no bf16; "
            f"use train.precision=fp16 (loss scaling) or auto, e.g. --set train.precision=fp16, "
            f"or pick an instance with bf16 (ml.g5.*, ml.g6.*, ml.p4d.24xlarge, ml.p5.48xlarge)"
        )
    if precision == "fp16" and gpu is None:
        raise LaunchError(
            f"train.precision=fp16 needs a CUDA GPU but {instance.describe()} has none; use bf16 or fp32"
        )
    return precision
