"""Data layer: reading and validating pairs, clean corpora, and the noise synthesizer.

Everything exported here imports without torch. Tokenization and batching (which need torch) live
in ``spellfix.data.tokenization`` and ``spellfix.data.batching`` and are imported explicitly by the
training code, never from this package's namespace, so a data-only user does not pay for torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "read_pairs": "spellfix.data.readers",
    "read_clean_queries": "spellfix.data.readers",
    "normalize_query": "spellfix.data.readers",
    "ReadReport": "spellfix.data.readers",
    "DataError": "spellfix.data.readers",
    "make_noisy_pairs": "spellfix.data.noise",
    "NoiseConfig": "spellfix.data.noise",
    "ConfusionList": "spellfix.data.noise",
    "load_confusions": "spellfix.data.noise",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'spellfix.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
