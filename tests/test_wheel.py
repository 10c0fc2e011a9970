"""A built wheel works outside the checkout: recipes, the shipped model and the quickstart's data.

The wheel is built from the tracked files only (what a clean clone or CI has) and installed in a new
venv, then used from a directory outside the checkout with no PYTHONPATH. By default the venv sees the
machine's site-packages for the dependencies (torch, transformers, ... already installed: seconds,
no downloads) while spellfix itself comes from the wheel (checked); ``SPELLFIX_WHEEL_FRESH=1`` (make
wheel-check) makes a fully fresh venv instead: torch==2.13.0 first, then the wheel with its
dependencies from the package index (minutes).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: int = 600) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("needs a git checkout to know the tracked files")
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    files = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, (f.decode() for f in files)):
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(base / "dist"), str(src)], base, env)
    wheel = next((base / "dist").glob("spellfix-*.whl"))
    fresh = os.environ.get("SPELLFIX_WHEEL_FRESH") == "1"
    venv = base / "venv"
    _run([sys.executable, "-m", "venv", *([] if fresh else ["--system-site-packages"]), str(venv)], base, env)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    if fresh:
        _run([*pip, "torch==2.13.0"], base, env, timeout=1200)
        _run([*pip, str(wheel)], base, env, timeout=1200)
    else:
        _run([*pip, "--no-deps", "--force-reinstall", str(wheel)], base, env)
    return venv


def test_wheel_lists_recipes_corrects_with_the_shipped_model_and_trains_the_quickstart(venv, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SPELLFIX_HOME")}
    python, spellfix = str(venv / "bin" / "python"), str(venv / "bin" / "spellfix")
    where = _run([python, "-c", "import spellfix.shipped as s, spellfix; print(spellfix.__file__); print(s.shipped_root())"], tmp_path, env)
    package, root = where.split()
    assert package.startswith(str(venv)) and root == str(Path(package).parent / "_shipped")

    recipes = _run([spellfix, "recipes"], tmp_path, env)
    assert {"quickstart", "spell-small-cpu", "bart-base-8xv100"} <= {line.split()[0] for line in recipes.splitlines()}
    assert _run([spellfix, "correct", "wireles hedphones"], tmp_path, env).strip() == "wireless headphones"

    _run([spellfix, "train", "--recipe", "quickstart", "--output-dir", "runs/qs", "--resume", "never", "--no-progress",
          "--set", "train.max_steps=2", "--set", "train.eval_every=0", "--set", "train.save_every=0",
          "--set", "data.max_clean_queries=200", "--set", "eval.limit=8"], tmp_path, env)
    assert (tmp_path / "runs" / "qs" / "final" / "model.safetensors").is_file()
    assert not (tmp_path / "data").exists()  # the data came from the wheel, not the cwd
