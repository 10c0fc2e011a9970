"""Telemetry for training runs: device samplers, throughput meter, log writers and the report.

Public surface (what the training loop imports)::

    from spellfix.telemetry import RunLogger, ThroughputMeter, METRIC_DEFINITIONS, format_log_line

Importing this package is light: TensorBoard, NVML, psutil and matplotlib are imported only by
the objects that use them.
"""

from __future__ import annotations

from typing import Any

from .logline import METRIC_DEFINITIONS, format_log_line, parse_log_line

__all__ = [
    "METRIC_DEFINITIONS",
    "RunLogger",
    "ThroughputMeter",
    "format_log_line",
    "parse_log_line",
    "peak_flops_for",
    "train_flops_per_token",
]

_LAZY = {
    "RunLogger": ".logger",
    "ThroughputMeter": ".throughput",
    "peak_flops_for": ".throughput",
    "train_flops_per_token": ".throughput",
    "seq2seq_train_flops_per_sample": ".throughput",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
