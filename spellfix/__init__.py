"""spellfix: training recipes that turn BART into a fast search-query spell corrector.

Attributes are imported lazily so that ``import spellfix.inference`` in a lean serving environment
(no torch, no transformers) does not pull the training stack in.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load_recipe": ("spellfix.config", "load_recipe"),
    "Recipe": ("spellfix.config", "Recipe"),
    "train": ("spellfix.training.loop", "train"),
    "evaluate": ("spellfix.evaluation", "evaluate"),
    "export": ("spellfix.export", "export"),
    "SpellCorrector": ("spellfix.inference", "SpellCorrector"),
}

__all__ = ["__version__", "data", *_LAZY]


def __getattr__(name: str) -> Any:
    if name == "data":
        return importlib.import_module("spellfix.data")
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'spellfix' has no attribute {name!r}")
