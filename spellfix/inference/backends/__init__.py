"""Runtime backends. Import the one you need; only ``torch_backend`` imports torch."""

from spellfix.inference.backends.base import Backend

BACKENDS = ("torch", "onnxruntime", "tensorrt")

__all__ = ["BACKENDS", "Backend"]
