"""Runtime backends. Import the one you need; only ``torch_backend`` imports torch."""

from spellfix.inference.backends.base import Backend, StepLogits, TopCandidates

BACKENDS = ("torch", "onnxruntime", "tensorrt")

__all__ = ["BACKENDS", "Backend", "StepLogits", "TopCandidates"]
