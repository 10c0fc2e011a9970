"""Where the shipped recipes, models and data are found, from a checkout or from an installed wheel.

Why one place: ``spellfix recipes``, ``--recipe quickstart``, ``--model spell-small-cpu`` and the
quickstart's data paths (``data/clean_queries.txt``) must work the same from a source checkout, from
``pip install .`` or a wheel on a cluster worker, and from a custom tree. The root is, in order:

1. ``$SPELLFIX_HOME`` when set: a directory with the checkout's layout (``recipes/``, ``models/``,
   ``data/``), e.g. a shared volume holding your own models. Read once, at import.
2. the source checkout the package is imported from (``recipes/`` beside ``pyproject.toml`` one level
   above ``spellfix/``): edits to the checkout's files are seen at once.
3. ``spellfix/_shipped/`` inside the installed package: ``setup.py`` copies the checkout's
   ``recipes/*.yaml``, ``models/spell-small-cpu/`` and ``data/`` files into every built wheel there.
"""

from __future__ import annotations

import os
from pathlib import Path

#: environment variable naming a tree with recipes/, models/ and data/ (see the module docstring)
HOME_ENV = "SPELLFIX_HOME"
#: where built wheels carry the shipped files, inside the package
PACKAGED_DIR = Path(__file__).resolve().parent / "_shipped"
_CHECKOUT = Path(__file__).resolve().parents[1]


def shipped_root() -> Path:
    """The directory holding ``recipes/``, ``models/`` and ``data/`` (see the module docstring)."""
    home = os.environ.get(HOME_ENV)
    if home:
        root = Path(home).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"{HOME_ENV}={home}: no such directory (it should hold recipes/, models/, data/)")
        return root
    if (_CHECKOUT / "pyproject.toml").is_file() and (_CHECKOUT / "recipes").is_dir():
        return _CHECKOUT
    return PACKAGED_DIR


def resolve_model_dir(path: str | Path, models_dir: Path | None = None) -> str | Path:
    """Map a training output dir or export dir to the directory that holds the weights.

    `M` in the CLI may be a training output dir (-> best/ or final/), a checkpoint dir, an export dir
    (-> hf/), the name of a model shipped in ``models/`` (``models_dir``, default the shipped root's;
    e.g. ``spell-small-cpu``), or a hub id (returned unchanged). No torch: the runtime resolves names too.
    """
    p = Path(path)
    if not p.exists():
        shipped = (models_dir or shipped_root() / "models") / str(path)
        if "/" not in str(path) and (shipped / "config.json").is_file():
            return shipped
        return str(path)  # hub id
    if (p / "config.json").exists():
        return p
    for sub in ("best", "final", "hf"):
        if (p / sub / "config.json").exists():
            return p / sub
    raise FileNotFoundError(f"{p}: no model found (expected config.json in it or in best/, final/ or hf/)")
