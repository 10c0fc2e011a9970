"""Copies the shipped recipes, model and data into every built wheel (``spellfix/_shipped/``).

Why: they live at the top of the checkout (``recipes/``, ``models/``, ``data/``), where they are
edited, but a wheel on a cluster worker has no checkout. ``spellfix.shipped`` finds the checkout's
copies first and these otherwise. Editable installs use the checkout itself, so nothing is copied.
Everything else about the package is in pyproject.toml.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
#: (source dir, glob) pairs copied to spellfix/_shipped/<source dir>/
SHIPPED = [
    ("recipes", "*.yaml"),
    ("models/spell-small-cpu", "*"),
    ("data", "*.jsonl"),
    ("data", "*.tsv"),
    ("data", "*.txt"),
    ("data", "*.md"),
    ("data", "MANIFEST.json"),
]


class BuildPyWithShipped(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "spellfix" / "_shipped"
        shutil.rmtree(target, ignore_errors=True)
        for folder, pattern in SHIPPED:
            files = sorted(p for p in (ROOT / folder).glob(pattern) if p.is_file())
            if not files:
                raise FileNotFoundError(f"{ROOT / folder}/{pattern}: nothing to ship (a checkout or sdist must have it)")
            for path in files:
                dest = target / folder / path.name
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, dest)


setup(cmdclass={"build_py": BuildPyWithShipped})
